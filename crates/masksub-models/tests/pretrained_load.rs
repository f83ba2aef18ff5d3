//! Pretrained loading against timm: fixtures from tools/parity/make_pretrained_fixtures.py
//! (tiny timm ViTs with random weights in timm / DeiT-III / MAE / OpenAI CLIP / legacy torch
//! layouts); a local Hub cache built here (no network).

use candle_core::{DType, Device, Tensor};
use masksub_models::hub::{fetch, HubOptions};
use masksub_models::pretrained::{find, load_pretrained, read_weights, PRETRAINED};
use masksub_models::remap::WeightFormat;
use masksub_models::{registry, GlobalPool, LoadedModel, ModelArch, ModelSpec, VitConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("pre_expected.safetensors"), &Device::Cpu).unwrap()
}

fn tiny(img_size: usize) -> VitConfig {
    VitConfig {
        img_size,
        patch_size: 8,
        in_chans: 3,
        num_classes: 10,
        embed_dim: 32,
        depth: 2,
        num_heads: 4,
        mlp_ratio: 4.0,
        qkv_bias: true,
        no_embed_class: true,
        init_values: Some(0.1),
        global_pool: GlobalPool::Token,
        pre_norm: false,
        drop_path_rate: 0.0,
        layer_norm_eps: 1e-6,
    }
}

fn mae_ft(img_size: usize) -> VitConfig {
    VitConfig {
        no_embed_class: false,
        init_values: None,
        global_pool: GlobalPool::Avg,
        ..tiny(img_size)
    }
}

fn clip() -> VitConfig {
    VitConfig {
        num_classes: 16,
        no_embed_class: false,
        init_values: None,
        pre_norm: true,
        layer_norm_eps: 1e-5,
        ..tiny(32)
    }
}

fn build(cfg: VitConfig) -> LoadedModel {
    ModelSpec {
        name: "tiny".into(),
        arch: ModelArch::Vit(cfg),
        mean: vec![0.5; 3],
        std: vec![0.5; 3],
        crop_pct: 1.0,
    }
    .build(0, DType::F32, &Device::Cpu)
    .unwrap()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let a = a
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let b = b
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let s = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    assert!(s > 1e-3, "degenerate reference");
    d / s
}

fn logits(m: &LoadedModel, x: &Tensor) -> Tensor {
    m.forward(x, false).unwrap()
}

fn load(m: &LoadedModel, file: &Path) -> masksub_models::pretrained::LoadReport {
    let sd = read_weights(file).unwrap();
    load_pretrained(m, sd, &file.display().to_string(), None, 2e-5, 0).unwrap()
}

#[test]
fn timm_safetensors_from_a_local_hub_cache_equal_timms_logits() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("hub/models--timm--tiny_deit3.fb_in1k");
    let snap = repo.join("snapshots/0123456789abcdef");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef").unwrap();
    std::fs::copy(
        fixture("pre_timm.safetensors"),
        snap.join("model.safetensors"),
    )
    .unwrap();
    let opts = HubOptions {
        cache_dir: Some(dir.path().join("hub")),
        offline: true,
        ..Default::default()
    };
    let path = fetch("timm/tiny_deit3.fb_in1k", None, "model.safetensors", &opts).unwrap();
    assert_eq!(path, snap.join("model.safetensors"));
    // The cache is used without the network even when not offline: the endpoint is unreachable.
    let online = HubOptions {
        offline: false,
        endpoint: Some("http://127.0.0.1:9".into()),
        ..opts.clone()
    };
    assert_eq!(
        fetch(
            "timm/tiny_deit3.fb_in1k",
            None,
            "model.safetensors",
            &online
        )
        .unwrap(),
        path
    );
    let m = build(tiny(32));
    let r = load(&m, &path);
    assert_eq!(r.format, Some(WeightFormat::Timm));
    assert!(!r.new_head && r.resampled_from.is_none(), "{r:?}");
    let e = expected();
    let err = rel_err(&logits(&m, &e["x32"]), &e["deit3_logits"]);
    assert!(err < 1e-4, "{err}");
}

#[test]
fn hub_errors_name_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let opts = HubOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        offline: true,
        ..Default::default()
    };
    let e = fetch("timm/nope", None, "model.safetensors", &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("hf://timm/nope@main/model.safetensors") && e.contains("HF_HUB_OFFLINE"),
        "{e}"
    );
    let online = HubOptions {
        offline: false,
        progress: false,
        endpoint: Some("http://127.0.0.1:9".into()),
        ..opts
    };
    let e = fetch("timm/nope", None, "model.safetensors", &online)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("http://127.0.0.1:9") && e.contains("timm/nope"),
        "{e}"
    );
}

