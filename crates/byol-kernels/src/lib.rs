//! CPU kernels for burn's `flex` backend, as used by the BYOL encoder: the fast path under the
//! model, never required by it (the `byol` crate picks these or burn's own operations in one
//! place, `byol::model::kernels`, behind its default feature `kernels`).
//!
//! Each kernel takes burn tensors and returns `None` when it does not apply (another backend,
//! another dtype, a shape it does not handle), so that the caller falls back to burn. On `flex`
//! in f32, with or without autodiff, it runs as one node with its own backward pass:
//!
//! - [`conv::try_conv2d`]: convolution as im2col + GEMM ([`conv`]), or Winograd's F(2×2, 3×3)
//!   for 3×3 stride-1 convolutions with enough channels ([`conv::winograd`]);
//! - [`batch_norm::try_batch_norm_act`]: training-mode batch norm with the residual add and
//!   ReLU of a ResNet block's tail;
//! - [`max_pool::try_max_pool2d`]: the ImageNet stem's 3×3 stride-2 max-pool.
//!
//! Every kernel agrees with burn's operation to f32 rounding (the tests in each module), and
//! gives the same bits whatever the thread count (`common`'s fixed reduction split).
//! Dependencies run one way: `common`, `gemm`, `simd` ← `conv::winograd` ← `conv`;
//! `batch_norm` and `max_pool` use `common` and `simd` only.

pub mod alloc;
pub mod batch_norm;
mod common;
pub mod conv;
mod gemm;
pub mod max_pool;
mod simd;
pub use simd::level as simd_level;
