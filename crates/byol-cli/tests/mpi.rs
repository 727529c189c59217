//! Several processes through MPI (a build with `--features mpi`; `.ci/run` installs Open MPI):
//! real `mpirun` launches on this machine, shared memory and loopback only. Two processes with
//! half the batch each and cross-process BatchNorm take the steps of one process with the whole
//! batch; a run stopped and resumed on two processes is the uninterrupted one; a resume with
//! another number of processes, and ranks that start from different weights, are refused; a
//! rank killed mid-run ends the job with an error in bounded time, its last checkpoint intact.
#![cfg(feature = "mpi")]

mod common;

use byol::train::checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The common tiny run (2 epochs of 5 steps), every step logged, no probe, no baseline.
fn tiny() -> Vec<String> {
    let extra = [
        "--set",
        "train.log-every=1",
        "--set",
        "eval.online-probe.enabled=false",
        "--no-baseline",
    ];
    common::TINY
        .iter()
        .chain(&extra)
        .map(|s| s.to_string())
        .collect()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("byol-mpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `mpirun` with the flags a container's root and a small machine need; `spec` is one or more
/// `-np N <args>` groups (MPMD) separated by `:`.
fn mpirun(groups: &[(usize, Vec<String>)]) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "--mca",
        "btl",
        "self,vader,tcp",
        "--mca",
        "btl_tcp_if_include",
        "lo",
    ]);
    for (i, (n, args)) in groups.iter().enumerate() {
        if i > 0 {
            c.arg(":");
        }
        c.args(["-np", &n.to_string(), env!("CARGO_BIN_EXE_byol")])
            .args(args);
    }
    c
}

fn pretrain(dir: &Path, resume: bool, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "pretrain".into(),
        if resume { "--resume" } else { "--run-dir" }.into(),
        dir.display().to_string(),
    ];
    if !resume {
        a.extend(tiny());
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run(mut c: Command) -> Output {
    let out = c.output().expect("mpirun (Open MPI) is installed");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    println!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Run `byol` with `args` in this process alone (no `mpirun`); it must succeed.
fn one_process(args: Vec<String>) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, stderr) = common::byol(&args);
    assert!(ok, "{stderr}");
}

fn losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// The largest difference between two runs' step losses, relative to the first run's.
fn loss_gap(x: &[f64], y: &[f64]) -> f64 {
    x.iter()
        .zip(y)
        .map(|(p, q)| (p - q).abs() / p.abs())
        .fold(0.0, f64::max)
}

/// Every tensor of the newest checkpoint, and the largest difference between two runs' tensors
/// relative to each tensor's largest value.
fn weight_gap(a: &Path, b: &Path) -> f64 {
    let read = |d: &Path| checkpoint::read_latest(d).unwrap().0;
    let (a, b) = (read(a), read(b));
    let device = byol::Device::flex();
    let (sa, sb) = (a.state(&device).unwrap(), b.state(&device).unwrap());
    let (ca, cb) = (
        byol::model::params::collect(&sa.online),
        byol::model::params::collect(&sb.online),
    );
    let mut worst = 0f64;
    for (k, t) in &ca {
        let (x, y): (Vec<f32>, Vec<f32>) = (
            t.flat.clone().into_data().try_into_vec().unwrap(),
            cb[k].flat.clone().into_data().try_into_vec().unwrap(),
        );
        let scale = x.iter().map(|v| v.abs()).fold(0f32, f32::max).max(1e-6);
        worst = worst.max(f64::from(
            x.iter()
                .zip(&y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max)
                / scale,
        ));
    }
    worst
}

