//! The one training loop of the supervised protocols: semi-supervised fine-tuning
//! (`eval::finetune`), distillation (`distill`) and the dense transfer tasks (`transfer`). Each
//! epoch is a shuffle of the training samples drawn from (seed, stream, epoch), cut into batches
//! (a last short one left out); a step is the protocol's loss on a batch, a backward pass and an
//! optimizer step at the schedule's rate for that step. Around the step: progress, a stop at a
//! step boundary (a step limit, an interrupt; the caller checkpoints) and a hook after each step
//! (metrics lines, checkpoints at an interval). A protocol keeps what is its own: its network,
//! its loss, its metric and its files.
//!
//! Linear evaluation (`eval::linear`) trains without this loop: its gradient is written out on
//! precomputed features (no network, no autodiff) and it keeps a last short batch.

use crate::optim::{Optimizer, schedule};
use crate::rng::{Stream, rng};
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::Tensor;
use rand::seq::SliceRandom;

/// What a supervised run reports as it goes (the binary draws a progress bar).
pub trait Progress {
    fn on_start(&mut self, _total_steps: u64) {}
    fn on_step(&mut self, _step: u64, _loss: f32) {}
}

impl Progress for () {}

/// The order of the samples: epoch `e` is a shuffle of `samples` drawn from (`seed`, `stream`,
/// `e`), in batches of `batch_size`, the remainder left out.
#[derive(Debug, Clone)]
pub struct Epochs {
    samples: Vec<usize>,
    batch_size: usize,
    steps_per_epoch: u64,
    total: u64,
    seed: u64,
    stream: Stream,
}

impl Epochs {
    /// `epochs` over `samples`; `section` names the config section of the protocol in errors:
    /// fewer samples than one batch, or a step count that overflows.
    pub fn new(
        samples: Vec<usize>,
        batch_size: usize,
        epochs: usize,
        (seed, stream): (u64, Stream),
        section: &str,
    ) -> Result<Self> {
        let n = samples.len();
        if batch_size == 0 || n < batch_size {
            return Err(Error::config(
                format!("{section}.batch-size"),
                format!("{batch_size} is more than the {n} training samples"),
            ));
        }
        let per_epoch = (n / batch_size) as u64;
        let total = per_epoch.checked_mul(epochs as u64).ok_or_else(|| {
            Error::config(
                format!("{section}.epochs"),
                format!(
                    "{epochs} epochs of {per_epoch} steps overflow the step count; at most {}",
                    u64::MAX / per_epoch
                ),
            )
        })?;
        Ok(Epochs {
            samples,
            batch_size,
            steps_per_epoch: per_epoch,
            total,
            seed,
            stream,
        })
    }

    pub fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    /// Steps in all the epochs.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The samples of epoch `epoch` in their order.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order = self.samples.clone();
        order.shuffle(&mut rng(self.seed, self.stream, &[epoch]));
        order
    }

    /// The mean of each epoch's losses, `losses` being those of consecutive steps from step 0.
    pub fn epoch_means(&self, losses: &[f32]) -> Vec<f64> {
        let per_epoch = self.steps_per_epoch as usize;
        losses
            .chunks(per_epoch)
            .map(|c| c.iter().map(|&l| f64::from(l)).sum::<f64>() / per_epoch as f64)
            .collect()
    }
}

/// How the learning rate falls over the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decay {
    /// Cosine to 0 (fine-tuning and distillation, paper Appendix C.2).
    Cosine,
    /// ×0.1 from 70 % of the steps and again from 90 % (MoCo's segmentation schedule, which the
    /// paper's transfer follows).
    StepDown,
}

impl Decay {
    /// The rate at `step` of `total` from `base`.
    pub fn rate(self, base: f64, step: u64, total: u64) -> f64 {
        match self {
            Decay::Cosine => schedule::lr_at(base, step, 0, total),
            Decay::StepDown => {
                let at = |fraction: f64| (total as f64 * fraction).round() as u64;
                if step >= at(0.9) {
                    base * 0.01
                } else if step >= at(0.7) {
                    base * 0.1
                } else {
                    base
                }
            }
        }
    }
}

