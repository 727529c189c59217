//! One BYOL training step (paper Algorithm 1): a function from (state, batch, schedule values)
//! to (new state, metrics). No I/O, no host synchronisation.

use super::TrainState;
use crate::ema;
use crate::loss::{byol_loss, normalized_std};
use burn::tensor::Tensor;

/// Device-side metrics of a step (read them only when logging, to avoid synchronising).
pub struct StepMetrics {
    /// Symmetrised loss L + L̃: [1].
    pub loss: Tensor<1>,
    /// Std of the normalised online projections of view 1 (collapse signal): [1].
    pub projection_std: Tensor<1>,
}

/// Forward both views through the online and target networks, take the symmetrised loss,
/// update θ with the optimizer at learning rate `lr`, then ξ by EMA with `tau`.
/// `view1`, `view2`: [B, 3, S, S] on the plain device.
pub fn train_step(state: TrainState, view1: Tensor<4>, view2: Tensor<4>, lr: f64, tau: f64) -> (TrainState, StepMetrics) {
    let TrainState { online, target, mut optim, step } = state;
    // Each view through the online network separately, so that BatchNorm statistics are per view
    // as in the official code.
    let o1 = online.forward(view1.clone().autodiff()); // p, z: [B, P]
    let o2 = online.forward(view2.clone().autodiff()); // [B, P]
    // Target: no autodiff at all (stop-gradient), BatchNorm in training mode.
    let z1t = target.forward(view1); // [B, P]
    let z2t = target.forward(view2); // [B, P]
    let loss = byol_loss(o1.prediction, o2.prediction, z1t, z2t); // [1]
    let projection_std = normalized_std(o1.projection.without_autodiff()); // [1]
    let mut grads = loss.backward();
    let online = optim.step(online, &mut grads, lr, step + 1);
    let target = ema::update(target, &online, tau);
    let metrics = StepMetrics { loss: loss.without_autodiff(), projection_std };
    (TrainState { online, target, optim, step: step + 1 }, metrics)
}
