//! One training step (paper Algorithm 1 for BYOL; the variants and baselines through the same
//! code): a function from (state, batch, schedule values) to (new state, metrics). No I/O, no
//! host synchronisation.

use super::TrainState;
use crate::ema;
use crate::config::{ObjectiveConfig, ObjectiveKind};
use crate::Result;
use crate::loss::{moco_loss, normalized_std, nt_xent, unified_loss};
use burn::tensor::Tensor;

/// Device-side metrics of a step (read them only when logging, to avoid synchronising).
pub struct StepMetrics {
    /// Symmetrised loss L + L̃: \[1\].
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
        ObjectiveKind::NtXent => nt_xent(o1.prediction, o2.prediction, z1t.clone(), z2t.clone(), alpha), // [1]
        ObjectiveKind::Moco => {
            let keys = state.queue.as_ref().expect("a MoCo state has a queue").keys.clone(); // [K, P]
            moco_loss(o1.prediction, o2.prediction, z1t.clone(), z2t.clone(), keys, alpha) // [1]
        }
    };
    let projection_std = normalized_std(o1.projection.without_autodiff()); // [1]
    let y1 = crate::model::precision::to_f32(o1.representation.without_autodiff()); // [B, D]
    Forward { state, loss, z1t, z2t, projection_std, y1 }
}

impl Forward {
    /// The loss, read back to the host (a synchronisation with the device).
    pub fn loss_value(&self) -> f64 {
        f64::from(self.loss.clone().without_autodiff().into_scalar::<f32>())
    }

    /// Give up this step: parameters, optimizer state, target and queue stay as they were; the
    /// step counter advances so that the schedules and the data order go on. (The BatchNorm
    /// running statistics of the forward pass are not rolled back.)
    pub fn skip(self) -> TrainState {
        TrainState { step: self.state.step + 1, ..self.state }
    }

    /// Back-propagate, update θ with the optimizer at learning rate `lr`, then ξ by EMA with
    /// `tau` and MoCo's queue with this step's keys. Fails, naming them, when parameters of the
    /// online network got no gradient ([`crate::Error::Untrained`]).
    pub fn apply(self, lr: f64, tau: f64) -> Result<(TrainState, StepMetrics)> {
        let Forward { state, loss, z1t, z2t, projection_std, y1 } = self;
        let TrainState { online, target, mut optim, mut queue, step, probe } = state;
        let mut grads = loss.backward();
        let online = optim.step(online, &mut grads, lr, step + 1)?;
        let target = target.map(|t| ema::update(t, &online, tau));
        if let Some(q) = queue.as_mut() {
            q.push(Tensor::cat(vec![z1t, z2t], 0)); // [2B, P]
        }
        let metrics = StepMetrics { loss: loss.without_autodiff(), projection_std, representation: y1 };
        Ok((TrainState { online, target, optim, queue, step: step + 1, probe }, metrics))
    }
}

/// A whole step: [`forward`], then [`Forward::apply`].
pub fn train_step(state: TrainState, view1: Tensor<4>, view2: Tensor<4>, lr: f64, tau: f64, objective: &ObjectiveConfig) -> Result<(TrainState, StepMetrics)> {
    forward(state, view1, view2, objective).apply(lr, tau)
}