/// A finished step, as the hook after it sees it.
#[derive(Debug, Clone, Copy)]
pub struct StepDone {
    /// Steps done, this one included (counted from 1, as pre-training's).
    pub step: u64,
    pub loss: f32,
    pub lr: f64,
}

/// What a protocol does around its steps, besides progress.
pub trait Hooks<M> {
    /// Asked before step `step` (steps done so far): stop there.
    fn stop_before(&mut self, _step: u64) -> bool {
        false
    }
    /// After each step: a metrics line, a checkpoint at an interval.
    fn after_step(&mut self, _model: &M, _optimizer: &Optimizer, _done: &StepDone) -> Result<()> {
        Ok(())
    }
    /// Stopped before step `step` ([`Hooks::stop_before`]): a checkpoint of the model and the
    /// optimizer as they are.
    fn stopped(&mut self, _model: &M, _optimizer: &Optimizer, _step: u64) -> Result<()> {
        Ok(())
    }
}

impl<M> Hooks<M> for () {}

/// Whether a run asked to stop at `max_steps`, or by `interrupt` (a flag a signal handler sets),
/// stops before step `step` (steps done so far).
pub fn stop_requested(
    max_steps: Option<u64>,
    interrupt: Option<&std::sync::atomic::AtomicBool>,
    step: u64,
) -> bool {
    max_steps.is_some_and(|m| step >= m)
        || interrupt.is_some_and(|i| i.load(std::sync::atomic::Ordering::SeqCst))
}

/// How to run a protocol that keeps checkpoints (distillation, the dense transfer tasks).
#[derive(Default)]
pub struct Control {
    /// Continue from the run directory's newest checkpoint.
    pub resume: bool,
    /// Stop (with a checkpoint) once this many steps are done in total.
    pub max_steps: Option<u64>,
    /// Set (by a signal handler) to stop after the step in progress, with a checkpoint.
    pub interrupt: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Control {
    /// Whether the run stops before step `step` (steps done so far).
    pub fn stop_before(&self, step: u64) -> bool {
        stop_requested(self.max_steps, self.interrupt.as_deref(), step)
    }
}

/// How a run under a [`Control`] ended.
pub enum Ended<R> {
    /// Stopped early (`max_steps`, an interrupt) with a checkpoint at this step.
    Stopped {
        step: u64,
    },
    Finished(R),
}

/// Where a protocol's run starts: the network and optimizer to train and the steps already done
/// (none for a new run; a checkpoint's for a resumed one), with those steps' losses.
pub struct Resumed<M> {
    pub model: M,
    pub optimizer: Optimizer,
    pub step: u64,
    pub losses: Vec<f32>,
}

/// What a caller gives a protocol's run besides its progress: the hooks around its steps
/// (a stop, checkpoints), and the state it starts from.
pub trait Session<M>: Hooks<M> {
    /// The state to train from: `fresh` and `optimizer` at step 0, or in their place a
    /// checkpoint's.
    fn start(&mut self, fresh: M, optimizer: Optimizer) -> Result<Resumed<M>> {
        Ok(Resumed {
            model: fresh,
            optimizer,
            step: 0,
            losses: Vec::new(),
        })
    }
}

impl<M> Session<M> for () {}

/// Where a call of [`Tuning::run`] ended.
pub struct Trained<M> {
    pub model: M,
    pub optimizer: Optimizer,
    /// Steps done in all.
    pub step: u64,
    /// Stopped by [`Hooks::stop_before`] before the last step.
    pub stopped: bool,
    /// The loss of each step this call took.
    pub losses: Vec<f32>,
}

/// A protocol's optimisation: its samples' order, its base rate and decay.
pub struct Tuning<'a> {
    /// The protocol's config section, for errors (`transfer.segment`, `distill`).
    pub section: &'a str,
    pub epochs: &'a Epochs,
    pub learning_rate: f64,
    pub decay: Decay,
}

