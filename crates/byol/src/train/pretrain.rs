//! The loop of the paper's Algorithm 1 around [`super::guarded_step`]: the setup (devices, state
//! or the checkpoint it resumes, data, loader, view pipelines), then per step a batch, the
//! schedules at that step, the two views and the update. Everything between steps (logs,
//! collapse check, time budget, kNN, online probe, event files, checkpoints) is the
//! [`Monitor`]'s.

use super::checkpoint;
use super::monitor::{Context, Monitor};
use super::run_dir::{self, RunDir};
use super::{Observer, Outcome, PretrainReport, Replicas, StepRule, TrainState, guarded_step};
use crate::augment::{ViewPipeline, loader};
use crate::config::ExperimentConfig;
use crate::optim::schedule;
use crate::{Error, Result, data, ema};
use burn::tensor::Device;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// How to run [`pretrain`].
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the run directory's checkpoint. The config passed in must equal the
    /// checkpoint's in every field that changes the trajectory
    /// ([`ExperimentConfig::resume_differences`]); start from the checkpoint's recorded config
    /// (`checkpoint::read_latest_config`).
    pub resume: bool,
    /// Also evaluate the random-init encoder of the same architecture.
    pub compare_random: bool,
    /// Stop (with a checkpoint) once this many steps are done in total, before the end of the
    /// schedule; a later `resume` continues the same schedule. No final evaluation then.
    pub max_steps: Option<u64>,
    /// Stop (with a checkpoint) once training has run this many seconds (counted from the first
    /// step, after the data is loaded), then evaluate the encoder as it is: time to accuracy,
    /// the schedule planned for the full run and cut short, as the PyTorch reference's
    /// `--minutes` does.
    pub time_budget_s: Option<f64>,
    /// Set (by a signal handler, another thread) to stop after the step in progress, with a
    /// checkpoint of it; a later `resume` continues as if nothing happened.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// The learning-rate and τ schedules of a run: pure functions of the step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedules {
    pub peak_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub steps_per_epoch: u64,
}

impl Schedules {
    /// The schedules of `cfg` over a training set of `n` images; an error naming `train.epochs`
    /// and its valid range when the steps of that many epochs overflow a step count.
    pub(crate) fn new(cfg: &ExperimentConfig, n: usize) -> Result<Self> {
        let b = cfg.train.batch_size;
        let spe = loader::steps_per_epoch(n, b);
        let total_steps = spe.checked_mul(cfg.train.epochs).ok_or_else(|| {
            Error::config("train.epochs", format!("{} epochs of {spe} steps overflow the step count: at most {} epochs here", cfg.train.epochs, u64::MAX / spe))
        })?;
        Ok(Schedules {
            peak_lr: schedule::peak_lr(cfg.optim.base_lr, b),
            warmup_steps: (cfg.optim.warmup_epochs * spe as f64).round() as u64,
            total_steps,
            steps_per_epoch: spe,
        })
    }

    /// (learning rate, τ) of step `k` (0-based).
    pub(crate) fn at(&self, target: &crate::config::TargetConfig, k: u64) -> (f64, f64) {
        (schedule::lr_at(self.peak_lr, k, self.warmup_steps, self.total_steps), ema::tau_at(target, k, self.total_steps))
    }
}

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
pub fn pretrain(cfg: &ExperimentConfig, run_dir: &Path, opts: &RunOptions, obs: &mut dyn Observer) -> Result<PretrainReport> {
    pretrain_in(cfg, &RunDir::lock(run_dir)?, opts, obs)
}

