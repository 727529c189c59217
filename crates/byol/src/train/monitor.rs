//! What happens between two steps of pre-training, and at the end: the metrics log and event
//! files, the collapse check, the time budget, the kNN monitor, the online linear probe, the
//! checkpoints, and the final evaluation and report. The loop (`pretrain.rs`) only feeds it.

mod finish;

use super::RunOptions;
use super::evaluate::{has_labels, knn_of_encoder, random_init_knn};
use super::feed::Schedules;
use super::run_dir::{self, NonFiniteStop, RunDir, SkippedImage, SkippedStep};
use super::{
    EvalReport, Observer, Outcome, PretrainReport, ProbeReport, StepLog, StepMetrics, TrainState,
    checkpoint,
};
use crate::config::ExperimentConfig;
use crate::data::{Fingerprint, ImageSet};
use crate::eval::OnlineProbe;
use crate::events::EventWriter;
use crate::{Error, Result};
use burn::tensor::{Device, Tensor};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What to change after a non-finite loss; the checkpoints before it are intact.
const SKIP_HINT: &str =
    "the checkpoints before it are intact; start again with a lower optim.base-lr";

/// Consecutive non-finite steps after which `on-non-finite = "skip"` gives up.
const MAX_CONSECUTIVE_SKIPS: u64 = 10;

/// What the monitor reads of the run and never changes.
pub(crate) struct Context<'a> {
    pub cfg: &'a ExperimentConfig,
    pub run: &'a RunDir,
    pub train: &'a ImageSet,
    pub test: &'a ImageSet,
    /// Rank 0's device, on which evaluations run.
    pub device: &'a Device,
    pub schedules: Schedules,
    pub opts: &'a RunOptions,
    /// The fingerprint of the training set, recorded in every checkpoint.
    pub data: &'a Fingerprint,
    /// The images of each batch the online probe learns from: rank 0's share (all of the batch
    /// on one device).
    pub probe_share: usize,
}

/// The state of everything between steps.
pub(crate) struct Monitor {
    events: EventWriter,
    metrics: File,
    /// The last logged step and when it was logged (images/s over the steps since).
    last_log: (Instant, u64),
    final_loss: f64,
    /// The loss of the last step applied, read at the end when no step was logged (a run shorter
    /// than `train.log-every`).
    last_loss: Option<Tensor<1>>,
    /// Logged steps in a row with the projections' std under the collapse threshold.
    low_std_run: u64,
    /// The step the loop ends at: the schedule's end, `--max-steps`, or where the time budget
    /// ran out.
    stop: u64,
    consecutive_skips: u64,
    stopped_by_time_budget: bool,
    online_linear_top1: Option<f64>,
    /// Images that could not be read, by file: when loading, and (without the cache) later.
    skipped: BTreeMap<String, String>,
    train_started: Instant,
}

impl Monitor {
    /// Open the logs (cut at the state's step when resuming: the event files) and give the state
    /// its online probe: the checkpoint's if it fits the data, else a new one.
    pub fn start(
        ctx: &Context,
        state: &mut TrainState,
        skipped: Vec<(String, String)>,
        obs: &mut dyn Observer,
    ) -> Result<Monitor> {
        let (cfg, s) = (ctx.cfg, &ctx.schedules);
        run_dir::trim_logs_after(ctx.run.path(), state.step)?;
        let events = EventWriter::create(ctx.run.path(), state.step)?;
        let metrics_path = ctx.run.file(run_dir::METRICS);
        let metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(|e| Error::io(&metrics_path, e))?;
        obs.on_start(state.step, s.total_steps);
        // The online probe: made here, when the classes are known, unless the checkpoint had one.
        let classes = ctx.train.classes.len();
        let probe_on = cfg.eval.online_probe.enabled && classes > 1;
        let dim = cfg.model.encoder.output_dim();
        let fits = |p: &OnlineProbe| p.classes() == classes && p.w.dims()[0] == dim;
        state.probe = match state.probe.take() {
            Some(p) if probe_on && fits(&p) => Some(p),
            _ if probe_on => Some(OnlineProbe::new(dim, classes, ctx.device)),
            _ => None,
        };
        Ok(Monitor {
            events,
            metrics,
            last_log: (Instant::now(), state.step),
            final_loss: f64::NAN,
            last_loss: None,
            low_std_run: 0,
            stop: ctx
                .opts
                .max_steps
                .map_or(s.total_steps, |m| m.min(s.total_steps)),
            consecutive_skips: 0,
            stopped_by_time_budget: false,
            online_linear_top1: None,
            skipped: skipped.into_iter().collect(),
            train_started: Instant::now(),
        })
    }

    /// The step the loop ends at.
    pub fn stop(&self) -> u64 {
        self.stop
    }

