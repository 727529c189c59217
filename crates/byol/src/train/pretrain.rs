//! The loop of the paper's Algorithm 1 around [`super::guarded_step`]: the setup (devices, state
//! or the checkpoint it resumes, data), then per step the update on the next batch ([`Feed`]:
//! the batch, the schedules at that step, the two views, the step). Everything between steps
//! (logs, collapse check, time budget, kNN, online probe, event files, checkpoints) is the
//! [`Monitor`]'s.

use super::checkpoint;
use super::feed::{Feed, Schedules};
use super::monitor::{Context, Monitor};
use super::run_dir::{self, RunDir};
use super::{Observer, PretrainReport, Replicas, RunOptions, TrainState};
use crate::config::ExperimentConfig;
use crate::{Error, Result, data};
use burn::tensor::Device;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What [`setup`] found: a run to start or continue, or a finished one (resumed) and its report.
enum Start {
    Run(Box<Setup>),
    Finished(Box<PretrainReport>),
}

/// Everything the loop needs, made before its first step.
struct Setup {
    cfg: ExperimentConfig,
    state: TrainState,
    /// Rank 0's device: the loop's, on which it evaluates and checkpoints.
    device: Device,
    /// The other replicas, when there are several devices.
    replicas: Option<Replicas>,
    train: Arc<data::ImageSet>,
    test: data::ImageSet,
    /// The training set's fingerprint: checked against the checkpoint's on resume, recorded in
    /// every checkpoint of the run.
    data: data::Fingerprint,
    skipped: Vec<(String, String)>,
    schedules: Schedules,
}

/// Pre-train with `cfg` in `run_dir`, holding its lock for the run (see [`pretrain_in`]).
pub fn pretrain(
    cfg: &ExperimentConfig,
    run_dir: &Path,
    opts: &RunOptions,
    obs: &mut dyn Observer,
) -> Result<PretrainReport> {
    pretrain_in(cfg, &RunDir::lock(run_dir)?, opts, obs)
}

/// Pre-train with `cfg` in the run directory `run` (held by the caller), evaluate with kNN at
/// the end (and every `train.knn-every-epochs`), and compare with the random-init encoder when
/// asked. A run that fails before its first step removes the directory if it made it.
pub fn pretrain_in(
    cfg: &ExperimentConfig,
    run: &RunDir,
    opts: &RunOptions,
    obs: &mut dyn Observer,
) -> Result<PretrainReport> {
    let started = Instant::now();
    let cfg = &ExperimentConfig {
        data: cfg.data.clone().with_absolute_paths(),
        ..cfg.clone()
    };
    let setup = match setup(cfg, run, opts, obs) {
        Ok(Start::Run(setup)) => setup,
        Ok(Start::Finished(report)) => {
            obs.on_message(&format!(
                "the run in {} is finished (step {}); nothing to resume, its report is unchanged",
                run.path().display(),
                report.steps
            ));
            return Ok(*report);
        }
        Err(e) => {
            run.remove_if_unused();
            return Err(e);
        }
    };
    let Setup {
        cfg,
        mut state,
        device,
        mut replicas,
        train,
        test,
        data,
        skipped,
        schedules,
    } = *setup;
    let ranks = replicas.as_ref().map_or(1, Replicas::count);
    let ctx = Context {
        cfg: &cfg,
        run,
        train: &train,
        test: &test,
        device: &device,
        schedules,
        opts,
        probe_share: cfg.train.batch_size / ranks,
        data: &data,
    };
    let mut feed = Feed::new(&cfg, &train, &device, state.step, schedules);
    let mut monitor = Monitor::start(&ctx, &mut state, skipped, obs)?;
    let go_on = |step: u64, stop: u64, r: &Option<Replicas>| {
        r.as_ref()
            .map_or(step < stop, |r| r.agree_continue(step < stop))
    };
    while go_on(state.step, monitor.stop(), &replicas) {
        let taken = feed.step(state, replicas.as_mut())?;
        monitor.note_failures(taken.failures);
        state = monitor.after_step(&ctx, taken.outcome, &taken.labels, taken.lr, taken.tau, obs)?;
    }
    drop(feed);
    drop(replicas);
    monitor.finish(&ctx, &state, started, obs)
}