/// 2 processes × 8 images with cross-process BatchNorm = 1 process × 16 images over 10 steps, to f32
/// rounding (the bounds of the thread replicas' test, `crates/byol/tests/parallel.rs`: the sums
/// of the statistics and gradients are added in another order); without it, another model.
#[test]
fn two_processes_take_the_steps_of_one_and_resume_as_one_run() {
    let d = tmp("equal");
    one_process(pretrain(&d.join("one"), false, &[]));
    let out = run(mpirun(&[(2, pretrain(&d.join("two"), false, &[]))]));
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .matches("pre-trained 10 steps")
            .count()
            == 1,
        "rank 0 alone reports"
    );
    let out = run(mpirun(&[(
        2,
        pretrain(&d.join("local"), false, &["--set", "model.sync-bn=false"]),
    )]));
    assert!(out.status.success());
    let (a, b, c) = (
        losses(&d.join("one")),
        losses(&d.join("two")),
        losses(&d.join("local")),
    );
    assert_eq!((a.len(), b.len()), (10, 10));
    assert!(loss_gap(&a, &b) < 1e-6, "{a:?} vs {b:?}");
    assert!(weight_gap(&d.join("one"), &d.join("two")) < 1e-4);
    // Two threads of one process sum their replicas' values in rank order, as two processes
    // do: the same bits, where one process against two (another batch split, other sums) can
    // only be compared to a tolerance.
    one_process(pretrain(
        &d.join("threads"),
        false,
        &["--devices", "flex:0,flex:1"],
    ));
    assert_eq!(
        weight_gap(&d.join("two"), &d.join("threads")),
        0.0,
        "two processes against two threads"
    );
    assert!(
        loss_gap(&a, &c) > 1e-2 && weight_gap(&d.join("one"), &d.join("local")) > 1e-1,
        "without cross-process BatchNorm: {c:?}"
    );
    // 3 steps, then a resume of 7 on two processes: the 10 steps of the uninterrupted run, bit for bit.
    assert!(
        run(mpirun(&[(
            2,
            pretrain(&d.join("half"), false, &["--max-steps", "3"])
        )]))
        .status
        .success()
    );
    // Another number of processes is refused, by field, and leaves the run as it was.
    let once = Command::new(env!("CARGO_BIN_EXE_byol"))
        .args(pretrain(&d.join("half"), true, &[]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&once.stderr);
    assert!(
        !once.status.success()
            && err.contains("train.world")
            && err.contains("2 process(es) and the run has 1"),
        "{err}"
    );
    assert!(
        run(mpirun(&[(2, pretrain(&d.join("half"), true, &[]))]))
            .status
            .success()
    );
    let (full, half) = (
        checkpoint::read_latest(&d.join("two")).unwrap().0,
        checkpoint::read_latest(&d.join("half")).unwrap().0,
    );
    assert_eq!((full.step, half.step), (10, 10));
    assert_eq!(full.sha256, half.sha256, "the resumed run's state differs");
    assert_eq!(losses(&d.join("two")), losses(&d.join("half")));
    std::fs::remove_dir_all(&d).unwrap();
}

/// A ViT through MPI: two processes take the steps of two thread replicas of one process bit for
/// bit (the same sums in rank order), so the thread replicas' equivalence with one device
/// (`crates/byol/tests/parallel.rs`, `two_vit_replicas_take_the_steps_of_one_device`) holds
/// across processes.
#[test]
fn two_processes_train_a_vit_as_two_threads_do() {
    let d = tmp("vit");
    let vit = [
        "--set",
        "model.encoder.arch=\"vit-tiny\"",
        "--set",
        "model.encoder.patch-size=4",
        "--set",
        "model.encoder.depth=1",
        "--set",
        "model.encoder.width=16",
        "--set",
        "model.encoder.heads=2",
    ];
    let out = run(mpirun(&[(2, pretrain(&d.join("two"), false, &vit))]));
    assert!(out.status.success());
    let threads = [&vit[..], &["--devices", "flex:0,flex:1"]].concat();
    one_process(pretrain(&d.join("threads"), false, &threads));
    assert_eq!(
        weight_gap(&d.join("two"), &d.join("threads")),
        0.0,
        "two processes against two threads"
    );
    let (two, threads) = (losses(&d.join("two")), losses(&d.join("threads")));
    assert_eq!(two.len(), 10);
    assert_eq!(two, threads);
    std::fs::remove_dir_all(&d).unwrap();
}

