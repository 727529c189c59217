//! Batch normalisation whose mode is the layer's own training flag, independent of the device.
//!
//! burn's `BatchNorm::forward` uses batch statistics only on an autodiff device. BYOL's target
//! network runs without autodiff (it gets no gradient) but must still use batch statistics and
//! update its own running statistics (spec: "the target runs BN in training mode too"), so the
//! networks call this function instead.

use burn::nn::BatchNorm;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

/// `x`: [B, C, …] → [B, C, …]. Batch statistics (and a running-statistics update) when the
/// layer's training flag is on; running statistics otherwise (after `Module::valid`). A bf16 or
/// f16 input is normalised in f32 and returned in its own type (mixed precision).
pub fn batch_norm<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    if dtype != burn::tensor::DType::F32 {
        let y = batch_norm_f32(bn, super::precision::to_f32(x));
        return y.cast(burn::tensor::FloatDType::from(dtype));
    }
    batch_norm_f32(bn, x)
}

fn batch_norm_f32<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    if !bn.training.is_enabled() {
        let device = x.device();
        return burn::tensor::module::batch_norm(
            x,
            bn.gamma.val(),
            bn.beta.val(),
            bn.running_mean.value().to_device(&device),
            bn.running_var.value().to_device(&device),
            bn.epsilon,
        );
    }
    let (y, mean, var) = match crate::collective::current_sync_bn() {
        Some(replica) => batch_norm_sync(x, bn.gamma.val(), bn.beta.val(), bn.epsilon, &replica),
        None => batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon),
    };
    update_running(bn, mean, var);
    y
}

/// The running statistics ← (1 − momentum)·running + momentum·batch.
fn update_running(bn: &BatchNorm, mean: Tensor<1>, var: Tensor<1>) {
    let m = bn.momentum;
    let mean = bn
        .running_mean
        .value_sync()
        .mul_scalar(1.0 - m)
        .add(mean.detach().mul_scalar(m));
    let var = bn
        .running_var
        .value_sync()
        .mul_scalar(1.0 - m)
        .add(var.detach().mul_scalar(m));
    bn.running_mean.update(mean.detach());
    bn.running_var.update(var.detach());
}

/// relu(batch_norm(bn, x) + residual): the ReLU after a batch norm, with the residual add of a
/// ResNet block's tail. In f32 training mode on `flex` it is one fused node (a kernel of
/// [`super::kernels`]); everywhere else it is exactly the unfused expression.
pub fn batch_norm_relu<const D: usize>(
    bn: &BatchNorm,
    x: Tensor<D>,
    residual: Option<Tensor<D>>,
) -> Tensor<D> {
    if bn.training.is_enabled()
        && crate::collective::current_sync_bn().is_none()
        && let Some((y, mean, var)) = super::kernels::fused_batch_norm_act(
            &x,
            &bn.gamma.val(),
            &bn.beta.val(),
            bn.epsilon,
            residual.as_ref(),
            true,
        )
    {
        update_running(bn, mean, var);
        return y;
    }
    let y = batch_norm(bn, x);
    relu(match residual {
        Some(r) => y + r,
        None => y,
    })
}

/// Training-mode batch normalisation: (output, batch mean \[C\], biased batch variance \[C\]). On
/// `flex` in f32 it is the fused node of [`super::kernels`] (2 passes forward, 2 backward);
/// elsewhere `batch_norm_ops`. Both compute the same as burn's `batch_norm_train` (tested).
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    if let Some(out) = super::kernels::fused_batch_norm_act(&x, &gamma, &beta, epsilon, None, false)
    {
        return out;
    }
    batch_norm_ops(x, gamma, beta, epsilon)
}

