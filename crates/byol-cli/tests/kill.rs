//! Kill safety: a real `byol pretrain` process is killed with SIGKILL at random moments and
//! while it writes a checkpoint, then resumed, again and again. No checkpoint is ever left
//! unreadable, each resume starts from the newest complete checkpoint, and the final state is
//! bit-identical to that of an uninterrupted run with the same seed, as are its TensorBoard
//! curves (each step once).

use byol::train::checkpoint;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STEPS: u64 = 200;

fn args(dir: &Path, resume: bool) -> Vec<String> {
    args_with(dir, resume, &[])
}

/// The run's arguments, with `extra` settings after its own.
fn args_with(dir: &Path, resume: bool, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["pretrain".into()];
    if resume {
        a.extend(["--resume".into(), dir.display().to_string()]);
    } else {
        a.extend(["--run-dir".into(), dir.display().to_string()]);
    }
    for s in [
        "model.encoder.base-width=4",
        "model.projector.hidden=32",
        "model.projector.output=16",
        "model.predictor.hidden=32",
        "model.predictor.output=16",
        "data.image-size=16",
        "data.synthetic.train-per-class=8",
        "data.synthetic.test-per-class=4",
        "train.batch-size=16",
        "train.epochs=40",
        "train.checkpoint-every=1",
        "train.keep-checkpoints=2",
        "train.knn-every-epochs=0",
        "eval.knn.k=5",
    ]
    .iter()
    .chain(extra)
    {
        a.extend(["--set".into(), s.to_string()]);
    }
    a.push("--no-baseline".into());
    a
}

fn spawn(dir: &Path, resume: bool) -> Child {
    Command::new(env!("CARGO_BIN_EXE_byol"))
        .args(args(dir, resume))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start byol")
}

fn has_temporary(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
}

/// Every checkpoint file present reads and verifies; returns the newest step.
fn check_all(dir: &Path) -> Option<u64> {
    let all = checkpoint::list(dir);
    for (step, path) in &all {
        let l = checkpoint::read(path)
            .unwrap_or_else(|e| panic!("unreadable checkpoint after a kill: {e}"));
        assert_eq!(l.step, *step);
    }
    all.first().map(|c| c.0)
}

