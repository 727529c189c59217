//! Batch normalisation whose mode is the layer's own training flag, independent of the device.
//!
//! burn's `BatchNorm::forward` uses batch statistics only on an autodiff device. BYOL's target
//! network runs without autodiff (it gets no gradient) but must still use batch statistics and
//! update its own running statistics (spec: "the target runs BN in training mode too"), so the
//! networks call this function instead.

use burn::nn::BatchNorm;
use burn::tensor::Tensor;

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
    let out = burn::tensor::module::batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon);
    let m = bn.momentum;
    let mean = bn.running_mean.value_sync().mul_scalar(1.0 - m).add(out.mean.detach().mul_scalar(m));
    let var = bn.running_var.value_sync().mul_scalar(1.0 - m).add(out.variance.detach().mul_scalar(m));
    bn.running_mean.update(mean.detach());
    bn.running_var.update(var.detach());
    out.output
}