/// Pre-train with `cfg` in the run directory `run` (held by the caller), evaluate with kNN at
/// the end (and every `train.knn-every-epochs`), and compare with the random-init encoder when
/// asked. A run that fails before its first step removes the directory if it made it.
pub fn pretrain_in(cfg: &ExperimentConfig, run: &RunDir, opts: &RunOptions, obs: &mut dyn Observer) -> Result<PretrainReport> {
    let started = Instant::now();
    let cfg = &ExperimentConfig { data: cfg.data.clone().with_absolute_paths(), ..cfg.clone() };
    let setup = match setup(cfg, run, opts, obs) {
        Ok(Start::Run(setup)) => setup,
        Ok(Start::Finished(report)) => {
            obs.on_message(&format!("the run in {} is finished (step {}); nothing to resume, its report is unchanged", run.path().display(), report.steps));
            return Ok(*report);
        }
        Err(e) => {
            run.remove_if_unused();
            return Err(e);
        }
    };
    let Setup { cfg, mut state, device, mut replicas, train, test, data, skipped, schedules } = *setup;
    let b = cfg.train.batch_size;
    let mut prefetch = prefetcher(&cfg, &train, state.step, schedules.total_steps);
    let views = [&cfg.augment.view1, &cfg.augment.view2].map(|v| ViewPipeline::new(v, &cfg.augment, cfg.data.image_size, &device));
    let ranks = replicas.as_ref().map_or(1, Replicas::count);
    let ctx = Context { cfg: &cfg, run, train: &train, test: &test, device: &device, schedules, opts, probe_share: b / ranks, data: &data };
    let mut monitor = Monitor::start(&ctx, &mut state, skipped, obs)?;
    let rule = StepRule::of(&cfg);
    let go_on = |step: u64, stop: u64, r: &Option<Replicas>| r.as_ref().map_or(step < stop, |r| r.agree_continue(step < stop));
    while go_on(state.step, monitor.stop(), &replicas) {
        let batch = prefetch.next().ok_or_else(|| Error::data("loader", "the batch producer stopped"))??;
        debug_assert_eq!(batch.step, state.step);
        monitor.note_failures(batch.failures);
        let (lr, tau) = schedules.at(&cfg.target, state.step);
        let v1 = cfg.train.precision.cast(views[0].finish(batch.view1, b)); // [B, 3, S, S]
        let v2 = cfg.train.precision.cast(views[1].finish(batch.view2, b)); // [B, 3, S, S]
        let outcome: Outcome = match replicas.as_mut() {
            Some(r) => r.step(state, v1, v2, lr, tau)?,
            None => guarded_step(state, v1, v2, lr, tau, &rule)?,
        };
        state = monitor.after_step(&ctx, outcome, &batch.labels, lr, tau, obs)?;
    }
    drop(prefetch);
    drop(replicas);
    monitor.finish(&ctx, &state, started, obs)
}

/// The batches of steps `start`… `end` of `cfg`'s run over `train`, made ahead on worker threads.
pub(crate) fn prefetcher(cfg: &ExperimentConfig, train: &Arc<data::ImageSet>, start: u64, end: u64) -> loader::Prefetcher {
    let spec = loader::LoaderSpec {
        set: train.clone(),
        aug: cfg.augment.clone(),
        batch: cfg.train.batch_size,
        size: cfg.data.image_size,
        seed: cfg.seed,
        start,
        end,
        workers: cfg.data.worker_threads(),
        prefetch: cfg.data.prefetch_batches,
        on_device: cfg.augment.placement.on_device(cfg.backend),
    };
    match cfg.data.source {
        data::Source::Shards { shuffle_buffer, .. } => loader::Prefetcher::from_shards(spec, shuffle_buffer, cfg.data.max_image_pixels),
        _ => loader::Prefetcher::new(spec),
    }
}

