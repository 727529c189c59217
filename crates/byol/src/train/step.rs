//! One training step (paper Algorithm 1 for BYOL; the variants and baselines through the same
//! code): a function from (state, batch, schedule values) to (new state, metrics). No I/O, no
//! host synchronisation.

use super::TrainState;
use crate::Result;
use crate::config::{ExperimentConfig, ObjectiveConfig, ObjectiveKind, OnNonFinite};
use crate::ema;
use crate::loss::{moco_loss, normalized_std, nt_xent, unified_loss};
use crate::optim::ParamGrads;
use burn::tensor::Tensor;

/// Device-side metrics of a step (read them only when logging, to avoid synchronising).
pub struct StepMetrics {
    /// Symmetrised loss L + L̃: \[1\]; with several replicas, the mean of theirs (the loss of the
    /// whole batch).
    pub loss: Tensor<1>,
    /// Std of the normalised online projections of view 1 (collapse signal): \[1\].
    pub projection_std: Tensor<1>,
    /// The online representation of view 1, detached (no autodiff), in f32: [B, D]. What the
    /// online linear probe trains on.
    pub representation: Tensor<2>,
}

/// The forward half of a step: the loss and the gradients are known, nothing is updated yet.
pub struct Forward {
    state: TrainState,
    /// The online network's gradients, the mean over the micro-batches.
    grads: ParamGrads,
    /// The loss of the whole batch (the mean over its micro-batches), without autodiff: [1].
    /// With several replicas ([`crate::collective::current`]), the mean of theirs, the same on
    /// every replica.
    batch_loss: Tensor<1>,
    /// MoCo's new keys, the target's projections of both views: [2B, P].
    keys: Option<Tensor<2>>,
    projection_std: Tensor<1>,
    y1: Tensor<2>,
}

/// What a step keeps of one micro-batch, without autodiff (its graph is gone with its backward
/// pass).
struct Micro {
    /// [1].
    loss: Tensor<1>,
    /// The target's projections of the two views: [b, P] each.
    z1t: Tensor<2>,
    z2t: Tensor<2>,
    /// The online projections of view 1, detached: [b, P].
    z1: Tensor<2>,
    /// The online representations of view 1, detached, in f32: [b, D].
    y1: Tensor<2>,
}

/// Forward both views through the online network and the target (when there is one), take the
/// objective's loss and back-propagate it. `view1`, `view2`: [B, 3, S, S] on the plain device,
/// in f32, or in bf16 / f16 for mixed precision (the encoders compute in that type; see
/// `model::precision`).
pub fn forward(
    state: TrainState,
    view1: Tensor<4>,
    view2: Tensor<4>,
    objective: &ObjectiveConfig,
) -> Forward {
    forward_accumulated(state, view1, view2, objective, 1)
}

