//! The BYOL objective (paper Eq. 2): with p̄ = p/‖p‖₂ and z̄' = z'/‖z'‖₂,
//! L = ‖p̄ − z̄'‖²₂ = 2 − 2·⟨p, z'⟩/(‖p‖₂·‖z'‖₂). The symmetrised loss is the SUM L + L̃ of the two
//! view orders (paper Eq. 2 and the official code); each term is averaged over the batch.
//!
//! The baselines of the paper through the same code: the unified objective of the BYOL↔SimCLR
//! appendix (a weight β on negative pairs), SimCLR's NT-Xent and MoCo v2's queue InfoNCE.

use crate::{Error, Result};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The training objective.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ObjectiveConfig {
    /// `byol`: the regression loss plus β times the contrastive term of the paper's unified
    /// objective (BYOL↔SimCLR appendix; β = 0 is BYOL); `nt-xent`: SimCLR's loss over the 2N−2
    /// in-batch negatives; `moco`: MoCo v2's InfoNCE against a queue of past target keys.
    #[serde(default)]
    pub kind: ObjectiveKind,
    /// β, the weight of the negative pairs in the unified objective (kind `byol` only).
    #[serde(default)]
    pub beta: f64,
    /// Temperature α of the contrastive terms (SimCLR: 0.1–0.5; MoCo v2: 0.2).
    #[serde(default = "d_temperature")]
    pub temperature: f64,
    /// Negative keys kept by MoCo's queue (MoCo v2: 65,536).
    #[serde(default = "d_queue")]
    pub queue_size: usize,
}

/// See [`ObjectiveConfig::kind`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectiveKind {
    #[default]
    Byol,
    NtXent,
    Moco,
}

fn d_temperature() -> f64 {
    0.1
}
fn d_queue() -> usize {
    65_536
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        Self {
            kind: ObjectiveKind::Byol,
            beta: 0.0,
            temperature: d_temperature(),
            queue_size: d_queue(),
        }
    }
}

impl ObjectiveConfig {
    /// Check the section's values (the need of `moco` for a target network is checked with the
    /// whole config).
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::config(
                "objective.temperature",
                format!("{} must be a positive number", self.temperature),
            ));
        }
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(Error::config(
                "objective.beta",
                format!("{} must be a number ≥ 0", self.beta),
            ));
        }
        if self.beta > 0.0 && self.kind != ObjectiveKind::Byol {
            return Err(Error::config(
                "objective.beta",
                "applies to objective.kind = \"byol\" only",
            ));
        }
        if self.kind == ObjectiveKind::Moco && self.queue_size == 0 {
            return Err(Error::config("objective.queue-size", "must be at least 1"));
        }
        Ok(())
    }
}

/// Smallest norm used in a normalisation, as the official code's `eps` in `l2_normalize`.
const NORM_EPS: f64 = 1e-12;

/// Row-wise L2 normalisation. `x`: [B, P] → [B, P].
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x
        .clone()
        .square()
        .sum_dim(1)
        .clamp_min(NORM_EPS * NORM_EPS)
        .sqrt(); // [B, 1]
    x / norm
}

/// Per-sample regression loss 2 − 2·cos(p, z'). `p`, `z`: \[B, P\] → \[B\].
pub fn regression_loss(p: Tensor<2>, z: Tensor<2>) -> Tensor<1> {
    let cos = (l2_normalize(p) * l2_normalize(z)).sum_dim(1); // [B, 1]
    let [b, _] = cos.dims();
    cos.mul_scalar(-2.0).add_scalar(2.0).reshape([b]) // [B]
}

/// Symmetrised BYOL loss, averaged over the batch: mean(L(p1, z2')) + mean(L(p2, z1')).
/// The target projections must come without gradient (stop-gradient).
pub fn byol_loss(
    p1: Tensor<2>,
    p2: Tensor<2>,
    z1_target: Tensor<2>,
    z2_target: Tensor<2>,
) -> Tensor<1> {
    regression_loss(p1, z2_target).mean() + regression_loss(p2, z1_target).mean() // [1]
}

