//! The BYOL objective (paper Eq. 2): with p̄ = p/‖p‖₂ and z̄' = z'/‖z'‖₂,
//! L = ‖p̄ − z̄'‖²₂ = 2 − 2·⟨p, z'⟩/(‖p‖₂·‖z'‖₂). The symmetrised loss is the SUM L + L̃ of the two
//! view orders (paper Eq. 2 and the official code); each term is averaged over the batch.

use burn::tensor::Tensor;

/// Smallest norm used in a normalisation, as the official code's `eps` in `l2_normalize`.
const NORM_EPS: f64 = 1e-12;

/// Row-wise L2 normalisation. `x`: [B, P] → [B, P].
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).clamp_min(NORM_EPS * NORM_EPS).sqrt(); // [B, 1]
    x / norm
}

/// Per-sample regression loss 2 − 2·cos(p, z'). `p`, `z`: [B, P] → [B].
pub fn regression_loss(p: Tensor<2>, z: Tensor<2>) -> Tensor<1> {
    let cos = (l2_normalize(p) * l2_normalize(z)).sum_dim(1); // [B, 1]
    let [b, _] = cos.dims();
    cos.mul_scalar(-2.0).add_scalar(2.0).reshape([b]) // [B]
}

/// Symmetrised BYOL loss, averaged over the batch: mean(L(p1, z2')) + mean(L(p2, z1')).
/// The target projections must come without gradient (stop-gradient).
pub fn byol_loss(p1: Tensor<2>, p2: Tensor<2>, z1_target: Tensor<2>, z2_target: Tensor<2>) -> Tensor<1> {
    regression_loss(p1, z2_target).mean() + regression_loss(p2, z1_target).mean() // [1]
}

/// Collapse signal: the standard deviation over the batch of the L2-normalised projections,
/// averaged over dimensions. About 1/√P for well-spread outputs, 0 when collapsed.
/// `z`: [B, P] → [1].
pub fn normalized_std(z: Tensor<2>) -> Tensor<1> {
    let zn = l2_normalize(z); // [B, P]
    let [b, _] = zn.dims();
    let mean = zn.clone().mean_dim(0); // [1, P]
    let var = (zn - mean).square().sum_dim(0).div_scalar((b.max(2) - 1) as f64); // [1, P]
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
        let l: Vec<f32> = regression_loss(p.clone(), z.clone()).into_data().try_into_vec().unwrap();
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
        let p = Tensor::<2>::random([5, 7], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let z = Tensor::<2>::random([5, 7], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let direct: Vec<f32> = (l2_normalize(p.clone()) - l2_normalize(z.clone())).square().sum_dim(1).into_data().try_into_vec().unwrap();
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
        assert!(z.grad(&grads).is_none(), "the target branch must get no gradient");
        let h = 1e-3f32;
        for i in 0..pv.len() {
            let mut a = pv.clone();
            a[i] += h;
            let mut b = pv.clone();
            b[i] -= h;
            let numeric = (f(&a) - f(&b)) / (2.0 * f64::from(h));
            assert!((numeric - f64::from(g[i])).abs() < 2e-3, "coordinate {i}: {numeric} vs {}", g[i]);
        }
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
