//! Data-parallel training under a real `mpirun` (Open MPI on loopback), against one process
//! with the same global batch. Needs `--features mpi` and Debian's openmpi-bin/libopenmpi-dev
//! (`.ci/run` installs them).
#![cfg(feature = "mpi")]

use masksub_cli::checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_masksub");

/// A short recipe: 400 real Fashion-MNIST images, global batch 50 (8 steps an epoch), MaskSub.
fn recipe(out: &Path, epochs: usize) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        "--model",
        "vit_fmnist_tiny",
        "--train-subset",
        "400",
        "--batch-size",
        "50",
        "--lr",
        "3e-3",
        "--seed",
        "11",
        "--threads",
        "1",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(["--epochs".into(), epochs.to_string()]);
    a.extend(["--out".into(), out.display().to_string()]);
    a
}

/// `mpirun -np N masksub <args>` on loopback only, tagged so the test can find its ranks.
fn mpirun(np: usize, args: &[String], tag: &str, timeout_s: u32) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(np.to_string())
        .args(["--mca", "btl", "self,tcp"])
        .args(["-x", "MASKSUB_TEST_TAG", "-x", "MASKSUB_DIST_TIMEOUT"])
        .arg(BIN)
        .args(args)
        .env("OMPI_MCA_btl_tcp_if_include", "lo")
        .env("OMPI_MCA_oob_tcp_if_include", "lo")
        .env("MASKSUB_TEST_TAG", tag)
        .env("MASKSUB_DIST_TIMEOUT", timeout_s.to_string());
    c
}

fn single(args: &[String]) -> Output {
    let o = Command::new(BIN).args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn ok(mut c: Command) -> Output {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "mpirun failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Largest |a - b| over every weight of two run folders' checkpoints.
fn max_weight_diff(a: &Path, b: &Path) -> f32 {
    let (a, b) = (
        checkpoint::load(a).unwrap().weights,
        checkpoint::load(b).unwrap().weights,
    );
    assert_eq!(a.len(), b.len());
    a.iter()
        .map(|(k, ta)| {
            let d = (ta - &b[k]).unwrap().abs().unwrap().flatten_all().unwrap();
            d.max(0).unwrap().to_scalar::<f32>().unwrap()
        })
        .fold(0.0, f32::max)
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn two_ranks_end_where_one_process_with_the_same_global_batch_does() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    single(&recipe(&one, 1));
    let o = ok(mpirun(2, &recipe(&two, 1), "equal", 120));
    let d = max_weight_diff(&one, &two);
    println!("max |w_1rank - w_2ranks| after 8 MaskSub steps: {d:e}");
    assert!(d < 2e-5, "2 ranks and 1 process differ by {d}");
    // Evaluation is reduced across ranks: the same test set, the same accuracy.
    let (s1, s2) = (summary(&one), summary(&two));
    let top1 = |s: &serde_json::Value| s["test_top1"].as_f64().unwrap();
    assert!((top1(&s1) - top1(&s2)).abs() < 0.05, "{s1} vs {s2}");
    assert_eq!(s2["steps"], 8);
    // Only rank 0 reports: one "done" line, one run folder.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.matches("epoch 1/1").count(), 1, "{stdout}");
}

#[test]
fn a_run_started_on_two_ranks_resumes_on_one_and_ends_where_one_process_does() {
    let dir = tempfile::tempdir().unwrap();
    let (full, split) = (dir.path().join("full"), dir.path().join("split"));
    single(&recipe(&full, 2));
    let mut first = recipe(&split, 2);
    first.extend(["--stop-after-epochs".into(), "1".into()]);
    ok(mpirun(2, &first, "resume", 120));
    assert_eq!(checkpoint::load(&split).unwrap().state.step, 8);
    let resume: Vec<String> = ["train", "--resume", &split.display().to_string(), "--quiet"]
        .iter()
        .map(|s| s.to_string())
        .chain(["--threads".into(), "1".into()])
        .collect();
    single(&resume);
    let d = max_weight_diff(&full, &split);
    println!("max |w_1rank - w_2ranks_then_1rank| after 16 MaskSub steps: {d:e}");
    // f32 sums in another order, amplified by Adam's normalisation where v is tiny; the
    // updates themselves are up to lr = 3e-3 a step.
    assert!(
        d < 1e-4,
        "resumed at another world size, weights differ by {d}"
    );
}

/// The pid of rank `rank` of the job tagged `tag`, from /proc (mpirun's children carry the tag).
fn rank_pid(tag: &str, rank: usize) -> Option<u32> {
    let want_tag = format!("MASKSUB_TEST_TAG={tag}");
    let want_rank = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let env = std::fs::read(e.path().join("environ")).ok()?;
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        let has = |s: &str| vars.contains(&s.as_bytes());
        let exe = std::fs::read_link(e.path().join("exe")).ok()?;
        (has(&want_tag) && has(&want_rank) && exe.ends_with("masksub")).then_some(pid)
    })
}

/// Start a long job, wait until rank 1 trains, do `act` to it, and return how the job ended.
fn job_after(act: &str, tag: &str, timeout_s: u32) -> (Output, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let out: PathBuf = dir.path().join("run");
    let mut args = recipe(&out, 50);
    args[4] = "4000".into(); // train-subset: far longer than the test waits
    let child: Child = mpirun(2, &args, tag, timeout_s)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let pid = loop {
        if let Some(p) = rank_pid(tag, 1) {
            break p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "rank 1 never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Let it reach the training loop (collectives in flight every step).
    std::thread::sleep(Duration::from_secs(4));
    let st = Command::new("kill")
        .args([act, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let t_act = Instant::now();
    let o = wait_with_deadline(child, Duration::from_secs(90));
    (o, t_act.elapsed())
}

fn wait_with_deadline(mut child: Child, deadline: Duration) -> Output {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > deadline {
            child.kill().ok();
            panic!("the job hung for {deadline:?} after a rank failed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_rank_that_dies_ends_the_job_with_an_error_instead_of_a_hang() {
    let (o, took) = job_after("-KILL", "killed", 600);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(took < Duration::from_secs(30), "took {took:?}: {err}");
    assert!(err.contains("signal 9") || err.contains("Killed"), "{err}");
}

#[test]
fn a_rank_that_hangs_is_caught_by_the_collective_watchdog() {
    let (o, took) = job_after("-STOP", "stopped", 3);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("has not completed after") && err.contains("MASKSUB_DIST_TIMEOUT"),
        "{err}"
    );
    assert!(took < Duration::from_secs(40), "took {took:?}: {err}");
}
