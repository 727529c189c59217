//! The loop around [`super::guarded_step`]: data, schedules, metrics log, checkpoints, kNN monitor.

use super::checkpoint;
use super::{Outcome, Replicas, TrainState, guarded_step};
use crate::config::ExperimentConfig;
use crate::augment::loader;
use crate::data;
use crate::ema;
use super::evaluate::{knn_of_encoder, random_init_knn};
use crate::eval::KnnResult;
use crate::optim::schedule;
use crate::{Error, Result};
use crate::augment::ViewPipeline;
use crate::events::EventWriter;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct StepLog {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    pub tau: f64,
    /// Std of the L2-normalised online projections (≈ 1/√P healthy, → 0 on collapse).
    pub projection_std: f64,
    /// Images per second over the steps since the previous log line.
    pub images_per_sec: f64,
}

/// A kNN evaluation of the encoder during or after training.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub step: u64,
    pub epoch: u64,
    pub knn: KnnResult,
}

/// The online linear probe's accuracy at the end of an epoch (a line of `probe.jsonl`).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub step: u64,
    pub epoch: u64,
    /// Top-1 on the training batches of the epoch (augmented view 1, before each SGD step), over
    /// the steps this process ran.
    pub train_top1: f64,
    /// Top-1 on the test split (centre crops, the encoder in eval mode).
    pub test_top1: f64,
}

/// What the loop reports to its caller (the binary draws a progress bar from it).
pub trait Observer {
    fn on_start(&mut self, _start_step: u64, _total_steps: u64) {}
    fn on_step(&mut self, _log: &StepLog) {}
    fn on_eval(&mut self, _report: &EvalReport) {}
    fn on_probe(&mut self, _report: &ProbeReport) {}
    fn on_message(&mut self, _message: &str) {}
}

/// The outcome of a pre-training run.
#[derive(Debug, Clone, Serialize)]
pub struct PretrainReport {
    pub run_dir: PathBuf,
    pub steps: u64,
    pub train_images: usize,
    pub test_images: usize,
    pub skipped_images: usize,
    pub final_loss: f64,
    pub knn: Option<KnnResult>,
    pub random_init_knn: Option<KnnResult>,
    pub wall_seconds: f64,
    /// Seconds spent in the training loop (from the first step to the last checkpoint).
    pub train_seconds: f64,
    /// Whether `time_budget_s` ended the run before the end of its schedule.
    pub stopped_by_time_budget: bool,
    /// The online linear probe's test top-1 at the end (when `eval.online-probe` is on).
    pub online_linear_top1: Option<f64>,
}

fn check_writable(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok").map_err(|e| Error::io(dir, e))?;
    std::fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))?;
    Ok(())
}

/// Consecutive non-finite steps after which `on-non-finite = "skip"` gives up.
const MAX_CONSECUTIVE_SKIPS: u64 = 10;

fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| Error::io(path, e))
}

/// Append an evaluation to `evals.jsonl` and the event file, and report it.
fn record_eval(path: &Path, events: &mut EventWriter, report: EvalReport, obs: &mut dyn Observer) -> Result<()> {
    append_line(path, &serde_json::to_string(&report).expect("json"))?;
    events.scalars(report.step, &[("eval/knn_top1", report.knn.top1), ("eval/knn_top5", report.knn.top5)]);
    obs.on_eval(&report);
    Ok(())
}

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
}

/// The online probe's accuracy: on the epoch's training batches (`correct` of `seen`), and on the
/// test split's representations (encoder in eval mode).
#[allow(clippy::too_many_arguments)]
fn probe_report(state: &TrainState, cfg: &ExperimentConfig, test: &data::ImageSet, device: &burn::tensor::Device, step: u64, epoch: u64, correct: Option<burn::tensor::Tensor<1>>, seen: u64) -> Result<ProbeReport> {
    let probe = state.probe.as_ref().expect("called with a probe");
    let train_top1 = match correct {
        Some(c) if seen > 0 => f64::from(c.into_scalar::<f32>()) / seen as f64,
        _ => f64::NAN,
    };
    let (feats, dim, kept) = crate::eval::extract(&state.online.encoder, test, cfg.data.image_size, &cfg.augment, cfg.eval.knn.batch_size, device)?;
    let labels: Vec<usize> = kept.iter().map(|&i| test.labels[i]).collect();
    Ok(ProbeReport { step, epoch, train_top1, test_top1: probe.accuracy(&feats, dim, &labels) })
}