#[test]
fn hub_options_read_the_standard_environment() {
    std::env::set_var("HF_HUB_CACHE", "/tmp/some-hub");
    std::env::set_var("HF_ENDPOINT", "http://mirror.local");
    std::env::set_var("HF_TOKEN", "hf_abc");
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let o = HubOptions::from_env();
    assert_eq!(o.cache_dir.as_deref(), Some(Path::new("/tmp/some-hub")));
    assert_eq!(o.endpoint.as_deref(), Some("http://mirror.local"));
    assert_eq!(o.token.as_deref(), Some("hf_abc"));
    assert!(o.offline);
    std::env::set_var("HF_HUB_OFFLINE", "0");
    std::env::remove_var("HF_HUB_CACHE");
    std::env::set_var("HF_HOME", "/tmp/hf-home");
    let o = HubOptions::from_env();
    assert!(!o.offline);
    assert_eq!(o.cache_dir.as_deref(), Some(Path::new("/tmp/hf-home/hub")));
    for k in ["HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE", "HF_HOME"] {
        std::env::remove_var(k);
    }
}

#[test]
fn official_deit3_gamma_names_load_and_equal_timm() {
    let m = build(tiny(32));
    let r = load(&m, &fixture("pre_deit3_official.pth"));
    assert_eq!(r.format, Some(WeightFormat::Deit3));
    let e = expected();
    let err = rel_err(&logits(&m, &e["x32"]), &e["deit3_logits"]);
    assert!(err < 1e-4, "{err}");
}

#[test]
fn pos_embed_is_resampled_bicubic_as_timm_for_another_image_size() {
    // no_embed_class (DeiT-III): 4x4 -> 6x6 grid.
    let m = build(tiny(48));
    let r = load(&m, &fixture("pre_deit3_official.pth"));
    assert_eq!(r.resampled_from, Some(16));
    let e = expected();
    let pe = m.state_dict().unwrap()["pos_embed"].clone();
    let err = rel_err(&pe, &e["deit3_48_pos_embed"]);
    assert!(err < 1e-5, "pos_embed {err}");
    let err = rel_err(&logits(&m, &e["x48"]), &e["deit3_48_logits"]);
    assert!(err < 1e-4, "{err}");
}