/// Cosine similarities S[i, j] = ⟨a_i, b_j⟩/(‖a_i‖‖b_j‖). `a`: [B, P], `b`: [N, P] → [B, N].
pub fn cosine_matrix(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    l2_normalize(a).matmul(l2_normalize(b).transpose())
}

/// Row-wise log Σ exp, stabilised by the row maximum. `x`: \[B, N\] → \[B\].
pub fn logsumexp(x: Tensor<2>) -> Tensor<1> {
    let [b, _] = x.dims();
    let m = x.clone().max_dim(1).detach(); // [B, 1]
    ((x - m.clone()).exp().sum_dim(1).log() + m).reshape([b])
}

/// Logit given to the excluded pair (i, i) of a view with itself: exp of it is 0 in f32.
const MASKED: f32 = -1e4;

/// For anchors φ of view v: log Σ over the 2B − 1 candidates, ψ_j of the same view (j ≠ i) and
/// ψ'_j of the other view (every j), of exp(S/α). `phi`, `psi_same`, `psi_other`: [B, P] → [B].
fn candidates_lse(
    phi: Tensor<2>,
    psi_same: Tensor<2>,
    psi_other: Tensor<2>,
    alpha: f64,
) -> (Tensor<1>, Tensor<2>) {
    let [b, _] = phi.dims();
    let same = cosine_matrix(phi.clone(), psi_same).div_scalar(alpha); // [B, B]
    let diagonal = Tensor::<2, burn::tensor::Bool>::diag_mask([b, b], 0, &same.device()).bool_not(); // true on the diagonal
    let same = same.mask_fill(diagonal, MASKED);
    let other = cosine_matrix(phi, psi_other).div_scalar(alpha); // [B, B]
    (logsumexp(Tensor::cat(vec![same, other.clone()], 1)), other) // [B], [B, B]
}

/// One direction of the unified objective of the paper's BYOL↔SimCLR appendix, written as a loss
/// (2 − InfoNCE^{α,β}, so that β = 0 is exactly the BYOL loss):
/// mean_i (2 − 2·S(φ_i, ψ'_i)) + β·2α·mean_i log(Σ_{j≠i} e^{S(φ_i, ψ_j)/α} + Σ_j e^{S(φ_i, ψ'_j)/α}).
/// `phi`: online outputs of view v; `psi_same`, `psi_other`: targets of v and v'; all \[B, P\] → \[1\].
pub fn unified_direction(
    phi: Tensor<2>,
    psi_same: Tensor<2>,
    psi_other: Tensor<2>,
    beta: f64,
    alpha: f64,
) -> Tensor<1> {
    let regression = regression_loss(phi.clone(), psi_other.clone()).mean(); // [1]
    if beta == 0.0 {
        return regression;
    }
    let (lse, _) = candidates_lse(phi, psi_same, psi_other, alpha);
    regression + lse.mean().mul_scalar(beta * 2.0 * alpha)
}

/// The symmetrised unified objective: both view orders summed, as [`byol_loss`].
pub fn unified_loss(
    p1: Tensor<2>,
    p2: Tensor<2>,
    z1: Tensor<2>,
    z2: Tensor<2>,
    beta: f64,
    alpha: f64,
) -> Tensor<1> {
    unified_direction(p1, z1.clone(), z2.clone(), beta, alpha)
        + unified_direction(p2, z2, z1, beta, alpha)
}

/// SimCLR's NT-Xent (Chen et al. 2020): for each of the 2B anchors, −S(anchor, positive)/α plus
/// the log-sum-exp over the positive and the 2B − 2 negatives; averaged over the 2B anchors.
/// With no target network, `z1`, `z2` are the online projections themselves.
pub fn nt_xent(
    p1: Tensor<2>,
    p2: Tensor<2>,
    z1: Tensor<2>,
    z2: Tensor<2>,
    alpha: f64,
) -> Tensor<1> {
    let direction = |phi: Tensor<2>, same: Tensor<2>, other: Tensor<2>| {
        let (lse, logits) = candidates_lse(phi, same, other, alpha);
        let [b, _] = logits.dims();
        let positive = logits
            .mask_fill(
                Tensor::<2, burn::tensor::Bool>::diag_mask([b, b], 0, &lse.device()),
                0.0,
            )
            .sum_dim(1)
            .reshape([b]); // [B]
        (lse - positive).mean() // [1]
    };
    (direction(p1, z1.clone(), z2.clone()) + direction(p2, z2, z1)).div_scalar(2.0)
}

