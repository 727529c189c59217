//! A run directory: the names of the files a run writes (pre-training, distillation, transfer), typed readers for what is read back
//! (by `--resume`, `ablate` and the charts), and the exclusive lock that keeps two processes
//! from writing one run.
//!
//! The lock is an OS file lock (`flock` on Linux, `LockFileEx` on Windows, through
//! [`std::fs::File::try_lock`]) on `RUN_DIR/.lock`, held by the [`RunDir`] value for as long as
//! it lives. The OS drops it when the process ends, however it ends, so a killed run never
//! leaves a stale lock; the file itself stays (empty of meaning once unlocked) and holds the
//! process id and command of its last holder, for the error a second writer gets.

use super::{EvalReport, PretrainReport, ProbeReport, StepLog};
use crate::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The resolved config of the run (written at its start, read by `--resume` only through the
/// checkpoint's own copy).
pub const CONFIG: &str = "config.toml";
/// One line per logged step ([`StepLog`]).
pub const METRICS: &str = "metrics.jsonl";
/// One line per kNN evaluation during and at the end of the run ([`EvalReport`]).
pub const EVALS: &str = "evals.jsonl";
/// One line per epoch of the online linear probe ([`ProbeReport`]).
pub const PROBE: &str = "probe.jsonl";
/// What the run is: seed, backend, revision, data size, schedule length ([`RunInfo`] of its
/// latest start or resume).
pub const RUN: &str = "run.json";
/// One [`RunInfo`] per start or resume of the run, appended: which binary, on which CPU, trained
/// from which step (a run continued by other binaries or machines says which steps each made).
pub const INVOCATIONS: &str = "invocations.jsonl";
/// The final report of a finished run ([`PretrainReport`]).
pub const EVAL: &str = "eval.json";
/// The images that could not be read, with the reason.
pub const SKIPPED: &str = "skipped.json";
/// Steps skipped for a non-finite loss (`train.on-non-finite = "skip"`).
pub const SKIPPED_STEPS: &str = "skipped-steps.jsonl";
/// The diagnostic of a run stopped by a non-finite loss.
pub const NON_FINITE: &str = "non-finite.json";
/// The charts of loss, learning rate, τ, collapse signal and evaluations (drawn by the binary).
pub const CURVES: &str = "curves.png";
/// The evaluations run later on the run's checkpoints (`byol eval …`), one JSON line each,
/// appended under the run's lock.
pub const EVALUATIONS: &str = "evaluations.jsonl";
/// A distillation's student, a classifier file (`byol distill`).
pub const STUDENT: &str = "student.safetensors";
/// A finished distillation's result (`distill::DistillResult`).
pub const DISTILL: &str = "distill.json";
/// A segmentation transfer's report (`workflow::SegmentRun`).
pub const SEGMENT: &str = "segment.json";
/// A depth transfer's report (`workflow::DepthRun`).
pub const DEPTH: &str = "depth.json";
/// A transfer's validation images beside its predictions.
pub const PREDICTIONS: &str = "predictions.png";
/// The lock file (see the module's documentation).
pub const LOCK: &str = ".lock";

/// What a run is (`run.json`): written at its start and at each resume, and appended to
/// `invocations.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// The step this invocation started from: 0, or the checkpoint's when resuming.
    pub start_step: u64,
    /// Seconds since the Unix epoch when this invocation started.
    pub started_at: u64,
    pub seed: u64,
    pub backend: &'static str,
    /// The source's git revision the binary was built from.
    pub git_revision: &'static str,
    pub version: &'static str,
    pub train_images: usize,
    pub test_images: usize,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
    pub peak_lr: f64,
    /// On a GPU backend: what the build gives burn (its backends, autotune, fusion).
    pub gpu_build: Option<crate::backend::GpuBuild>,
    /// On the CPU backend: whose kernels run (`BYOL_CPU_KERNELS`: `ours` or `burn`).
    pub cpu_kernels: Option<&'static str>,
    /// The host's CPU (on every backend: it prepares the views on a GPU run too).
    pub cpu: crate::backend::CpuInfo,
}

/// A step skipped for its non-finite loss (a line of `skipped-steps.jsonl`).
#[derive(Debug, Clone, Serialize)]
pub struct SkippedStep {
    /// The state's step, which the skip did not advance.
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub tau: f64,
}

/// The diagnostic of a run stopped by a non-finite loss (`non-finite.json`): the first step
/// logged with it (the loss went bad at most `log_every` steps before).
#[derive(Debug, Clone, Serialize)]
pub struct NonFiniteStop {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub tau: f64,
    pub log_every: u64,
}

/// An image that could not be read, and why (an entry of `skipped.json`).
#[derive(Debug, Clone, Serialize)]
pub struct SkippedImage {
    pub file: String,
    pub reason: String,
}

/// A run directory held for writing: while this value lives, no other process can hold it.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// Whether this process made the directory (it did not exist before [`RunDir::lock`]).
    created: bool,
    /// The locked file; the lock goes with it.
    _lock: File,
}