    /// Images of a batch that could not be decoded (skipped by the loader).
    pub fn note_failures(&mut self, failures: Vec<(String, String)>) {
        for (file, reason) in failures {
            tracing::warn!("skipping unreadable image {file}: {reason}");
            self.skipped.entry(file).or_insert(reason);
        }
    }

    /// Everything after the step that made `outcome` (with learning rate `lr` and τ `tau`, on a
    /// batch with `labels`): returns the state to continue from.
    pub fn after_step(
        &mut self,
        ctx: &Context,
        outcome: Outcome,
        labels: &[usize],
        lr: f64,
        tau: f64,
        obs: &mut dyn Observer,
    ) -> Result<TrainState> {
        let (mut state, m) = match outcome {
            Outcome::Applied(next, m) => {
                self.consecutive_skips = 0;
                (next, Some(m))
            }
            Outcome::Skipped { state, loss } => {
                self.skipped_step(ctx.run, state.step, loss, lr, tau, obs)?;
                (state, None)
            }
        };
        let (cfg, step) = (ctx.cfg, state.step);
        if let (Some(p), Some(m)) = (state.probe.as_mut(), m.as_ref()) {
            let share = ctx.probe_share;
            p.step(
                m.representation.clone(),
                &labels[..share],
                &cfg.eval.online_probe,
            );
        }
        if let Some(m) = m {
            self.last_loss = Some(m.loss.clone());
            if step % cfg.train.log_every == 0 || step == ctx.schedules.total_steps {
                self.log(ctx, &m, step, lr, tau, obs)?;
            }
        }
        self.check_stops(ctx, step, obs);
        self.evaluate(ctx, &mut state, obs)?;
        let every = cfg.train.checkpoint_every;
        if step == self.stop || (every > 0 && step % every == 0) {
            // The events up to this step first: a checkpoint never exists without them (a resume
            // from an earlier one cuts them off again).
            self.events.flush()?;
            checkpoint::save_in(
                ctx.run.path(),
                &state,
                cfg,
                ctx.data,
                cfg.train.keep_checkpoints,
            )?;
        }
        Ok(state)
    }

    /// An interrupt or the time budget: the run stops at `step`, after its checkpoint.
    fn check_stops(&mut self, ctx: &Context, step: u64, obs: &mut dyn Observer) {
        if step < self.stop
            && ctx
                .opts
                .interrupt
                .as_ref()
                .is_some_and(|i| i.load(Ordering::SeqCst))
        {
            // The step is done: a checkpoint of it below, then the loop ends.
            self.stop = step;
            obs.on_message(&format!(
                "interrupted: stopping at step {step} of {} with a checkpoint",
                ctx.schedules.total_steps
            ));
        }
        if ctx
            .opts
            .time_budget_s
            .is_some_and(|t| step < self.stop && self.train_started.elapsed().as_secs_f64() >= t)
        {
            self.stop = step;
            self.stopped_by_time_budget = true;
            obs.on_message(&format!(
                "time budget reached at step {step} of {}",
                ctx.schedules.total_steps
            ));
        }
    }

    /// The kNN monitor every `train.knn-every-epochs`, and the online probe's report at each
    /// epoch's end (and at the end of a run the time budget cut short).
    fn evaluate(
        &mut self,
        ctx: &Context,
        state: &mut TrainState,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        let (cfg, spe, step) = (ctx.cfg, ctx.schedules.steps_per_epoch, state.step);
        let ke = cfg.train.knn_every_epochs;
        if ke > 0
            && has_labels(ctx.train)
            && step % spe == 0
            && (step / spe) % ke == 0
            && step != ctx.schedules.total_steps
        {
            let knn = knn_of_encoder(&state.online.encoder, cfg, ctx.train, ctx.test, ctx.device)?;
            self.record_eval(
                ctx.run,
                EvalReport {
                    step,
                    epoch: step / spe,
                    knn,
                },
                obs,
            )?;
        }
        // At each epoch's end, and at the end of a run the time budget cut short (not at a
        // --max-steps stop: a resumed run then writes the same reports as an uninterrupted one).
        if state.probe.is_some()
            && (step % spe == 0 || (step == self.stop && self.stopped_by_time_budget))
        {
            let r = self.probe_report(ctx, state, step)?;
            ctx.run.append(run_dir::PROBE, &r)?;
            self.events.scalars(
                step,
                &[
                    ("train/online_linear_top1", r.train_top1),
                    ("eval/online_linear_top1", r.test_top1),
                ],
            );
            obs.on_probe(&r);
            self.online_linear_top1 = Some(r.test_top1);
        }
        Ok(())
    }