/// MoCo v2's InfoNCE (He et al. 2020; Chen et al. 2020b): query q against its positive key k
/// and the queue's negative keys, cross-entropy with the positive as the class, temperature α.
/// Symmetrised as a sum over the two view orders (as BYOL's loss and MoCo v3; MoCo v2's code uses
/// one order). `q1`, `q2`: online outputs; `k1`, `k2`: target keys (no gradient); `queue`:
/// \[K, P\] L2-normalised keys of earlier steps. → \[1\].
pub fn moco_loss(
    q1: Tensor<2>,
    q2: Tensor<2>,
    k1: Tensor<2>,
    k2: Tensor<2>,
    queue: Tensor<2>,
    alpha: f64,
) -> Tensor<1> {
    let direction = |q: Tensor<2>, k: Tensor<2>| {
        let [b, _] = q.dims();
        let qn = l2_normalize(q); // [B, P]
        let positive = (qn.clone() * l2_normalize(k)).sum_dim(1).div_scalar(alpha); // [B, 1]
        let negatives = qn.matmul(queue.clone().transpose()).div_scalar(alpha); // [B, K]
        (logsumexp(Tensor::cat(vec![positive.clone(), negatives], 1)) - positive.reshape([b]))
            .mean() // [1]
    };
    direction(q1, k2) + direction(q2, k1)
}

