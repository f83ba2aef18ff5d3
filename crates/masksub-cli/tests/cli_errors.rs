//! The `masksub` binary turns bad input into one clear error line and a non-zero exit.

use std::process::Command;

fn masksub(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_masksub"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn bad_train_inputs_name_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let o = out.to_str().unwrap();
    let missing = tmp.path().join("missing");
    let missing = missing.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["train", "--model", "vit_huge_9000", "--out", o],
            "unknown model `vit_huge_9000`",
        ),
        (
            &["train", "--data", "/nonexistent/fmnist", "--out", o],
            "--data /nonexistent/fmnist: no such file or folder",
        ),
        (
            &["train", "--mask-ratio", "1.5", "--out", o],
            "sub.ratio`: 1.5 is not in (0, 1) for `--sub masking`",
        ),
        (
            &["train", "--sub", "dropout", "--sub-ratio", "0", "--out", o],
            "sub.ratio",
        ),
        (&["train", "--batch-size", "0", "--out", o], "batch_size"),
        (
            &["train", "--sub", "none", "--mask-ratio", "0.3", "--out", o],
            "--mask-ratio needs a sub-model",
        ),
        (&["train", "--device", "tpu", "--out", o], "expected cpu"),
        (&["train", "--resume", missing], "config.json"),
    ];
    for (args, needle) in cases {
        let (ok, text) = masksub(args);
        assert!(!ok, "{args:?} should fail");
        assert!(text.contains(needle), "{args:?}: `{needle}` not in: {text}");
        assert!(!text.contains("panicked"), "{text}");
        assert!(!out.exists(), "{args:?} left a run folder behind");
    }
}

#[test]
fn eval_of_a_missing_or_corrupt_checkpoint_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.safetensors");
    std::fs::write(&bad, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}").unwrap();
    let (ok, text) = masksub(&[
        "eval",
        "--checkpoint",
        bad.to_str().unwrap(),
        "--model",
        "vit_fmnist_tiny",
    ]);
    assert!(!ok && text.contains("bad.safetensors"), "{text}");
    let (ok, text) = masksub(&[
        "eval",
        "--checkpoint",
        tmp.path().join("none.safetensors").to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("none.safetensors"), "{text}");
}

#[test]
fn models_lists_the_registry() {
    let (ok, text) = masksub(&["models"]);
    assert!(ok);
    for name in [
        "vit_fmnist_small",
        "deit3_small_patch16_224",
        "deit3_base_patch16_224",
    ] {
        assert!(text.contains(name), "{name} not listed: {text}");
    }
}