/// The devices of this process: `train.devices`, or the backend's first; in an MPI world, one:
/// the device of the process's local rank ([`crate::backend::BackendKind::process_device`]).
pub(crate) fn devices_of(cfg: &ExperimentConfig) -> Result<Vec<Device>> {
    let world = super::parallel::world_size();
    if cfg.train.world != world {
        return Err(Error::config(
            "train.world",
            format!(
                "the config says {} process(es) and the run has {world}: resume a run with the number of processes it started with",
                cfg.train.world
            ),
        ));
    }
    #[cfg(feature = "mpi")]
    if let Some(w) = crate::collective::mpi::world().filter(|w| w.size() > 1) {
        return Ok(vec![cfg.backend.process_device(w.local_rank())?]);
    }
    match cfg.train.devices.as_slice() {
        [] => Ok(vec![cfg.backend.device()?]),
        list => list.iter().map(|d| d.device()).collect(),
    }
}

/// The devices, the state (new, or the checkpoint's when resuming), the data and the schedules;
/// writes `config.toml` and `run.json`.
fn setup(
    cfg: &ExperimentConfig,
    run: &RunDir,
    opts: &RunOptions,
    obs: &mut dyn Observer,
) -> Result<Start> {
    let dir = run.path();
    // Writable: `RunDir::lock` made the folder and wrote its lock file.
    checkpoint::remove_stale_temporaries(dir);
    // One device per replica (train.devices); rank 0's, on this thread, is the one the loop
    // evaluates and checkpoints on.
    let devices = devices_of(cfg)?;
    let device = devices[0].clone();
    cfg.train.precision.check(&device)?;
    let (state, others, recorded_data) = if opts.resume {
        resumed_states(cfg, dir, &devices, obs)?
    } else {
        if let Some((_, existing)) = checkpoint::list(dir).first() {
            return Err(Error::checkpoint(
                existing,
                "a run already exists here: pass --resume to continue it, or choose another --run-dir",
            ));
        }
        let others = devices[1..]
            .iter()
            .map(|d| TrainState::init(cfg, d))
            .collect();
        (TrainState::init(cfg, &device), others, None)
    };
    std::fs::write(run.file(run_dir::CONFIG), cfg.to_toml()).map_err(|e| Error::io(dir, e))?;
    let (train, test, skipped) = load_data(cfg, obs)?;
    let data = data::Fingerprint::of(&train, cfg.data.source.path());
    if let Some((recorded, ckpt)) = recorded_data {
        check_same_data(cfg, &data, recorded.as_ref(), &ckpt)?;
    }
    let schedules = Schedules::new(cfg, train.len())?;
    if opts.resume && state.step >= schedules.total_steps {
        // Resuming a finished run changes nothing: its evaluations and report stay as they are.
        if let Some(report) = run_dir::read_report(dir)? {
            return Ok(Start::Finished(Box::new(report)));
        }
    }
    let info = run_info(cfg, &schedules, state.step, (train.len(), test.len()));
    run.write(run_dir::RUN, &info)?;
    run.append(run_dir::INVOCATIONS, &info)?;
    let replicas = match devices.len() {
        1 => super::parallel::mpi_replicas(cfg, &device, &state)?,
        _ => Some(Replicas::start(cfg, devices.clone(), others)?),
    };
    Ok(Start::Run(Box::new(Setup {
        cfg: cfg.clone(),
        state,
        device,
        replicas,
        train,
        test,
        data,
        skipped,
        schedules,
    })))
}

/// The states of a resumed run, one per device, from the newest checkpoint in `dir`, and the data
/// fingerprint it records with its path; an error when `cfg` differs from its config in a field
/// that changes the run.
#[allow(
    clippy::type_complexity,
    reason = "used once, by setup, which takes it apart at once"
)]
fn resumed_states(
    cfg: &ExperimentConfig,
    dir: &Path,
    devices: &[Device],
    obs: &mut dyn Observer,
) -> Result<(
    TrainState,
    Vec<TrainState>,
    Option<(Option<data::Fingerprint>, PathBuf)>,
)> {
    let (loaded, ckpt_path) = checkpoint::read_latest(dir)?;
    let differences = cfg.resume_differences(&loaded.config);
    if !differences.is_empty() {
        let fields: Vec<&str> = differences.iter().map(|d| d.field.as_str()).collect();
        let shown: Vec<String> = differences.iter().map(ToString::to_string).collect();
        return Err(Error::config(
            fields.join(", "),
            format!(
                "differs from the config of the checkpoint {} ({}); resuming with it would not continue the same run",
                ckpt_path.display(),
                shown.join("; ")
            ),
        ));
    }
    obs.on_message(&format!(
        "resuming {} at step {}",
        ckpt_path.display(),
        loaded.step
    ));
    let others = devices[1..]
        .iter()
        .map(|d| loaded.state(d))
        .collect::<Result<Vec<_>>>()?;
    Ok((
        loaded.state(&devices[0])?,
        others,
        Some((loaded.data.clone(), ckpt_path)),
    ))
}