/// Collapse signal: the standard deviation over the batch of the L2-normalised projections,
/// averaged over dimensions. About 1/√P for well-spread outputs, 0 when collapsed.
/// `z`: \[B, P\] → \[1\].
pub fn normalized_std(z: Tensor<2>) -> Tensor<1> {
    let zn = l2_normalize(z); // [B, P]
    let [b, _] = zn.dims();
    let mean = zn.clone().mean_dim(0); // [1, P]
    let var = (zn - mean)
        .square()
        .sum_dim(0)
        .div_scalar((b.max(2) - 1) as f64); // [1, P]
    var.sqrt().mean() // [1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn t2(v: &[f32], rows: usize, cols: usize, device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v.to_vec(), [rows, cols]), device)
    }

    #[test]
    fn loss_matches_hand_computation() {
        let device = Device::flex();
        // Row 0: p = (1, 0), z = (0, 2): cos = 0 → L = 2.
        // Row 1: p = (3, 4), z = (6, 8): cos = 1 → L = 0.
        // Row 2: p = (1, 1), z = (1, 0): cos = 1/√2 → L = 2 − √2.
        let p = t2(&[1., 0., 3., 4., 1., 1.], 3, 2, &device);
        let z = t2(&[0., 2., 6., 8., 1., 0.], 3, 2, &device);
        let l: Vec<f32> = regression_loss(p.clone(), z.clone())
            .into_data()
            .try_into_vec()
            .unwrap();
        let expect = [2.0, 0.0, 2.0 - 2f32.sqrt()];
        for (a, b) in l.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{l:?}");
        }
        // Symmetric: both orders summed, each averaged: with p2 = z and z1' = p the second
        // term equals the first, so the total is twice the mean.
        let total: f32 = byol_loss(p.clone(), z.clone(), p, z).into_scalar();
        let mean = (2.0 + 0.0 + 2.0 - 2f32.sqrt()) / 3.0;
        assert!((total - 2.0 * mean).abs() < 1e-6, "{total}");
    }

    #[test]
    fn loss_equals_squared_distance_of_normalised_vectors() {
        let device = Device::flex();
        let p = Tensor::<2>::random(
            [5, 7],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let z = Tensor::<2>::random(
            [5, 7],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let direct: Vec<f32> = (l2_normalize(p.clone()) - l2_normalize(z.clone()))
            .square()
            .sum_dim(1)
            .into_data()
            .try_into_vec()
            .unwrap();
        let ours: Vec<f32> = regression_loss(p, z).into_data().try_into_vec().unwrap();
        for (a, b) in direct.iter().zip(&ours) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let device = Device::flex().autodiff();
        let pv: Vec<f32> = vec![0.3, -1.2, 0.8, 0.5, 0.1, -0.4, 1.1, 0.7];
        let zv: Vec<f32> = vec![1.0, 0.2, -0.3, 0.9, -0.6, 0.4, 0.2, -1.0];
        let f = |p: &[f32]| -> f64 {
            let d = Device::flex();
            let p = t2(p, 2, 4, &d);
            let z = t2(&zv, 2, 4, &d);
            f64::from(regression_loss(p, z).mean().into_scalar::<f32>())
        };
        let p = t2(&pv, 2, 4, &device).require_grad();
        let z = t2(&zv, 2, 4, &device);
        let loss = regression_loss(p.clone(), z.clone()).mean();
        let grads = loss.backward();
        let g: Vec<f32> = p.grad(&grads).unwrap().into_data().try_into_vec().unwrap();
        assert!(
            z.grad(&grads).is_none(),
            "the target branch must get no gradient"
        );
        let h = 1e-3f32;
        for i in 0..pv.len() {
            let mut a = pv.clone();
            a[i] += h;
            let mut b = pv.clone();
            b[i] -= h;
            let numeric = (f(&a) - f(&b)) / (2.0 * f64::from(h));
            assert!(
                (numeric - f64::from(g[i])).abs() < 2e-3,
                "coordinate {i}: {numeric} vs {}",
                g[i]
            );
        }
    }

    fn scalar(t: Tensor<1>) -> f64 {
        f64::from(t.into_scalar::<f32>())
    }

    #[test]
    fn unified_objective_matches_hand_computation_and_is_byol_at_beta_zero() {
        let d = Device::flex();
        // φ = (1,0), (0,1); ψ (same view) = (1,0), (0,1); ψ' (other view) = (2,0), (1,0); α = 0.5.
        // Anchor 0: same-view candidate j=1: S = 0; other view: S = 1, 1. log(1 + 2e²).
        // Anchor 1: same-view j=0: S = 0; other view: S = 0, 0. log 3.
        // Regression part: S(φ0, ψ'0) = 1 → 0, S(φ1, ψ'1) = 0 → 2; mean 1.
        let phi = t2(&[1., 0., 0., 1.], 2, 2, &d);
        let same = t2(&[1., 0., 0., 1.], 2, 2, &d);
        let other = t2(&[2., 0., 1., 0.], 2, 2, &d);
        let e2 = std::f64::consts::E.powi(2);
        for beta in [0.0, 1.0, 0.3] {
            let got = scalar(unified_direction(
                phi.clone(),
                same.clone(),
                other.clone(),
                beta,
                0.5,
            ));
            let want = 1.0 + beta * 2.0 * 0.5 * ((1.0 + 2.0 * e2).ln() + 3f64.ln()) / 2.0;
            assert!((got - want).abs() < 1e-5, "β={beta}: {got} vs {want}");
        }
        // The temperature enters the log-sum-exp: α = 0.25 doubles the logits.
        let got = scalar(unified_direction(
            phi.clone(),
            same.clone(),
            other.clone(),
            1.0,
            0.25,
        ));
        let want = 1.0 + 2.0 * 0.25 * ((1.0 + 2.0 * e2 * e2).ln() + 3f64.ln()) / 2.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // β = 0 on random inputs: the BYOL loss computed by hand in f64, and the limit of β → 0
        // of the contrastive branch (which the β = 0 shortcut skips).
        let r = |s| Tensor::<2>::random(s, burn::tensor::Distribution::Normal(0.0, 1.0), &d);
        let (p1, p2, z1, z2) = (r([6, 5]), r([6, 5]), r([6, 5]), r([6, 5]));
        let rows = |t: &Tensor<2>| -> Vec<Vec<f64>> {
            t.clone()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
                .chunks(5)
                .map(|c| c.iter().map(|&x| f64::from(x)).collect())
                .collect()
        };
        let cos = |a: &[f64], b: &[f64]| {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            dot / (a.iter().map(|x| x * x).sum::<f64>().sqrt()
                * b.iter().map(|x| x * x).sum::<f64>().sqrt())
        };
        let by_hand = |p: &Tensor<2>, z: &Tensor<2>| {
            rows(p)
                .iter()
                .zip(rows(z))
                .map(|(a, b)| 2.0 - 2.0 * cos(a, &b))
                .sum::<f64>()
                / 6.0
        };
        let want = by_hand(&p1, &z2) + by_hand(&p2, &z1);
        let at = |beta: f64| {
            scalar(unified_loss(
                p1.clone(),
                p2.clone(),
                z1.clone(),
                z2.clone(),
                beta,
                0.1,
            ))
        };
        assert!((at(0.0) - want).abs() < 1e-5, "{} vs {want}", at(0.0));
        assert!(
            (at(1e-7) - want).abs() < 1e-5,
            "β → 0: {} vs {want}",
            at(1e-7)
        );
        assert!(at(1e-2) - want > 1e-3, "β > 0 adds the contrastive term");
    }

    #[test]
    fn nt_xent_and_moco_match_hand_computation() {
        let d = Device::flex();
        let phi = t2(&[1., 0., 0., 1.], 2, 2, &d);
        let same = t2(&[1., 0., 0., 1.], 2, 2, &d);
        let other = t2(&[2., 0., 1., 0.], 2, 2, &d);
        let e2 = std::f64::consts::E.powi(2);
        // Both directions equal here (φ = ψ for view 1 is not needed: pass the same pair twice).
        // Anchor 0: −S⁺/α + lse = −2 + log(1 + 2e²); anchor 1: 0 + log 3.
        let got = scalar(nt_xent(
            phi.clone(),
            phi.clone(),
            same.clone(),
            other.clone(),
            0.5,
        ));
        // Direction 1 (φ=phi, same=same, other=other) as above; direction 2 (φ=phi, same=other,
        // other=same): anchor 0: same-view j=1: S((1,0),(1,0)) = 1 → e²; other: S = 1, 0 → e², 1;
        // positive S = 1. Anchor 1: same-view j=0: S((0,1),(2,0)) = 0 → 1; other: 0, 1 → 1, e²;
        // positive S((0,1),(0,1)) = 1.
        let d1 = (-2.0 + (1.0 + 2.0 * e2).ln() + 3f64.ln()) / 2.0;
        let d2 = ((-2.0 + (2.0 * e2 + 1.0).ln()) + (-2.0 + (2.0 + e2).ln())) / 2.0;
        let want = (d1 + d2) / 2.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // MoCo: q = (1,0), k = (0,3), queue (−1,0), (0,−1), α = 0.2: logits [0, −5, 0].
        let q = t2(&[1., 0.], 1, 2, &d);
        let k = t2(&[0., 3.], 1, 2, &d);
        let queue = t2(&[-1., 0., 0., -1.], 2, 2, &d);
        let got = scalar(moco_loss(q.clone(), q, k.clone(), k, queue, 0.2));
        let want = 2.0 * (2.0 + (-5f64).exp()).ln();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn collapse_signal() {
        let device = Device::flex();
        let same = t2(&[1., 2., 1., 2., 1., 2.], 3, 2, &device);
        assert!(normalized_std(same).into_scalar::<f32>().abs() < 1e-6);
        let spread = t2(&[1., 0., -1., 0., 0., 1., 0., -1.], 4, 2, &device);
        // Each coordinate takes values {1, -1, 0, 0}: sample variance 2/3.
        let s: f32 = normalized_std(spread).into_scalar();
        assert!((s - (2.0f32 / 3.0).sqrt()).abs() < 1e-6, "{s}");
    }
}
