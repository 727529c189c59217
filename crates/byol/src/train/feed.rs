//! What feeds the step, shared by the loop ([`super::pretrain_in`]) and the MPI followers
//! ([`super::follow`]): the schedules, the batches made ahead on worker threads, the two view
//! pipelines, and the update of a state on the next batch.

use super::{Outcome, Replicas, StepRule, TrainState, guarded_step};
use crate::augment::{ViewPipeline, loader};
use crate::config::ExperimentConfig;
use crate::optim::schedule;
use crate::{Error, Result, data, ema};
use burn::tensor::Device;
use std::sync::Arc;

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
            Error::config(
                "train.epochs",
                format!(
                    "{} epochs of {spe} steps overflow the step count: at most {} epochs here",
                    cfg.train.epochs,
                    u64::MAX / spe
                ),
            )
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
        (
            schedule::lr_at(self.peak_lr, k, self.warmup_steps, self.total_steps),
            ema::tau_at(target, k, self.total_steps),
        )
    }
}

/// The batches of steps `start`… `end` of `cfg`'s run over `train`, made ahead on worker threads.
pub(crate) fn prefetcher(
    cfg: &ExperimentConfig,
    train: &Arc<data::ImageSet>,
    start: u64,
    end: u64,
) -> loader::Prefetcher {
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
        data::Source::Shards { shuffle_buffer, .. } => {
            loader::Prefetcher::from_shards(spec, shuffle_buffer, cfg.data.max_image_pixels)
        }
        _ => loader::Prefetcher::new(spec),
    }
}

/// The steps of a run from a state's step on: the next batch, the schedules at the state's step,
/// the two views finished on the device, the update.
pub(crate) struct Feed<'a> {
    cfg: &'a ExperimentConfig,
    schedules: Schedules,
    prefetch: loader::Prefetcher,
    views: [ViewPipeline; 2],
    rule: StepRule,
}

/// An update taken, with what the loop around it reports.
pub(crate) struct Taken {
    pub outcome: Outcome,
    /// The batch's labels (for the online probe) and the images that failed to decode.
    pub labels: Vec<usize>,
    pub failures: Vec<(String, String)>,
    pub lr: f64,
    pub tau: f64,
}

impl<'a> Feed<'a> {
    /// The steps of `cfg`'s run over `train` from `start` to the end of `schedules`, on `device`.
    pub(crate) fn new(
        cfg: &'a ExperimentConfig,
        train: &Arc<data::ImageSet>,
        device: &Device,
        start: u64,
        schedules: Schedules,
    ) -> Self {
        Feed {
            cfg,
            schedules,
            prefetch: prefetcher(cfg, train, start, schedules.total_steps),
            views: [&cfg.augment.view1, &cfg.augment.view2]
                .map(|v| ViewPipeline::new(v, &cfg.augment, cfg.data.image_size, device)),
            rule: StepRule::of(cfg),
        }
    }

    /// Update `state` on the next batch: on `replicas` when there are several, else here.
    pub(crate) fn step(
        &mut self,
        state: TrainState,
        replicas: Option<&mut Replicas>,
    ) -> Result<Taken> {
        let (cfg, b) = (self.cfg, self.cfg.train.batch_size);
        let batch = self
            .prefetch
            .next()
            .ok_or_else(|| Error::Loader("the batch producer stopped".into()))??;
        debug_assert_eq!(batch.step, state.step);
        let (lr, tau) = self.schedules.at(&cfg.target, state.step);
        let v1 = cfg
            .train
            .precision
            .cast(self.views[0].finish(batch.view1, b)); // [B, 3, S, S]
        let v2 = cfg
            .train
            .precision
            .cast(self.views[1].finish(batch.view2, b)); // [B, 3, S, S]
        let outcome = match replicas {
            Some(r) => r.step(state, v1, v2, lr, tau)?,
            None => guarded_step(state, v1, v2, lr, tau, &self.rule)?,
        };
        Ok(Taken {
            outcome,
            labels: batch.labels,
            failures: batch.failures,
            lr,
            tau,
        })
    }
}