/// On a GPU backend (`wgpu`; in CI Mesa's lavapipe, a Vulkan device on the CPU, one per
/// process) the cross-process sums are staged through host memory (`collective/host.rs`): 2
/// processes × 8 images with cross-process BatchNorm take the steps of 1 process × 16 images, to
/// the bounds of the `flex` test. The one process runs on `flex`: the same run on wgpu gives the
/// same losses to 1.04e-7 relative over the 10 steps (measured on lavapipe;
/// `crates/byol/tests/gpu.rs` holds the backends together step by step), and a cold GPU process
/// compiles and tunes every kernel of its batch of 16 (216 s alone on a 2-core CPU), none of
/// which the ranks' batch of 8 reuses. That these bounds tell cross-process BatchNorm from none
/// at this model and batch is the `flex` test's negative control (the same runs, the same one
/// process); measured on wgpu too: without it the gaps are 0.13 and 2.88, so ranks whose
/// BatchNorm saw only their own images would fail the bounds below.
#[cfg(feature = "wgpu")]
#[test]
fn two_gpu_processes_take_the_steps_of_one() {
    let d = tmp("wgpu");
    let gpu = ["--backend", "wgpu"];
    one_process(pretrain(&d.join("one"), false, &[]));
    let out = run(mpirun(&[(2, pretrain(&d.join("two"), false, &gpu))]));
    assert!(out.status.success());
    // Each rank keeps its own kernel and autotune cache: two processes opening one database at
    // once leave the second unable to store anything (CubeCL: "database is readonly").
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("database is readonly"),
        "the ranks share one GPU cache"
    );
    let run_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("two/run.json")).unwrap()).unwrap();
    assert_eq!(run_json["backend"], "wgpu");
    let (a, b) = (losses(&d.join("one")), losses(&d.join("two")));
    let gap = loss_gap(&a, &b);
    assert_eq!((a.len(), b.len()), (10, 10));
    let weights = weight_gap(&d.join("one"), &d.join("two"));
    println!("loss gap {gap:e}, weight gap {weights:e}");
    assert!(gap < 1e-6, "{a:?} vs {b:?}");
    assert!(weights < 1e-4);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Ranks that would start from different weights (here: another seed) are refused before a
/// step, naming the rank; a command other than `pretrain` under `mpirun` is refused.
#[test]
fn ranks_that_start_from_different_weights_are_refused() {
    let d = tmp("seeds");
    let a = pretrain(&d.join("run"), false, &["--seed", "0"]);
    let b = pretrain(&d.join("run"), false, &["--seed", "1"]);
    let out = run(mpirun(&[(1, a), (1, b)]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("replica 1")
            && err.contains("starts from other weights than rank 0"),
        "{err}"
    );
    assert!(checkpoint::list(&d.join("run")).is_empty());
    // Every other command would run once per process: refused.
    let out = run(mpirun(&[(2, vec!["dump-config".into()])]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("only `byol pretrain` runs on several processes"),
        "{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// The pid of the `byol` process of MPI rank `rank` whose command line names `dir`.
fn pid_of_rank(rank: usize, dir: &Path) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let env = std::fs::read(e.path().join("environ")).ok()?;
        let has = |hay: &[u8], needle: &str| hay.split(|&b| b == 0).any(|s| s == needle.as_bytes());
        (has(&cmd, &dir.display().to_string()) && has(&env, &want)).then_some(pid)
    })
}

/// Rank 1 killed (SIGKILL) mid-run: the job ends with a non-zero status within 60 s (measured:
/// about 1 s), the output names the dead rank, and the newest checkpoint reads and verifies.
#[test]
fn a_killed_rank_ends_the_job_and_leaves_a_valid_checkpoint() {
    let d = tmp("kill");
    let run_dir = d.join("run");
    // 4,000 images: 250 steps an epoch.
    let long = [
        "--set",
        "data.synthetic.train-per-class=400",
        "--set",
        "train.checkpoint-every=5",
    ];
    let mut c = mpirun(&[(2, pretrain(&run_dir, false, &long))]);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun");
    let start = Instant::now();
    while checkpoint::list(&run_dir).len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint after 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = pid_of_rank(1, &run_dir).expect("rank 1's process");
    let killed = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the job still runs 60 s after rank 1 died"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "ended {:?} after the kill: {status:?}\n{text}",
        killed.elapsed()
    );
    assert!(!status.success());
    assert!(
        text.contains("rank 1") && (text.contains("signal 9") || text.contains("Killed")),
        "{text}"
    );
    let (loaded, _) = checkpoint::read_latest(&run_dir).expect("a valid checkpoint");
    assert!(loaded.step >= 5 && loaded.step % 5 == 0);
    std::fs::remove_dir_all(&d).unwrap();
}