/// While the run of process `pid` writes `dir` (from its first checkpoint on), a second
/// `pretrain` into it and a `--resume` of it both fail at once, naming the directory and `pid`.
fn refuse_second_writers(dir: &Path, pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while check_all(dir).is_none() {
        assert!(
            Instant::now() < deadline,
            "no checkpoint in {} after 60 s",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for resume in [false, true] {
        let started = Instant::now();
        let out = spawn(dir, resume).wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "a second writer (resume: {resume}) ran: {err}"
        );
        assert!(
            err.contains(&format!("{} is in use by process {pid}", dir.display())),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the refusal took {:?}",
            started.elapsed()
        );
    }
}

/// Ctrl-C (SIGINT) in the middle of a run whose regular checkpoints are far apart: the process
/// finishes its step, writes a checkpoint of it, says how to resume and exits with status 130;
/// the resumed run ends bit-identical to the uninterrupted one (`want`, its state's digest).
fn interrupt_then_resume(dir: &Path, want: &str) {
    let sparse = ["train.checkpoint-every=1000"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_byol"))
        .args(args_with(dir, false, &sparse))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while byol::train::run_dir::read_metrics(dir).map_or(0, |m| m.len()) < 20 {
        assert!(
            Instant::now() < deadline,
            "the run logged fewer than 20 steps in 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = Instant::now();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the interrupted run took {:?} to stop",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(130), "{err}");
    let steps: Vec<u64> = checkpoint::list(dir).iter().map(|c| c.0).collect();
    let logged = byol::train::run_dir::read_metrics(dir)
        .unwrap()
        .last()
        .unwrap()
        .step;
    assert!(
        steps.len() == 1 && steps[0] == logged && logged < STEPS,
        "checkpoints {steps:?}, last logged step {logged}: {err}"
    );
    assert!(
        err.contains(&format!(
            "interrupted at step {logged}; continue with: byol pretrain --resume"
        )),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_byol"))
        .args(args_with(dir, true, &sparse))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (end, _) = checkpoint::read_latest(dir).unwrap();
    assert_eq!(
        (end.step, end.sha256.as_str()),
        (STEPS, want),
        "the interrupted and resumed run differs from the uninterrupted one"
    );
    eprintln!("SIGINT at step {logged}: checkpoint written, resumed to the uninterrupted result");
}

/// The run also serves as the test of the run directory's lock: a second writer is refused while
/// it runs, and the run that was not disturbed is the reference the killed one must match.
#[test]
fn sigkill_at_random_moments_then_resume_gives_the_uninterrupted_result() {
    let base = std::env::temp_dir().join(format!("byol-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (reference, killed) = (base.join("reference"), base.join("killed"));
    let first = spawn(&reference, false);
    refuse_second_writers(&reference, first.id());
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: Vec<u64> = byol::train::run_dir::read_metrics(&reference)
        .unwrap()
        .iter()
        .map(|m| m.step)
        .collect();
    assert_eq!(
        steps,
        (1..=STEPS).collect::<Vec<_>>(),
        "metrics.jsonl of the run that a second writer tried to join"
    );

    let mut lcg = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |lo: u64, hi: u64| {
        lcg = lcg
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        lo + (lcg >> 33) % (hi - lo)
    };
    let (mut kills, mut mid_write, mut resumes) = (0, 0, 0);
    let mut finished = false;
    for round in 0..40 {
        let newest = check_all(&killed);
        let mut child = spawn(&killed, newest.is_some());
        // Even rounds: kill after a random delay; odd rounds: after a random delay, as soon as a
        // checkpoint's temporary file appears (mid-write).
        // Odd rounds: after the random delay, wait (up to 10 s) for the next checkpoint write.
        let delay = Instant::now() + Duration::from_millis(next(30, 900));
        let deadline = if round % 2 == 1 {
            Instant::now() + Duration::from_secs(10)
        } else {
            delay
        };
        let mut saw_tmp = false;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if round % 2 == 1 && Instant::now() >= delay && has_temporary(&killed) {
                saw_tmp = true;
                break None;
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_micros(if round % 2 == 1 { 20 } else { 500 }));
        };
        let stderr =
            |c: Child| String::from_utf8_lossy(&c.wait_with_output().unwrap().stderr).into_owned();
        match status {
            Some(s) => {
                let err = stderr(child);
                assert!(s.success(), "{err}");
                finished = true;
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                let err = stderr(child);
                kills += 1;
                mid_write += usize::from(saw_tmp);
                if let Some(step) = newest {
                    // The resumed process started from the newest complete checkpoint.
                    if let Some(line) = err.lines().find(|l| l.starts_with("resuming")) {
                        assert!(
                            line.contains(&format!("at step {step}")),
                            "{line} (newest complete: {step})"
                        );
                        resumes += 1;
                    }
                }
            }
        }
        if kills >= 16 {
            break;
        }
    }
    if !finished {
        let newest = check_all(&killed);
        let out = spawn(&killed, newest.is_some()).wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        kills >= 5,
        "only {kills} kills landed before the run finished"
    );
    assert!(mid_write >= 1, "no kill landed during a checkpoint write");
    // A killed process is checked when it got as far as announcing its resume point.
    assert!(
        resumes >= 3,
        "only {resumes} of {kills} killed processes were checked to resume from the newest checkpoint"
    );
    let (a, _) = checkpoint::read_latest(&reference).unwrap();
    let (b, _) = checkpoint::read_latest(&killed).unwrap();
    assert_eq!((a.step, b.step), (STEPS, STEPS));
    assert_eq!(
        a.sha256, b.sha256,
        "final state differs from the uninterrupted run"
    );
    // The TensorBoard curves of the interrupted run, all its event files in order, are those of
    // the uninterrupted run: every step once, the same values.
    let curve = |dir: &Path| -> Vec<(u64, f32)> {
        let files = byol::events::event_files(dir).unwrap();
        let all = files
            .iter()
            .flat_map(|f| byol::events::read_scalars(f).unwrap().0);
        all.filter(|e| e.tag == "train/loss")
            .map(|e| (e.step, e.value))
            .collect()
    };
    // So is metrics.jsonl: a resume drops what a killed process logged after its checkpoint.
    let steps = |dir: &Path| {
        byol::train::run_dir::read_metrics(dir)
            .unwrap()
            .iter()
            .map(|m| (m.step, m.loss))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        steps(&killed),
        steps(&reference),
        "metrics.jsonl of the interrupted run"
    );
    let (want, got) = (curve(&reference), curve(&killed));
    assert_eq!(
        want.iter().map(|e| e.0).collect::<Vec<_>>(),
        (1..=STEPS).collect::<Vec<_>>()
    );
    assert_eq!(got, want, "event files of the interrupted run");
    eprintln!(
        "{kills} SIGKILLs ({mid_write} during a checkpoint write), {resumes} resumes checked; final state and curves identical"
    );
    interrupt_then_resume(&base.join("interrupted"), &a.sha256);
    let _ = std::fs::remove_dir_all(&base);
}