/// [`batch_norm_train`] from tensor operations (every backend): per-channel mean and biased
/// variance reduced along contiguous axes ([B, C, rest] → sum over rest, then over B), then one
/// affine map x·a + b. Same as burn's `batch_norm_train` (to ~2e-6), whose statistics transpose
/// the whole activation twice; on `flex` this was 1.3–2.6× faster in the forward pass.
fn batch_norm_ops<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    let dims = x.dims();
    let (b, c) = (dims[0], dims[1]);
    let rest: usize = dims[2..].iter().product();
    let n = (b * rest) as f64;
    let x3 = x.clone().reshape([b, c, rest]); // [B, C, rest]
    let mean = x3.clone().sum_dim(2).sum_dim(0).div_scalar(n); // [1, C, 1]
    let var = (x3 - mean.clone())
        .square()
        .sum_dim(2)
        .sum_dim(0)
        .div_scalar(n); // [1, C, 1]
    let mut per_channel = [1usize; D];
    per_channel[1] = c;
    let scale =
        gamma.reshape(per_channel) / var.clone().reshape(per_channel).add_scalar(epsilon).sqrt(); // [1, C, 1…]
    let shift = beta.reshape(per_channel) - mean.clone().reshape(per_channel) * scale.clone(); // [1, C, 1…]
    (x * scale + shift, mean.reshape([c]), var.reshape([c]))
}
/// Cross-replica training-mode batch normalisation (the official code's cross-replica BN; PyTorch's
/// `SyncBatchNorm`): the mean and the biased variance over the whole group's batch, each a
/// per-channel sum all-reduced across the replicas (two rounds, as the two passes of
/// [`batch_norm_ops`], so that the statistics are those of one device holding the whole batch,
/// to f32 rounding). The sums are differentiable collectives, so the backward pass carries every
/// replica's gradient through the statistics. Every replica holds the same number of images.
fn batch_norm_sync<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    replica: &crate::collective::Replica,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    let dims = x.dims();
    let (b, c) = (dims[0], dims[1]);
    let rest: usize = dims[2..].iter().product();
    let n = (b * rest * replica.replicas()) as f64;
    let x3 = x.clone().reshape([b, c, rest]); // [B/R, C, rest]
    let mean = replica
        .all_reduce_sum(x3.clone().sum_dim(2).sum_dim(0).reshape([c]))
        .div_scalar(n); // [C]
    let centred = x3 - mean.clone().reshape([1, c, 1]); // [B/R, C, rest]
    let var = replica
        .all_reduce_sum(centred.square().sum_dim(2).sum_dim(0).reshape([c]))
        .div_scalar(n); // [C]
    let mut per_channel = [1usize; D];
    per_channel[1] = c;
    let scale =
        gamma.reshape(per_channel) / var.clone().reshape(per_channel).add_scalar(epsilon).sqrt(); // [1, C, 1…]
    let shift = beta.reshape(per_channel) - mean.clone().reshape(per_channel) * scale.clone(); // [1, C, 1…]
    (x * scale + shift, mean, var)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// The same output, statistics and gradients as burn's `batch_norm_train`.
    #[test]
    fn matches_burns_batch_norm_train_and_its_gradients() {
        let d = Device::flex().autodiff();
        let x =
            Tensor::<4>::random([6, 5, 4, 3], Distribution::Normal(0.7, 2.0), &d).require_grad();
        let g = Tensor::<1>::random([5], Distribution::Normal(1.0, 0.2), &d).require_grad();
        let b = Tensor::<1>::random([5], Distribution::Normal(0.0, 0.2), &d).require_grad();
        let w = Tensor::<4>::random([6, 5, 4, 3], Distribution::Normal(0.0, 1.0), &d);
        let reference =
            burn::tensor::module::batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5);
        let (y, mean, var) = batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5);
        let close = |a: Tensor<1>, b: Tensor<1>, what: &str| {
            let m = (a - b).abs().max().into_scalar::<f32>();
            assert!(m < 1e-5, "{what}: {m}");
        };
        close(
            y.clone().flatten(0, 3),
            reference.output.clone().flatten(0, 3),
            "output",
        );
        close(mean, reference.mean, "mean");
        close(var, reference.variance, "variance");
        let g1 = (y * w.clone()).sum().backward();
        let g0 = (reference.output * w).sum().backward();
        close(
            x.grad(&g1).unwrap().flatten(0, 3),
            x.grad(&g0).unwrap().flatten(0, 3),
            "input gradient",
        );
        close(g.grad(&g1).unwrap(), g.grad(&g0).unwrap(), "gamma gradient");
        close(b.grad(&g1).unwrap(), b.grad(&g0).unwrap(), "beta gradient");
    }

    /// The fused `flex` kernel (what `batch_norm_train` runs there unless `BYOL_CPU_KERNELS=burn`),
    /// called directly, against the tensor-operation form, without autodiff (the target network)
    /// and on [B, C] (the MLP heads), values and gradients.
    #[test]
    fn fused_flex_form_matches_the_tensor_operation_form() {
        let fused = |x: Tensor<4>, g: Tensor<1>, b: Tensor<1>| {
            byol_kernels::batch_norm::try_batch_norm_act(&x, &g, &b, 1e-5, None, false)
                .expect("the kernel takes f32 on flex")
        };
        let fused2 = |x: Tensor<2>, g: Tensor<1>, b: Tensor<1>| {
            byol_kernels::batch_norm::try_batch_norm_act(&x, &g, &b, 1e-5, None, false)
                .expect("the kernel takes f32 on flex")
        };
        let plain = Device::flex();
        let x = Tensor::<4>::random([6, 5, 4, 3], Distribution::Normal(0.7, 2.0), &plain);
        let g = Tensor::<1>::random([5], Distribution::Normal(1.0, 0.2), &plain);
        let b = Tensor::<1>::random([5], Distribution::Normal(0.0, 0.2), &plain);
        let max = |a: Tensor<1>, b: Tensor<1>| (a - b).abs().max().into_scalar::<f32>();
        let (y, m, v) = fused(x.clone(), g.clone(), b.clone());
        let (y0, m0, v0) = batch_norm_ops(x, g, b, 1e-5);
        assert!(max(y.flatten(0, 3), y0.flatten(0, 3)) < 1e-5);
        assert!(max(m, m0) < 1e-5 && max(v, v0) < 1e-5);

        let d = plain.autodiff();
        let x = Tensor::<2>::random([8, 7], Distribution::Normal(-0.3, 1.5), &d).require_grad();
        let g = Tensor::<1>::random([7], Distribution::Normal(1.0, 0.2), &d).require_grad();
        let b = Tensor::<1>::random([7], Distribution::Normal(0.0, 0.2), &d).require_grad();
        let w = Tensor::<2>::random([8, 7], Distribution::Normal(0.0, 1.0), &d);
        let (y, _, _) = fused2(x.clone(), g.clone(), b.clone());
        let (y0, _, _) = batch_norm_ops(x.clone(), g.clone(), b.clone(), 1e-5);
        assert!(max(y.clone().flatten(0, 1), y0.clone().flatten(0, 1)) < 1e-5);
        let g1 = (y * w.clone()).sum().backward();
        let g0 = (y0 * w).sum().backward();
        assert!(
            max(
                x.grad(&g1).unwrap().flatten(0, 1),
                x.grad(&g0).unwrap().flatten(0, 1)
            ) < 1e-5
        );
        assert!(max(g.grad(&g1).unwrap(), g.grad(&g0).unwrap()) < 1e-5);
        assert!(max(b.grad(&g1).unwrap(), b.grad(&g0).unwrap()) < 1e-5);
    }
}