impl RunDir {
    /// Create `path` if needed and take its lock, or fail at once with an error naming the
    /// directory and the process that holds it.
    pub fn lock(path: &Path) -> Result<RunDir> {
        let created = !path.exists();
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        let lock_path = path.join(LOCK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::RunLocked {
                    path: path.to_path_buf(),
                    holder: if holder.is_empty() {
                        "another process".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        let who = format!(
            "process {} ({})",
            std::process::id(),
            std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(who.as_bytes()))
            .map_err(|e| Error::io(&lock_path, e))?;
        Ok(RunDir {
            path: path.to_path_buf(),
            created,
            _lock: file,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the file `name` (one of this module's constants) in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Append `record` as one JSON line to the file `name`.
    pub fn append<T: Serialize>(&self, name: &str, record: &T) -> Result<()> {
        let path = self.file(name);
        let line = serde_json::to_string(record)
            .map_err(|e| Error::data(&path, format!("cannot write a record: {e}")))?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        f.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| Error::io(&path, e))
    }

    /// Write `record` as the file `name` (indented JSON), atomically.
    pub fn write<T: Serialize>(&self, name: &str, record: &T) -> Result<()> {
        let path = self.file(name);
        let text = serde_json::to_string_pretty(record)
            .map_err(|e| Error::data(&path, format!("cannot write a record: {e}")))?;
        crate::io::write_atomic(&path, text.as_bytes())
    }

    /// Whether the directory was made by this process.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Remove the directory if this process made it and it holds no checkpoint: what a run that
    /// failed before its first step leaves. Returns whether it was removed.
    pub(crate) fn remove_if_unused(&self) -> bool {
        self.created
            && super::checkpoint::list(&self.path).is_empty()
            && std::fs::remove_dir_all(&self.path).is_ok()
    }
}

/// Drop the lines of the step logs (`metrics.jsonl`, `evals.jsonl`, `probe.jsonl`,
/// `skipped-steps.jsonl`) written after `step`: a run resumed from the checkpoint of `step`
/// writes them again, so that each step is logged once, as in an uninterrupted run. (The event
/// files are cut the same way by `events::EventWriter::create`.)
pub(crate) fn trim_logs_after(dir: &Path, step: u64) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Step {
        step: u64,
    }
    for name in [METRICS, EVALS, PROBE, SKIPPED_STEPS] {
        let path = dir.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let keep: String = text
            .lines()
            .filter(|l| serde_json::from_str::<Step>(l).is_ok_and(|s| s.step <= step))
            .flat_map(|l| [l, "\n"])
            .collect();
        if keep.len() != text.len() {
            crate::io::write_atomic(&path, keep.as_bytes())?;
        }
    }
    Ok(())
}

/// The JSON lines of `dir/name`, each parsed as `T`; a missing file is an empty list, a line that
/// does not parse an error naming the file and the line.
fn read_lines<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<Vec<T>> {
    let path = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).map_err(|e| Error::data(&path, format!("line {}: {e}", n + 1)))
        })
        .collect()
}

/// The logged steps of the run in `dir` (`metrics.jsonl`).
pub fn read_metrics(dir: &Path) -> Result<Vec<StepLog>> {
    read_lines(dir, METRICS)
}

/// The kNN evaluations of the run in `dir` (`evals.jsonl`).
pub fn read_evals(dir: &Path) -> Result<Vec<EvalReport>> {
    read_lines(dir, EVALS)
}

/// The online probe's reports of the run in `dir` (`probe.jsonl`).
pub fn read_probes(dir: &Path) -> Result<Vec<ProbeReport>> {
    read_lines(dir, PROBE)
}

/// The final report of the run in `dir` (`eval.json`), if it finished.
pub fn read_report(dir: &Path) -> Result<Option<PretrainReport>> {
    let path = dir.join(EVAL);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::data(&path, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second holder of one directory is refused with the first one's process id, and the
    /// directory is free again once the first holder is gone.
    #[test]
    fn one_writer_at_a_time() {
        let dir = std::env::temp_dir().join(format!("byol-run-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = RunDir::lock(&dir).unwrap();
        assert!(first.created());
        let e = RunDir::lock(&dir).unwrap_err().to_string();
        assert!(
            e.contains(&dir.display().to_string())
                && e.contains(&format!("process {}", std::process::id())),
            "{e}"
        );
        drop(first);
        let again = RunDir::lock(&dir).expect("free once the holder is gone");
        assert!(!again.created());
        assert!(
            !again.remove_if_unused(),
            "only a directory this process made is removed"
        );
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A resume from step 5 drops what a killed run logged after its checkpoint (steps 6 and 7),
    /// in every step log, and keeps the rest as it was.
    #[test]
    fn resumed_logs_are_cut_at_the_checkpoint() {
        let dir = std::env::temp_dir().join(format!("byol-run-dir-trim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lines = |steps: &[u64]| {
            steps
                .iter()
                .map(|s| format!("{{\"step\":{s},\"x\":1}}\n"))
                .collect::<String>()
        };
        for name in [METRICS, EVALS, PROBE, SKIPPED_STEPS] {
            std::fs::write(dir.join(name), lines(&[4, 5, 6, 7])).unwrap();
        }
        trim_logs_after(&dir, 5).unwrap();
        for name in [METRICS, EVALS, PROBE, SKIPPED_STEPS] {
            assert_eq!(
                std::fs::read_to_string(dir.join(name)).unwrap(),
                lines(&[4, 5]),
                "{name}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The readers name the file and line of what does not parse, and read a missing file as
    /// nothing recorded.
    #[test]
    fn readers_name_the_bad_line() {
        let dir = std::env::temp_dir().join(format!("byol-run-dir-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(read_metrics(&dir).unwrap().is_empty());
        assert!(read_report(&dir).unwrap().is_none());
        let line = r#"{"step":5,"epoch":0,"loss":3.5,"lr":0.1,"tau":0.99,"projection_std":0.06,"images_per_sec":100.0}"#;
        std::fs::write(dir.join(METRICS), format!("{line}\nnot json\n")).unwrap();
        let e = read_metrics(&dir).unwrap_err().to_string();
        assert!(e.contains(METRICS) && e.contains("line 2"), "{e}");
        std::fs::write(dir.join(METRICS), format!("{line}\n")).unwrap();
        assert_eq!(read_metrics(&dir).unwrap()[0].step, 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