/// Pre-train with `cfg` in `run_dir`, evaluate with kNN at the end (and every
/// `train.knn-every-epochs`), and compare with the random-init encoder when asked.
pub fn pretrain(cfg: &ExperimentConfig, run_dir: &Path, opts: &RunOptions, obs: &mut dyn Observer) -> Result<PretrainReport> {
    let started = Instant::now();
    check_writable(run_dir)?;
    checkpoint::remove_stale_temporaries(run_dir);
    // One device per replica (train.devices); rank 0's, on this thread, is the one the loop
    // evaluates and checkpoints on.
    let devices = match cfg.train.device_list()? {
        list if list.is_empty() => vec![cfg.backend.device()?],
        list => list.iter().map(|&(_, i)| cfg.backend.device_at(i)).collect::<Result<Vec<_>>>()?,
    };
    let device = devices[0].clone();
    cfg.train.precision.check(&device)?;

    let (cfg, mut state, others) = if opts.resume {
        let (loaded, ckpt_path) = checkpoint::read_latest(run_dir)?;
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
        (cfg.clone(), loaded.state(&device)?, others)
    } else {
        if let Some((_, existing)) = checkpoint::list(run_dir).first() {
            return Err(Error::checkpoint(existing, "a run already exists here: pass --resume to continue it, or choose another --run-dir"));
        }
        let others = devices[1..].iter().map(|d| TrainState::init(cfg, d)).collect();
        (cfg.clone(), TrainState::init(cfg, &device), others)
    };
    std::fs::write(run_dir.join("config.toml"), cfg.to_toml()).map_err(|e| Error::io(run_dir, e))?;

    obs.on_message("loading data");
    let splits = data::load(&cfg.data, cfg.seed)?;
    // Files skipped when loading, and (without the cache) files that failed to decode later.
    let mut skipped_files: std::collections::BTreeMap<String, String> =
        splits.train.skipped.iter().chain(&splits.test.skipped).map(|(p, e)| (p.display().to_string(), e.clone())).collect();
    if !skipped_files.is_empty() {
        obs.on_message(&format!("skipped {} unreadable image(s); see the warnings above", skipped_files.len()));
    }
    let (train, test) = (Arc::new(splits.train), splits.test);
    let b = cfg.train.batch_size;
    if b > train.len() {
        return Err(Error::config(
            "train.batch-size",
            format!("{b} is larger than the {} training images; lower it or add data", train.len()),
        ));
    }
    let spe = loader::steps_per_epoch(train.len(), b);
    let total = spe * cfg.train.epochs;
    let warmup = (cfg.optim.warmup_epochs * spe as f64).round() as u64;
    let peak = schedule::peak_lr(cfg.optim.base_lr, b);
    let meta = serde_json::json!({
        "seed": cfg.seed,
        "backend": cfg.backend.name(),
        "git_revision": env!("BYOL_GIT_REVISION"),
        "version": env!("CARGO_PKG_VERSION"),
        "train_images": train.len(),
        "test_images": test.len(),
        "steps_per_epoch": spe,
        "total_steps": total,
        "peak_lr": peak,
    });
    std::fs::write(run_dir.join("run.json"), serde_json::to_string_pretty(&meta).expect("json")).map_err(|e| Error::io(run_dir, e))?;

    let mut events = EventWriter::create(run_dir, state.step)?;
    let metrics_path = run_dir.join("metrics.jsonl");
    let mut metrics = std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;
    let size = cfg.data.image_size;
    let on_device = cfg.augment.placement.on_device(cfg.backend);
    let spec = loader::LoaderSpec {
        set: train.clone(),
        aug: cfg.augment.clone(),
        batch: b,
        size,
        seed: cfg.seed,
        start: state.step,
        end: total,
        workers: cfg.data.worker_threads(),
        prefetch: cfg.data.prefetch_batches,
        on_device,
    };
    let prefetch = if cfg.data.source == data::DataSource::Shards {
        loader::Prefetcher::from_shards(spec, cfg.data.shuffle_buffer, cfg.data.max_image_pixels)
    } else {
        loader::Prefetcher::new(spec)
    };
    let pipe1 = ViewPipeline::new(&cfg.augment.view1, &cfg.augment, size, &device);
    let pipe2 = ViewPipeline::new(&cfg.augment.view2, &cfg.augment, size, &device);
    obs.on_start(state.step, total);
    let mut last_log = (Instant::now(), state.step);
    let mut final_loss = f64::NAN;
    let collapse_threshold = cfg.train.collapse_fraction / (cfg.model.projector.output as f64).sqrt();
    let mut low_std_run = 0u64;
    let evals_path = run_dir.join("evals.jsonl");
    let mut stop = opts.max_steps.map_or(total, |m| m.min(total));
    let mut consecutive_skips = 0u64;
    let mut stopped_by_time_budget = false;
    // The online probe: made here, when the classes are known, unless the checkpoint had one.
    let probe_on = cfg.eval.online_probe.enabled && train.classes.len() > 1;
    let dim = cfg.model.encoder.output_dim();
    let fits = |p: &crate::eval::OnlineProbe| p.classes() == train.classes.len() && p.w.dims()[0] == dim;
    state.probe = match state.probe.take() {
        Some(p) if probe_on && fits(&p) => Some(p),
        _ if probe_on => Some(crate::eval::OnlineProbe::new(dim, train.classes.len(), &device)),
        _ => None,
    };
    let (mut probe_correct, mut probe_seen): (Option<burn::tensor::Tensor<1>>, u64) = (None, 0);
    let mut online_linear_top1 = None;
    // The other replicas, when there are several devices; rank 0 (this thread) takes the first
    // share of each batch, and the probe learns from that share.
    let mut replicas = match devices.len() {
        1 => None,
        _ => Some(Replicas::start(&cfg, devices.clone(), others)?),
    };
    let share = b / devices.len();
    let train_started = Instant::now();
    while state.step < stop {
        let batch = prefetch.next().ok_or_else(|| Error::data("loader", "the batch producer stopped"))??;
        debug_assert_eq!(batch.step, state.step);
        let labels = batch.labels;
        for (file, reason) in batch.failures {
            tracing::warn!("skipping unreadable image {file}: {reason}");
            skipped_files.entry(file).or_insert(reason);
        }
        let k = state.step;
        let lr = schedule::lr_at(peak, k, warmup, total);
        let tau = ema::tau_at(&cfg.target, k, total);
        let v1 = cfg.train.precision.cast(pipe1.finish(batch.view1, b)); // [B, 3, S, S]
        let v2 = cfg.train.precision.cast(pipe2.finish(batch.view2, b)); // [B, 3, S, S]
        let outcome = match replicas.as_mut() {
            Some(r) => r.step(state, v1, v2, lr, tau)?,
            None => guarded_step(state, v1, v2, lr, tau, &cfg.objective, cfg.train.on_non_finite)?,
        };
        let (next, m) = match outcome {
            Outcome::Applied(next, m) => {
                consecutive_skips = 0;
                (next, Some(m))
            }
            Outcome::Skipped { state: next, loss } => {
                consecutive_skips += 1;
                let record = serde_json::json!({"step": k + 1, "loss": loss, "lr": lr, "tau": tau});
                append_line(&run_dir.join("skipped-steps.jsonl"), &record.to_string())?;
                let msg = format!("step {}: non-finite loss ({loss}), step skipped", k + 1);
                tracing::warn!("{msg}");
                obs.on_message(&msg);
                if consecutive_skips >= MAX_CONSECUTIVE_SKIPS {
                    return Err(Error::NonFinite { what: format!("loss in {consecutive_skips} consecutive steps"), step: k + 1 });
                }
                (next, None)
            }
        };
        state = next;
        let step = state.step;
        if let (Some(p), Some(m)) = (state.probe.as_mut(), m.as_ref()) {
            let correct = p.step(m.representation.clone(), &labels[..share], &cfg.eval.online_probe); // [1]
            probe_correct = Some(match probe_correct.take() {
                Some(c) => c + correct,
                None => correct,
            });
            probe_seen += share as u64;
        }
        if let Some(m) = m.filter(|_| step % cfg.train.log_every == 0 || step == total) {
            let loss = f64::from(m.loss.into_scalar::<f32>());
            if !loss.is_finite() {
                // Stop before a checkpoint can store the broken weights; the diagnostic names the
                // step (NaN persists, so the first bad step is at most log-every steps earlier).
                let diag = serde_json::json!({"step": step, "loss": loss, "lr": lr, "tau": tau, "log_every": cfg.train.log_every});
                let _ = std::fs::write(run_dir.join("non-finite.json"), diag.to_string());
                return Err(Error::NonFinite { what: "loss".into(), step });
            }
            final_loss = loss;
            let (t0, s0) = last_log;
            let ips = ((step - s0) as f64 * b as f64) / t0.elapsed().as_secs_f64().max(1e-9);
            last_log = (Instant::now(), step);
            let log = StepLog {
                step,
                epoch: (step - 1) / spe,
                loss,
                lr,
                tau,
                projection_std: f64::from(m.projection_std.into_scalar::<f32>()),
                images_per_sec: ips,
            };
            writeln!(metrics, "{}", serde_json::to_string(&log).expect("json")).map_err(|e| Error::io(&metrics_path, e))?;
            events.scalars(
                step,
                &[
                    ("train/loss", log.loss),
                    ("train/lr", log.lr),
                    ("train/tau", log.tau),
                    ("train/projection_std", log.projection_std),
                    ("train/images_per_sec", log.images_per_sec),
                ],
            );
            low_std_run = if log.projection_std < collapse_threshold { low_std_run + 1 } else { 0 };
            if low_std_run == cfg.train.collapse_patience {
                let msg = format!(
                    "possible collapse at step {step}: the std of the normalised projections has been below {collapse_threshold:.4} \
                     (healthy ≈ {:.4}) for {low_std_run} logged steps",
                    1.0 / (cfg.model.projector.output as f64).sqrt()
                );
                tracing::warn!("{msg}");
                obs.on_message(&msg);
            }
            obs.on_step(&log);
        }
        if opts.time_budget_s.is_some_and(|t| step < stop && train_started.elapsed().as_secs_f64() >= t) {
            stop = step;
            stopped_by_time_budget = true;
            obs.on_message(&format!("time budget reached at step {step} of {total}"));
        }
        let ke = cfg.train.knn_every_epochs;
        if ke > 0 && step % spe == 0 && (step / spe) % ke == 0 && step != total {
            let knn = knn_of_encoder(&state.online.encoder, &cfg, &train, &test, &device)?;
            record_eval(&evals_path, &mut events, EvalReport { step, epoch: step / spe, knn }, obs)?;
        }
        // At each epoch's end, and at the end of a run the time budget cut short (not at a
        // --max-steps stop: a resumed run then writes the same reports as an uninterrupted one).
        if state.probe.is_some() && (step % spe == 0 || (step == stop && stopped_by_time_budget)) {
            let epoch = step.div_ceil(spe);
            let r = probe_report(&state, &cfg, &test, &device, step, epoch, probe_correct.take(), std::mem::take(&mut probe_seen))?;
            append_line(&run_dir.join("probe.jsonl"), &serde_json::to_string(&r).expect("json"))?;
            events.scalars(step, &[("train/online_linear_top1", r.train_top1), ("eval/online_linear_top1", r.test_top1)]);
            obs.on_probe(&r);
            online_linear_top1 = Some(r.test_top1);
        }
        let every = cfg.train.checkpoint_every;
        if step == stop || (every > 0 && step % every == 0) {
            // The events up to this step first: a checkpoint never exists without them (a resume
            // from an earlier one cuts them off again).
            events.flush()?;
            checkpoint::save_in(run_dir, &state, &cfg, cfg.train.keep_checkpoints)?;
        }
    }
    let train_seconds = train_started.elapsed().as_secs_f64();
    drop(prefetch);
    drop(replicas);
    if !skipped_files.is_empty() {
        let list: Vec<_> = skipped_files.iter().map(|(file, reason)| serde_json::json!({"file": file, "reason": reason})).collect();
        std::fs::write(run_dir.join("skipped.json"), serde_json::to_string_pretty(&list).expect("json")).map_err(|e| Error::io(run_dir, e))?;
    }
    let finished = state.step == total || stopped_by_time_budget;
    let (knn, random) = if finished {
        obs.on_message("kNN evaluation of the trained encoder");
        let knn = knn_of_encoder(&state.online.encoder, &cfg, &train, &test, &device)?;
        record_eval(&evals_path, &mut events, EvalReport { step: state.step, epoch: state.step / spe, knn }, obs)?;
        let random = if opts.compare_random {
            obs.on_message("kNN evaluation of the random-init encoder");
            Some(random_init_knn(&cfg, &train, &test, &device)?)
        } else {
            None
        };
        (Some(knn), random)
    } else {
        obs.on_message(&format!("stopped at step {} of {total}; continue with --resume", state.step));
        (None, None)
    };
    let report = PretrainReport {
        run_dir: run_dir.to_path_buf(),
        steps: state.step,
        train_images: train.len(),
        test_images: test.len(),
        skipped_images: skipped_files.len(),
        final_loss,
        knn,
        random_init_knn: random,
        wall_seconds: started.elapsed().as_secs_f64(),
        train_seconds,
        stopped_by_time_budget,
        online_linear_top1,
    };
    events.flush()?;
    if finished {
        let json = serde_json::to_string_pretty(&report).expect("json");
        std::fs::write(run_dir.join("eval.json"), json).map_err(|e| Error::io(run_dir, e))?;
    }
    Ok(report)
}
