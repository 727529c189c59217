//! The one place that chooses between the CPU kernels of `byol-kernels` and burn's own
//! operations. With the cargo feature `kernels` (on by default) each function below tries the
//! kernel first; the kernel declines (another backend, dtype or shape) and burn's operation runs.
//! Without the feature every layer is burn's operation on every backend. Both give the same
//! values to f32 rounding (the kernels' tests compare them with burn's).

#[cfg(feature = "kernels")]
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::Tensor;

/// (output, batch mean \[C\], biased batch variance \[C\]) of a training-mode batch norm.
pub type BatchNormOutput<const D: usize> = (Tensor<D>, Tensor<1>, Tensor<1>);

/// `c(x)` for f32 `x`: the kernel's convolution when `c` has its shape (square stride, symmetric
/// padding, no dilation, groups or bias), else burn's `Conv2d::forward`.
pub fn conv2d(c: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "kernels")]
    {
        let pad = match c.padding {
            PaddingConfig2d::Explicit(top, left, bottom, right) if top == left && left == bottom && bottom == right => Some(top),
            PaddingConfig2d::Valid => Some(0),
            _ => None,
        };
        if let Some(pad) = pad
            && c.stride[0] == c.stride[1]
            && c.dilation == [1, 1]
            && c.groups == 1
            && c.bias.is_none()
            && let Some(y) = byol_kernels::conv::try_conv2d(&x, &c.weight.val(), c.stride[0], pad)
        {
            return y;
        }
    }
    c.forward(x)
}

/// The fused training-mode `relu?(batch_norm(x) + residual?)` when a kernel takes it; `None`
/// sends the caller to its tensor-operation form.
pub fn fused_batch_norm_act<const D: usize>(
    x: &Tensor<D>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    epsilon: f64,
    residual: Option<&Tensor<D>>,
    relu: bool,
) -> Option<BatchNormOutput<D>> {
    #[cfg(feature = "kernels")]
    return byol_kernels::batch_norm::try_batch_norm_act(x, gamma, beta, epsilon, residual, relu);
    #[cfg(not(feature = "kernels"))]
    {
        let _ = (x, gamma, beta, epsilon, residual, relu);
        None
    }
}

/// `pool(x)`: the kernel's max-pool when it takes it, else burn's `MaxPool2d::forward`.
pub fn max_pool2d(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "kernels")]
    if let Some(y) = byol_kernels::max_pool::try_max_pool2d(pool, &x) {
        return y;
    }
    pool.forward(x)
}
