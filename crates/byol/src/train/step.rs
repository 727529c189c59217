//! One training step (paper Algorithm 1 for BYOL; the variants and baselines through the same
//! code): a function from (state, batch, schedule values) to (new state, metrics). No I/O, no
//! host synchronisation.

use super::TrainState;
use crate::Result;
use crate::config::{ObjectiveConfig, ObjectiveKind, OnNonFinite};
use crate::ema;
use crate::loss::{moco_loss, normalized_std, nt_xent, unified_loss};
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

/// The forward half of a step: the loss is known, nothing is updated yet.
pub struct Forward {
    state: TrainState,
    /// [1], on the autodiff device.
    loss: Tensor<1>,
    /// The loss of the whole batch, without autodiff: [1]. With several replicas
    /// ([`crate::collective::current`]), the mean of theirs, the same on every replica.
    batch_loss: Tensor<1>,
    z1t: Tensor<2>,
    z2t: Tensor<2>,
    projection_std: Tensor<1>,
    y1: Tensor<2>,
}

/// Forward both views through the online network and the target (when there is one) and take
/// the objective's loss. `view1`, `view2`: [B, 3, S, S] on the plain device, in f32, or in bf16 /
/// f16 for mixed precision (the encoders compute in that type; see `model::precision`).
pub fn forward(state: TrainState, view1: Tensor<4>, view2: Tensor<4>, objective: &ObjectiveConfig) -> Forward {
    // Each view through the online network separately, so that BatchNorm statistics are per view
    // as in the official code.
    let o1 = state.online.forward(view1.clone().autodiff()); // p, z: [B, P]
    let o2 = state.online.forward(view2.clone().autodiff()); // [B, P]
    let (z1t, z2t) = match &state.target {
        // Target: no autodiff at all (stop-gradient), BatchNorm in training mode.
        Some(t) => (t.forward(view1), t.forward(view2)), // [B, P]
        // No target network (SimCLR): the online projections, with gradient.
        None => (o1.projection.clone(), o2.projection.clone()), // [B, P]
    };
    let (alpha, beta) = (objective.temperature, objective.beta);
    let loss = match objective.kind {
        ObjectiveKind::Byol => unified_loss(o1.prediction, o2.prediction, z1t.clone(), z2t.clone(), beta, alpha), // [1]
        ObjectiveKind::NtXent => nt_xent(o1.prediction, o2.prediction, z1t.clone(), z2t.clone(), alpha),          // [1]
        ObjectiveKind::Moco => {
            let keys = state.queue.as_ref().expect("a MoCo state has a queue").keys.clone(); // [K, P]
            moco_loss(o1.prediction, o2.prediction, z1t.clone(), z2t.clone(), keys, alpha) // [1]
        }
    };
    let batch_loss = match crate::collective::current() {
        Some(replica) => replica.all_reduce_mean(loss.clone().without_autodiff()), // [1]
        None => loss.clone().without_autodiff(),
    };
    let projection_std = normalized_std(o1.projection.without_autodiff()); // [1]
    let y1 = crate::model::precision::to_f32(o1.representation.without_autodiff()); // [B, D]
    Forward { state, loss, batch_loss, z1t, z2t, projection_std, y1 }
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
        TrainState { step: self.state.step + 1, ..self.state }
    }

    /// Back-propagate, update θ with the optimizer at learning rate `lr`, then ξ by EMA with
    /// `tau` and MoCo's queue with this step's keys. Fails, naming them, when parameters of the
    /// online network got no gradient ([`crate::Error::Untrained`]). With several replicas the
    /// optimizer averages each gradient over them first ([`crate::optim::Optimizer::step`]), so
    /// every replica takes the same step and the target, updated locally, stays the same too.
    pub fn apply(self, lr: f64, tau: f64) -> Result<(TrainState, StepMetrics)> {
        let Forward { state, loss, batch_loss, z1t, z2t, projection_std, y1 } = self;
        let TrainState { online, target, mut optim, mut queue, step, probe } = state;
        let mut grads = loss.backward();
        let online = optim.step(online, &mut grads, lr, step + 1)?;
        let target = target.map(|t| ema::update(t, &online, tau));
        if let Some(q) = queue.as_mut() {
            q.push(Tensor::cat(vec![z1t, z2t], 0)); // [2B, P]
        }
        let metrics = StepMetrics { loss: batch_loss, projection_std, representation: y1 };
        Ok((TrainState { online, target, optim, queue, step: step + 1, probe }, metrics))
    }
}

/// A whole step: [`forward`], then [`Forward::apply`].
pub fn train_step(state: TrainState, view1: Tensor<4>, view2: Tensor<4>, lr: f64, tau: f64, objective: &ObjectiveConfig) -> Result<(TrainState, StepMetrics)> {
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

/// A step under the run's `train.on-non-finite` rule: `stop` applies it unconditionally (the loop
/// checks the loss when it logs); `skip` reads the loss of the whole batch first (a host
/// synchronisation) and skips a non-finite step. With several replicas the loss read is the
/// group's mean, so every replica decides the same.
pub fn guarded_step(
    state: TrainState,
    view1: Tensor<4>,
    view2: Tensor<4>,
    lr: f64,
    tau: f64,
    objective: &ObjectiveConfig,
    on_non_finite: OnNonFinite,
) -> Result<Outcome> {
    match on_non_finite {
        OnNonFinite::Stop => train_step(state, view1, view2, lr, tau, objective).map(|(s, m)| Outcome::Applied(s, m)),
        OnNonFinite::Skip => {
            let f = forward(state, view1, view2, objective);
            let loss = f.loss_value();
            if loss.is_finite() { f.apply(lr, tau).map(|(s, m)| Outcome::Applied(s, m)) } else { Ok(Outcome::Skipped { state: f.skip(), loss }) }
        }
    }
}