/// The training set (shared with the loader's threads), the test set and the files skipped when
/// loading them; an error when the batch is larger than the training set.
#[allow(
    clippy::type_complexity,
    reason = "used once, by setup, which takes it apart at once"
)]
fn load_data(
    cfg: &ExperimentConfig,
    obs: &mut dyn Observer,
) -> Result<(Arc<data::ImageSet>, data::ImageSet, Vec<(String, String)>)> {
    obs.on_message("loading data");
    let splits = data::load(&cfg.data, cfg.seed)?;
    // Files skipped when loading, and (without the cache) files that failed to decode later.
    let skipped: Vec<(String, String)> = splits
        .train
        .skipped
        .iter()
        .chain(&splits.test.skipped)
        .map(|(p, e)| (p.display().to_string(), e.clone()))
        .collect();
    if !skipped.is_empty() {
        obs.on_message(&format!("skipped {} file(s) or folder(s), unreadable or outside the layout; see the warnings above", skipped.len()));
    }
    let lost = splits.train.lost + splits.test.lost;
    if lost > 0 {
        obs.on_message(&format!("{lost} image(s) that the shard manifests record are missing (truncated shards); `byol shard --verify` checks every shard"));
    }
    let b = cfg.train.batch_size;
    if b > splits.train.len() {
        return Err(Error::config(
            "train.batch-size",
            format!(
                "{b} is larger than the {} training images; lower it or add data",
                splits.train.len()
            ),
        ));
    }
    Ok((Arc::new(splits.train), splits.test, skipped))
}

/// An error when the training data `data` is not the data the checkpoint `ckpt` was trained on
/// (its fingerprint `recorded`; a checkpoint of an older `byol` has none, and gets a warning).
fn check_same_data(
    cfg: &ExperimentConfig,
    data: &data::Fingerprint,
    recorded: Option<&data::Fingerprint>,
    ckpt: &Path,
) -> Result<()> {
    let Some(before) = recorded else {
        tracing::warn!(
            "{} records no data fingerprint (written by an older byol): the data cannot be checked",
            ckpt.display()
        );
        return Ok(());
    };
    let differences = data.differences(before);
    if differences.is_empty() {
        return Ok(());
    }
    let path = cfg
        .data
        .source
        .path()
        .map_or_else(|| "the training set".into(), Path::to_path_buf);
    Err(Error::data(
        path,
        format!(
            "the training data differs from the data of the checkpoint {} ({}); resuming would continue the run on other data and another schedule. \
             Resume with the run's data, or start a new run in another --run-dir",
            ckpt.display(),
            differences.join("; ")
        ),
    ))
}

/// What the run is (`run.json`).
fn run_info(
    cfg: &ExperimentConfig,
    schedules: &Schedules,
    start_step: u64,
    (train_images, test_images): (usize, usize),
) -> run_dir::RunInfo {
    let flex = cfg.backend == crate::backend::BackendKind::Flex;
    run_dir::RunInfo {
        start_step,
        started_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        seed: cfg.seed,
        backend: cfg.backend.name(),
        git_revision: env!("BYOL_GIT_REVISION"),
        version: env!("CARGO_PKG_VERSION"),
        train_images,
        test_images,
        steps_per_epoch: schedules.steps_per_epoch,
        total_steps: schedules.total_steps,
        peak_lr: schedules.peak_lr,
        gpu_build: (!flex).then(crate::backend::gpu_build),
        cpu_kernels: flex.then(|| crate::model::kernels::selected().name()),
        cpu: crate::backend::cpu(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epochs whose steps overflow a `u64` are an error naming the field and the largest valid
    /// count (they trained 4 wrapped-around steps and called the run finished), and the largest
    /// valid count is accepted.
    #[test]
    fn epochs_whose_steps_overflow_are_refused_with_the_range() {
        let mut cfg = ExperimentConfig::load("small-cpu", &[]).unwrap();
        cfg.train.batch_size = 16;
        cfg.train.epochs = 4_611_686_018_427_387_905; // 2⁶² + 1: × 4 steps wraps to 4
        let e = Schedules::new(&cfg, 64).unwrap_err().to_string();
        assert!(
            e.contains("train.epochs") && e.contains(&format!("at most {} epochs", u64::MAX / 4)),
            "{e}"
        );
        cfg.train.epochs = u64::MAX / 4;
        assert_eq!(
            Schedules::new(&cfg, 64).unwrap().total_steps,
            u64::MAX / 4 * 4
        );
    }
}