    /// A step skipped for its non-finite loss (`on-non-finite = "skip"`): recorded, and an error
    /// after too many in a row. `step` is the state's step, which the skip did not advance.
    fn skipped_step(
        &mut self,
        run: &RunDir,
        step: u64,
        loss: f64,
        lr: f64,
        tau: f64,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        self.consecutive_skips += 1;
        run.append(
            run_dir::SKIPPED_STEPS,
            &SkippedStep {
                step,
                loss,
                lr,
                tau,
            },
        )?;
        let msg = format!("step {step}: non-finite loss ({loss}), step skipped");
        tracing::warn!("{msg}");
        obs.on_message(&msg);
        if self.consecutive_skips >= MAX_CONSECUTIVE_SKIPS {
            return Err(Error::NonFinite {
                what: format!("loss in {} consecutive steps", self.consecutive_skips),
                step,
                hint: format!(
                    "{SKIP_HINT} ({} lists the skipped steps)",
                    run_dir::SKIPPED_STEPS
                ),
            });
        }
        Ok(())
    }

    /// A logged step: `metrics.jsonl`, the event file, the collapse check, the observer.
    fn log(
        &mut self,
        ctx: &Context,
        m: &StepMetrics,
        step: u64,
        lr: f64,
        tau: f64,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        let cfg = ctx.cfg;
        let loss = f64::from(m.loss.clone().into_scalar::<f32>());
        if !loss.is_finite() {
            // Stop before a checkpoint can store the broken weights; the diagnostic names the
            // step (NaN persists, so the first bad step is at most log-every steps earlier).
            let _ = ctx.run.write(
                run_dir::NON_FINITE,
                &NonFiniteStop {
                    step,
                    loss,
                    lr,
                    tau,
                    log_every: cfg.train.log_every,
                },
            );
            return Err(Error::NonFinite {
                what: "loss".into(),
                step,
                hint: format!("{SKIP_HINT}, or resume with train.on-non-finite = \"skip\""),
            });
        }
        self.final_loss = loss;
        let (t0, s0) = self.last_log;
        let ips = ((step - s0) as f64 * cfg.train.batch_size as f64)
            / t0.elapsed().as_secs_f64().max(1e-9);
        self.last_log = (Instant::now(), step);
        let log = StepLog {
            step,
            epoch: (step - 1) / ctx.schedules.steps_per_epoch,
            loss,
            lr,
            tau,
            projection_std: f64::from(m.projection_std.clone().into_scalar::<f32>()),
            images_per_sec: ips,
        };
        let metrics_path = ctx.run.file(run_dir::METRICS);
        writeln!(
            self.metrics,
            "{}",
            serde_json::to_string(&log).expect("json")
        )
        .map_err(|e| Error::io(&metrics_path, e))?;
        self.events.scalars(
            step,
            &[
                ("train/loss", log.loss),
                ("train/lr", log.lr),
                ("train/tau", log.tau),
                ("train/projection_std", log.projection_std),
                ("train/images_per_sec", log.images_per_sec),
            ],
        );
        let healthy = 1.0 / (cfg.model.projector.output as f64).sqrt();
        let threshold = cfg.train.collapse_fraction / (cfg.model.projector.output as f64).sqrt();
        self.low_std_run = if log.projection_std < threshold {
            self.low_std_run + 1
        } else {
            0
        };
        if self.low_std_run == cfg.train.collapse_patience {
            let msg = format!(
                "possible collapse at step {step}: the std of the normalised projections has been below {threshold:.4} \
                 (healthy ≈ {healthy:.4}) for {} logged steps",
                self.low_std_run
            );
            tracing::warn!("{msg}");
            obs.on_message(&msg);
        }
        obs.on_step(&log);
        Ok(())
    }

    /// The online probe's accuracy: on the epoch's training batches, and on the test split's
    /// representations (encoder in eval mode).
    fn probe_report(
        &mut self,
        ctx: &Context,
        state: &mut TrainState,
        step: u64,
    ) -> Result<ProbeReport> {
        let (cfg, test) = (ctx.cfg, ctx.test);
        let train_top1 = state
            .probe
            .as_mut()
            .expect("called with a probe")
            .take_epoch_accuracy();
        let probe = state.probe.as_ref().expect("called with a probe");
        let (feats, dim, kept) = crate::eval::extract(
            &state.online.encoder,
            test,
            cfg.data.image_size,
            &cfg.augment,
            cfg.eval.knn.batch_size,
            ctx.device,
        )?;
        let labels: Vec<usize> = kept.iter().map(|&i| test.labels[i]).collect();
        let epoch = step.div_ceil(ctx.schedules.steps_per_epoch);
        Ok(ProbeReport {
            step,
            epoch,
            train_top1,
            test_top1: probe.accuracy(&feats, dim, &labels),
        })
    }

    /// Append an evaluation to `evals.jsonl` and the event file, and report it.
    fn record_eval(
        &mut self,
        run: &RunDir,
        report: EvalReport,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        run.append(run_dir::EVALS, &report)?;
        self.events.scalars(
            report.step,
            &[
                ("eval/knn_top1", report.knn.top1),
                ("eval/knn_top5", report.knn.top5),
            ],
        );
        obs.on_eval(&report);
        Ok(())
    }
}