/// [`forward`] over `micro_batches` consecutive slices of the batch (`train.accumulate`): each
/// slice goes through the networks on its own (BatchNorm's statistics and SimCLR's negatives are
/// the slice's), and the gradients are averaged over the slices, so the update that follows is
/// one update of the whole batch — the paper's protocol for smaller batches (§5, "Batch size":
/// gradients averaged over N consecutive steps, the target updated once every N). `micro_batches`
/// must divide B (the config's validation says so).
pub fn forward_accumulated(
    state: TrainState,
    view1: Tensor<4>,
    view2: Tensor<4>,
    objective: &ObjectiveConfig,
    micro_batches: usize,
) -> Forward {
    let b = view1.dims()[0] / micro_batches;
    let mut grads: Option<ParamGrads> = None;
    let mut micros = Vec::with_capacity(micro_batches);
    for i in 0..micro_batches {
        let slice = |v: &Tensor<4>| {
            if micro_batches == 1 {
                v.clone()
            } else {
                v.clone().narrow(0, i * b, b)
            }
        }; // [b, 3, S, S]
        let (loss, micro) = micro_forward(&state, slice(&view1), slice(&view2), objective);
        let loss = if micro_batches == 1 {
            loss
        } else {
            loss.div_scalar(micro_batches as f64)
        };
        let taken = ParamGrads::take(&state.online, &mut loss.backward());
        grads = Some(match grads {
            Some(g) => g + taken,
            None => taken,
        });
        micros.push(micro);
    }
    let cat = |f: fn(&Micro) -> Tensor<2>| Tensor::cat(micros.iter().map(f).collect(), 0);
    let loss = Tensor::cat(micros.iter().map(|m| m.loss.clone()).collect(), 0).mean(); // [1]
    let batch_loss = match crate::collective::current() {
        Some(replica) => replica.all_reduce_mean(loss), // [1]
        None => loss,
    };
    let keys = state
        .queue
        .is_some()
        .then(|| Tensor::cat(vec![cat(|m| m.z1t.clone()), cat(|m| m.z2t.clone())], 0)); // [2B, P]
    let projection_std = normalized_std(cat(|m| m.z1.clone())); // [1]
    let y1 = cat(|m| m.y1.clone()); // [B, D]
    let grads = grads.expect("at least one micro-batch");
    Forward {
        state,
        grads,
        batch_loss,
        keys,
        projection_std,
        y1,
    }
}

/// One micro-batch through the online network and the target: the objective's loss on the
/// autodiff device (\[1\]), and what the step keeps.
fn micro_forward(
    state: &TrainState,
    view1: Tensor<4>,
    view2: Tensor<4>,
    objective: &ObjectiveConfig,
) -> (Tensor<1>, Micro) {
    // Each view through the online network separately, so that BatchNorm statistics are per view
    // as in the official code.
    let o1 = state.online.forward(view1.clone().autodiff()); // p, z: [b, P]
    let o2 = state.online.forward(view2.clone().autodiff()); // [b, P]
    let (z1t, z2t) = match &state.target {
        // Target: no autodiff at all (stop-gradient), BatchNorm in training mode.
        Some(t) => (t.forward(view1), t.forward(view2)), // [b, P]
        // No target network (SimCLR): the online projections, with gradient.
        None => (o1.projection.clone(), o2.projection.clone()), // [b, P]
    };
    let (alpha, beta) = (objective.temperature, objective.beta);
    let loss = match objective.kind {
        ObjectiveKind::Byol => unified_loss(
            o1.prediction,
            o2.prediction,
            z1t.clone(),
            z2t.clone(),
            beta,
            alpha,
        ), // [1]
        ObjectiveKind::NtXent => nt_xent(
            o1.prediction,
            o2.prediction,
            z1t.clone(),
            z2t.clone(),
            alpha,
        ), // [1]
        ObjectiveKind::Moco => {
            let keys = state
                .queue
                .as_ref()
                .expect("a MoCo state has a queue")
                .keys
                .clone(); // [K, P]
            moco_loss(
                o1.prediction,
                o2.prediction,
                z1t.clone(),
                z2t.clone(),
                keys,
                alpha,
            ) // [1]
        }
    };
    let y1 = crate::model::precision::to_f32(o1.representation.without_autodiff()); // [b, D]
    let kept = Micro {
        loss: loss.clone().without_autodiff(),
        z1t: z1t.without_autodiff(),
        z2t: z2t.without_autodiff(),
        z1: o1.projection.without_autodiff(),
        y1,
    };
    (loss, kept)
}

impl Forward {
    /// The loss of the whole batch, read back to the host (a synchronisation with the device).
    pub fn loss_value(&self) -> f64 {
        f64::from(self.batch_loss.clone().into_scalar::<f32>())
    }

    /// Give up this step: parameters, optimizer state, target and queue stay as they were; the
    /// step counter advances so that the schedules and the data order go on. (The BatchNorm
    /// running statistics of the forward pass are not rolled back.)
    pub fn skip(self) -> TrainState {
        TrainState {
            step: self.state.step + 1,
            ..self.state
        }
    }