impl Tuning<'_> {
    /// Train `model` (its parameters on an autodiff device, requiring gradients) with `optimizer`
    /// from step `start` to the end or a stop: `loss_of(model, batch, epoch, step)` is the loss
    /// of a batch of samples. A non-finite loss is an error naming the step, before any update
    /// it would make.
    pub fn run<M: Module>(
        &self,
        (mut model, mut optimizer): (M, Optimizer),
        start: u64,
        progress: &mut dyn Progress,
        hooks: &mut dyn Hooks<M>,
        mut loss_of: impl FnMut(&M, &[usize], u64, u64) -> Result<Tensor<1>>,
    ) -> Result<Trained<M>> {
        let (per_epoch, total, b) = (
            self.epochs.steps_per_epoch,
            self.epochs.total,
            self.epochs.batch_size,
        );
        progress.on_start(total);
        let mut order: Option<(u64, Vec<usize>)> = None;
        let mut losses = Vec::new();
        for step in start..total {
            if hooks.stop_before(step) {
                hooks.stopped(&model, &optimizer, step)?;
                return Ok(Trained {
                    model,
                    optimizer,
                    step,
                    stopped: true,
                    losses,
                });
            }
            let epoch = step / per_epoch;
            if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                order = Some((epoch, self.epochs.order(epoch)));
            }
            let k = (step % per_epoch) as usize;
            let batch = &order.as_ref().expect("drawn above").1[k * b..(k + 1) * b];
            let loss = loss_of(&model, batch, epoch, step)?; // [1]
            let value = loss.clone().into_scalar::<f32>();
            if !value.is_finite() {
                let hint = format!(
                    "lower {}.learning-rate (a checkpoint, if one was written, is intact)",
                    self.section
                );
                return Err(Error::NonFinite {
                    what: format!("loss of {}", self.section),
                    step,
                    hint,
                });
            }
            let lr = self.decay.rate(self.learning_rate, step, total);
            let mut grads = loss.backward();
            model = optimizer.step(model, &mut grads, lr, step + 1)?;
            losses.push(value);
            let done = StepDone {
                step: step + 1,
                loss: value,
                lr,
            };
            progress.on_step(done.step, value);
            hooks.after_step(&model, &optimizer, &done)?;
        }
        Ok(Trained {
            model,
            optimizer,
            step: total.max(start),
            stopped: false,
            losses,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_down_schedule_falls_at_70_and_90_percent() {
        let lr: Vec<f64> = [0, 69, 70, 89, 90, 99]
            .iter()
            .map(|&s| Decay::StepDown.rate(1.0, s, 100))
            .collect();
        assert_eq!(lr, [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]);
    }

    /// Each epoch's order is a permutation of the samples drawn from its own epoch; the batches
    /// cover it but for the remainder; too few samples or an overflowing count are refused.
    #[test]
    fn epochs_shuffle_each_epoch_and_refuse_what_cannot_run() {
        let plan = Epochs::new(
            vec![3, 5, 7, 9, 11],
            2,
            3,
            (4, Stream::SegmentOrder),
            "transfer.segment",
        )
        .unwrap();
        assert_eq!((plan.steps_per_epoch(), plan.total()), (2, 6));
        let (a, b) = (plan.order(0), plan.order(1));
        assert_ne!(a, b);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [3, 5, 7, 9, 11]);
        assert_eq!(
            plan.epoch_means(&[1.0, 3.0, 2.0, 2.0, 5.0]),
            [2.0, 2.0, 2.5]
        );
        let e = Epochs::new(vec![0; 3], 4, 1, (0, Stream::SegmentOrder), "distill")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("distill.batch-size") && e.contains("3 training samples"),
            "{e}"
        );
        let e = Epochs::new(
            vec![0; 4],
            2,
            usize::MAX,
            (0, Stream::SegmentOrder),
            "transfer.depth",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("transfer.depth.epochs") && e.contains("overflow"),
            "{e}"
        );
    }
}