#[test]
fn mae_checkpoint_drops_the_decoder_and_fine_tunes_with_avg_pool_and_fc_norm() {
    let e = expected();
    for (img, x, want) in [(32, "x32", "mae_logits"), (48, "x48", "mae_48_logits")] {
        let m = build(mae_ft(img));
        let r = load(&m, &fixture("pre_mae.pth"));
        assert_eq!(r.format, Some(WeightFormat::Mae));
        assert!(r.new_head, "MAE pre-training has no head");
        let notes = r.notes.join("\n");
        assert!(
            notes.contains("decoder") && notes.contains("fc_norm"),
            "{notes}"
        );
        // The new head is the recipe's: trunc_normal(std 2e-5), zero bias.
        let sd = m.state_dict().unwrap();
        let w = sd["head.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!((1e-5..4e-5).contains(&std), "head std {std}");
        assert_eq!(
            sd["head.bias"]
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        // Set timm's head to compare the whole forward.
        let mut head = HashMap::new();
        for k in ["head.weight", "head.bias"] {
            head.insert(k.to_string(), e[&format!("mae_{k}")].clone());
        }
        let all: HashMap<String, Tensor> = sd
            .into_iter()
            .filter(|(k, _)| !k.starts_with("head."))
            .map(|(k, v)| (k, v.copy().unwrap()))
            .chain(head)
            .collect();
        m.load_state_dict(&all, "timm head", &Default::default())
            .unwrap();
        let err = rel_err(&logits(&m, &e[x]), &e[want]);
        assert!(err < 1e-4, "{img}px: {err}");
    }
}

#[test]
fn openai_clip_keys_are_remapped_to_the_pre_norm_vit() {
    let m = build(clip());
    let r = load(&m, &fixture("pre_clip_openai.pth"));
    assert_eq!(r.format, Some(WeightFormat::OpenaiClip));
    assert!(!r.new_head, "{r:?}");
    assert!(
        r.notes.join(" ").contains("3 others dropped"),
        "{:?}",
        r.notes
    );
    let e = expected();
    let err = rel_err(&logits(&m, &e["x32"]), &e["clip_logits"]);
    assert!(err < 1e-4, "{err}");
    // Fine-tuning for 10 classes replaces the 16-way projection head.
    let m = build(VitConfig {
        num_classes: 10,
        ..clip()
    });
    assert!(load(&m, &fixture("pre_clip_openai.pth")).new_head);
}

#[test]
fn legacy_torch_serialization_reads_views_dtypes_and_shared_storages() {
    let sd = read_weights(&fixture("pre_legacy.pth")).unwrap();
    let e = expected();
    let mut keys: Vec<&String> = sd.keys().collect();
    keys.sort();
    assert_eq!(keys, ["h", "n", "row", "t", "w"]);
    assert_eq!(sd["h"].dtype(), DType::F16);
    assert_eq!(sd["n"].dtype(), DType::I64);
    assert_eq!(sd["n"].to_scalar::<i64>().unwrap(), 42);
    assert_eq!(sd["t"].dims(), &[4, 3]);
    for k in ["w", "t", "row", "h"] {
        let got = sd[k].to_dtype(DType::F32).unwrap();
        assert_eq!(rel_err(&got, &e[&format!("legacy.{k}")]), 0.0, "{k}");
    }
}

#[test]
fn a_checkpoint_that_does_not_fit_is_refused_with_every_reason() {
    // DeiT-III weights (LayerScale, no cls slot) into a ViT without LayerScale and depth 3.
    let m = build(VitConfig {
        init_values: None,
        depth: 3,
        ..tiny(32)
    });
    let sd = read_weights(&fixture("pre_timm.safetensors")).unwrap();
    let e = load_pretrained(&m, sd, "pre_timm.safetensors", None, 0.02, 0)
        .unwrap_err()
        .to_string();
    for needle in [
        "pre_timm.safetensors",
        "missing keys",
        "blocks.2.attn.qkv.weight",
        "unexpected keys",
        "blocks.0.ls1.gamma",
    ] {
        assert!(e.contains(needle), "`{needle}` not in {e}");
    }
    let bad = fixture("pre_expected.safetensors").with_extension("pth");
    let e = read_weights(&bad).unwrap_err().to_string();
    assert!(e.contains("pre_expected.pth"), "{e}");
}

#[test]
fn every_pretrained_tag_resolves_to_its_preprocessing_or_names_the_missing_arch() {
    for p in PRETRAINED {
        match registry::lookup(p.name) {
            Ok(s) => {
                assert_eq!(s.name, p.name);
                assert_eq!(s.mean, p.mean.to_vec());
                assert_eq!(s.crop_pct, p.crop_pct);
            }
            Err(e) => assert!(e.to_string().contains(p.arch), "{e}"),
        }
    }
    let clip = registry::lookup("vit_base_patch16_clip_224.openai").unwrap();
    assert!(matches!(&clip.arch, ModelArch::Vit(c) if c.pre_norm && c.num_classes == 512));
    assert_eq!(
        find("vit_base_patch16_224.mae").unwrap().license,
        "cc-by-nc-4.0"
    );
}

/// A stand-in for the Hub's `resolve` endpoint on loopback: answers the `bytes=0-0` metadata
/// probe (etag, x-repo-commit, content-range) and the ranged download, and records the
/// Authorization headers it saw.
fn serve_file(data: Vec<u8>, requests: usize) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for (i, stream) in listener.incoming().take(requests).enumerate() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut line, mut range, mut path) = (String::new(), 0usize, String::new());
            reader.read_line(&mut path).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let l = line.trim_end().to_string();
                if l.is_empty() {
                    break;
                }
                let lower = l.to_ascii_lowercase();
                if lower.starts_with("authorization:") {
                    seen.push(l["authorization:".len()..].trim().to_string());
                }
                if let Some(r) = lower.strip_prefix("range: bytes=") {
                    range = r.split('-').next().unwrap().parse().unwrap();
                }
            }
            assert!(
                path.contains("/timm/served/resolve/main/model.safetensors"),
                "{path}"
            );
            // First the metadata probe (bytes=0-0), then the download (bytes=N-).
            let end = if i == 0 { 0 } else { data.len() - 1 };
            let body = &data[range..=end];
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\netag: \"blobetag\"\r\nx-repo-commit: c0ffee\r\n\
                 content-range: bytes {range}-{end}/{}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                data.len(),
                body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(body).unwrap();
        }
        seen
    });
    (addr, h)
}

#[test]
fn a_missing_file_is_downloaded_from_hf_endpoint_with_the_token_then_reused() {
    let data = std::fs::read(fixture("pre_timm.safetensors")).unwrap();
    let (endpoint, server) = serve_file(data.clone(), 2);
    let dir = tempfile::tempdir().unwrap();
    let opts = HubOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        endpoint: Some(endpoint),
        token: Some("hf_test_token".into()),
        offline: false,
        progress: false,
    };
    let p = fetch("timm/served", None, "model.safetensors", &opts).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), data);
    assert!(
        p.ends_with("models--timm--served/snapshots/c0ffee/model.safetensors"),
        "{p:?}"
    );
    let auth = server.join().unwrap();
    assert_eq!(auth, ["Bearer hf_test_token", "Bearer hf_test_token"]);
    // Now cached: offline finds it, and it loads.
    let offline = HubOptions {
        offline: true,
        endpoint: None,
        ..opts
    };
    let again = fetch("timm/served", None, "model.safetensors", &offline).unwrap();
    assert_eq!(again, p);
    let m = build(tiny(32));
    load(&m, &again);
}