    /// Update θ with the optimizer at learning rate `lr`, then ξ by EMA with `tau` and MoCo's
    /// queue with this step's keys. Fails, naming them, when parameters of the
    /// online network got no gradient ([`crate::Error::Untrained`]). With several replicas the
    /// optimizer averages each gradient over them first ([`crate::optim::Optimizer::step`]), so
    /// every replica takes the same step and the target, updated locally, stays the same too.
    pub fn apply(self, lr: f64, tau: f64) -> Result<(TrainState, StepMetrics)> {
        let Forward {
            state,
            grads,
            batch_loss,
            keys,
            projection_std,
            y1,
        } = self;
        let TrainState {
            online,
            target,
            mut optim,
            mut queue,
            step,
            probe,
        } = state;
        let online = optim.apply(online, grads, lr, step + 1)?;
        let target = target.map(|t| ema::update(t, &online, tau));
        if let (Some(q), Some(keys)) = (queue.as_mut(), keys) {
            q.push(keys); // [2B, P]
        }
        let metrics = StepMetrics {
            loss: batch_loss,
            projection_std,
            representation: y1,
        };
        Ok((
            TrainState {
                online,
                target,
                optim,
                queue,
                step: step + 1,
                probe,
            },
            metrics,
        ))
    }
}

/// A whole step: [`forward`], then [`Forward::apply`].
pub fn train_step(
    state: TrainState,
    view1: Tensor<4>,
    view2: Tensor<4>,
    lr: f64,
    tau: f64,
    objective: &ObjectiveConfig,
) -> Result<(TrainState, StepMetrics)> {
    forward(state, view1, view2, objective).apply(lr, tau)
}

/// What [`guarded_step`] did.
#[allow(
    clippy::large_enum_variant,
    reason = "one value per step, moved from the step to the loop; boxing the state would add an allocation to every step for nothing"
)]
pub enum Outcome {
    /// The update was applied.
    Applied(TrainState, StepMetrics),
    /// The loss was not finite and `on-non-finite = "skip"`: nothing was updated but the step
    /// counter ([`Forward::skip`]).
    Skipped { state: TrainState, loss: f64 },
}

/// How a run takes its steps: the objective, the `train.on-non-finite` rule and the micro-batches
/// of `train.accumulate`.
#[derive(Debug, Clone)]
pub struct StepRule {
    pub objective: ObjectiveConfig,
    pub on_non_finite: OnNonFinite,
    /// Micro-batches per update (1: the whole batch at once).
    pub accumulate: usize,
}

impl StepRule {
    /// The rule of `cfg`'s run.
    pub fn of(cfg: &ExperimentConfig) -> Self {
        StepRule {
            objective: cfg.objective.clone(),
            on_non_finite: cfg.train.on_non_finite,
            accumulate: cfg.train.accumulate,
        }
    }
}

/// A step under `rule`: over its micro-batches ([`forward_accumulated`]); with `on-non-finite =
/// "stop"` applied unconditionally (the loop checks the loss when it logs); with `"skip"` the loss
/// of the whole batch is read first (a host synchronisation) and a non-finite step skipped. With
/// several replicas the loss read is the group's mean, so every replica decides the same.
pub fn guarded_step(
    state: TrainState,
    view1: Tensor<4>,
    view2: Tensor<4>,
    lr: f64,
    tau: f64,
    rule: &StepRule,
) -> Result<Outcome> {
    let f = forward_accumulated(state, view1, view2, &rule.objective, rule.accumulate);
    match rule.on_non_finite {
        OnNonFinite::Stop => f.apply(lr, tau).map(|(s, m)| Outcome::Applied(s, m)),
        OnNonFinite::Skip => {
            let loss = f.loss_value();
            if loss.is_finite() {
                f.apply(lr, tau).map(|(s, m)| Outcome::Applied(s, m))
            } else {
                Ok(Outcome::Skipped {
                    state: f.skip(),
                    loss,
                })
            }
        }
    }
}