/// The devices of this process: `train.devices`, or the backend's first; in an MPI world, one:
/// the device of the process's local rank ([`crate::backend::BackendKind::process_device`]).
pub(crate) fn devices_of(cfg: &ExperimentConfig) -> Result<Vec<Device>> {
    let world = super::parallel::world_size();
    if cfg.train.world != world {
        return Err(Error::config(
            "train.world",
            format!("the config says {} process(es) and the run has {world}: resume a run with the number of processes it started with", cfg.train.world),
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
fn setup(cfg: &ExperimentConfig, run: &RunDir, opts: &RunOptions, obs: &mut dyn Observer) -> Result<Start> {
    let dir = run.path();
    // Writable: `RunDir::lock` made the folder and wrote its lock file.
    checkpoint::remove_stale_temporaries(dir);
    // One device per replica (train.devices); rank 0's, on this thread, is the one the loop
    // evaluates and checkpoints on.
    let devices = devices_of(cfg)?;
    let device = devices[0].clone();
    cfg.train.precision.check(&device)?;

    let (state, others, recorded_data) = if opts.resume {
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
        obs.on_message(&format!("resuming {} at step {}", ckpt_path.display(), loaded.step));
        let others = devices[1..].iter().map(|d| loaded.state(d)).collect::<Result<Vec<_>>>()?;
        (loaded.state(&device)?, others, Some((loaded.data.clone(), ckpt_path)))
    } else {
        if let Some((_, existing)) = checkpoint::list(dir).first() {
            return Err(Error::checkpoint(existing, "a run already exists here: pass --resume to continue it, or choose another --run-dir"));
        }
        let others = devices[1..].iter().map(|d| TrainState::init(cfg, d)).collect();
        (TrainState::init(cfg, &device), others, None)
    };
    std::fs::write(run.file(run_dir::CONFIG), cfg.to_toml()).map_err(|e| Error::io(dir, e))?;

    obs.on_message("loading data");
    let splits = data::load(&cfg.data, cfg.seed)?;
    // Files skipped when loading, and (without the cache) files that failed to decode later.
    let skipped: Vec<(String, String)> = splits.train.skipped.iter().chain(&splits.test.skipped).map(|(p, e)| (p.display().to_string(), e.clone())).collect();
    if !skipped.is_empty() {
        obs.on_message(&format!("skipped {} file(s) or folder(s), unreadable or outside the layout; see the warnings above", skipped.len()));
    }
    let lost = splits.train.lost + splits.test.lost;
    if lost > 0 {
        obs.on_message(&format!("{lost} image(s) that the shard manifests record are missing (truncated shards); `byol shard --verify` checks every shard"));
    }
    let (train, test) = (Arc::new(splits.train), splits.test);
    let b = cfg.train.batch_size;
    if b > train.len() {
        return Err(Error::config("train.batch-size", format!("{b} is larger than the {} training images; lower it or add data", train.len())));
    }
    let data = data::Fingerprint::of(&train, cfg.data.source.path());
    match recorded_data {
        Some((Some(before), ckpt)) => {
            let differences = data.differences(&before);
            if !differences.is_empty() {
                let path = cfg.data.source.path().map_or_else(|| "the training set".into(), Path::to_path_buf);
                return Err(Error::data(
                    path,
                    format!(
                        "the training data differs from the data of the checkpoint {} ({}); resuming would continue the run on other data and another schedule. \
                         Resume with the run's data, or start a new run in another --run-dir",
                        ckpt.display(),
                        differences.join("; ")
                    ),
                ));
            }
        }
        Some((None, ckpt)) => tracing::warn!("{} records no data fingerprint (written by an older byol): the data cannot be checked", ckpt.display()),
        None => {}
    }
    let schedules = Schedules::new(cfg, train.len())?;
    let (spe, total) = (schedules.steps_per_epoch, schedules.total_steps);
    if opts.resume && state.step >= total {
        // Resuming a finished run changes nothing: its evaluations and report stay as they are.
        if let Some(report) = run_dir::read_report(dir)? {
            return Ok(Start::Finished(Box::new(report)));
        }
    }
    let meta = serde_json::json!({
        "seed": cfg.seed,
        "backend": cfg.backend.name(),
        "git_revision": env!("BYOL_GIT_REVISION"),
        "version": env!("CARGO_PKG_VERSION"),
        "train_images": train.len(),
        "test_images": test.len(),
        "steps_per_epoch": spe,
        "total_steps": total,
        "peak_lr": schedules.peak_lr,
        "gpu_build": (cfg.backend != crate::backend::BackendKind::Flex).then(crate::backend::gpu_build),
        "cpu_kernels": (cfg.backend == crate::backend::BackendKind::Flex).then(|| crate::model::kernels::selected().name()),
    });
    std::fs::write(run.file(run_dir::RUN), serde_json::to_string_pretty(&meta).expect("json")).map_err(|e| Error::io(dir, e))?;
    let replicas = match devices.len() {
        1 => super::parallel::mpi_replicas(cfg, &device, &state)?,
        _ => Some(Replicas::start(cfg, devices.clone(), others)?),
    };
    Ok(Start::Run(Box::new(Setup { cfg: cfg.clone(), state, device, replicas, train, test, data, skipped, schedules })))
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
        assert!(e.contains("train.epochs") && e.contains(&format!("at most {} epochs", u64::MAX / 4)), "{e}");
        cfg.train.epochs = u64::MAX / 4;
        assert_eq!(Schedules::new(&cfg, 64).unwrap().total_steps, u64::MAX / 4 * 4);
    }
}
