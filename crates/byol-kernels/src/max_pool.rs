//! The ImageNet stem's max-pooling (3×3 window, stride 2, padding 1) on the `flex` CPU backend
//! for f32 tensors, as one autodiff node. burn's `flex` pooling is a generic 3-D loop that kept
//! the index of every maximum: 28 ms forward and as much backward for one ResNet-50 view of 8
//! images at 224 px (64 × 112 × 112 per image), ≈ 8 % of the training step.
//!
//! Forward: the window maximum as a row maximum (3 columns, stride 2) then a column maximum
//! (3 rows), per plane, in parallel over planes; a NaN in the window gives NaN, as in burn.
//! Backward: the gradient of each output goes to the first position of its window (in row-major
//! order) that holds the maximum, or to the last NaN when the maximum is NaN: the position
//! burn's and PyTorch's indices record. It is found again from the input and the output instead
//! of being stored. Equal to burn's `max_pool2d` and its gradient (tested, ties included).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::PaddingConfig2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::{DType, Tensor};
use std::mem::MaybeUninit;

use crate::common::{tensor, values, written};
use crate::simd::multiversion;

/// Plane sizes: input H × W, output Ho × Wo.
#[derive(Debug, Clone, Copy)]
struct Plane {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

/// `pool(x)` when `pool` is the stem's 3×3 / stride 2 / padding 1 max-pool (no dilation, floor
/// rounding) and `x` an f32 `flex` tensor (with or without autodiff); `None` otherwise.
pub fn try_max_pool2d(pool: &MaxPool2d, x: &Tensor<4>) -> Option<Tensor<4>> {
    let stem = pool.kernel_size == [3, 3]
        && pool.stride == [2, 2]
        && pool.padding == PaddingConfig2d::Explicit(1, 1, 1, 1)
        && pool.dilation == [1, 1]
        && !pool.ceil_mode;
    if !stem || x.dtype() != DType::F32 {
        return None;
    }
    let [n, c, h, w] = x.dims();
    if n * c * h * w == 0 {
        return None;
    }
    let p = Plane {
        h,
        w,
        ho: (h - 1) / 2 + 1,
        wo: (w - 1) / 2 + 1,
    };
    let shape = [n, c, p.ho, p.wo];
    if let Ok(xp) = x.clone().try_into_primitive::<Autodiff<Flex>>() {
        let out = match PoolBackward
            .prepare::<NoCheckpointing>([xp.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let xc = xp.primitive().to_contiguous();
                let y = tensor(forward(&values(&xc), p), shape);
                prep.finish((xc, y.clone(), p, [n, c, h, w]), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(tensor(forward(&values(xp.primitive()), p), shape))
            }
        };
        return Some(Tensor::from_primitive::<Autodiff<Flex>>(out));
    }
    let xp = x.clone().try_into_primitive::<Flex>().ok()?;
    Some(Tensor::from_primitive::<Flex>(tensor(
        forward(&values(&xp), p),
        shape,
    )))
}

/// NaN-propagating maximum (`b` wins when larger or NaN).
#[inline(always)]
fn max_nan(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() { b } else { a }
}

fn forward(x: &[f32], p: Plane) -> Vec<f32> {
    let planes = x.len() / (p.h * p.w);
    let out_len = p.ho * p.wo;
    // SAFETY: `pool_plane` writes every value of its plane.
    unsafe {
        written(planes * out_len, out_len, |i, y| {
            let mut rows = vec![0f32; p.h * p.wo];
            pool_plane(&x[i * p.h * p.w..(i + 1) * p.h * p.w], p, &mut rows, y)
        })
    }
}

multiversion! {
/// One plane: `rows` [H, Wo] = the maximum over columns 2·ow − 1 ..= 2·ow + 1 of each row, then
/// y [Ho, Wo] = the maximum over rows 2·oh − 1 ..= 2·oh + 1 of `rows`.
fn pool_plane(x: &[f32], p: Plane, rows: &mut [f32], y: &mut [MaybeUninit<f32>]) {
    for r in 0..p.h {
        let (src, dst) = (&x[r * p.w..(r + 1) * p.w], &mut rows[r * p.wo..(r + 1) * p.wo]);
        for (ow, d) in dst.iter_mut().enumerate() {
            let c = 2 * ow;
            let mut m = if c >= 1 { src[c - 1] } else { f32::NEG_INFINITY };
            m = max_nan(m, src[c]);
            if c + 1 < p.w {
                m = max_nan(m, src[c + 1]);
            }
            *d = m;
        }
    }
    for oh in 0..p.ho {
        let r = 2 * oh;
        let mid = &rows[r * p.wo..(r + 1) * p.wo];
        let out = &mut y[oh * p.wo..(oh + 1) * p.wo];
        for (ow, o) in out.iter_mut().enumerate() {
            let mut m = if r >= 1 { rows[(r - 1) * p.wo + ow] } else { f32::NEG_INFINITY };
            m = max_nan(m, mid[ow]);
            if r + 1 < p.h {
                m = max_nan(m, rows[(r + 1) * p.wo + ow]);
            }
            o.write(m);
        }
    }
}
}

/// dx of one plane: each output's gradient added at the position of its window's maximum.
fn backward_plane(x: &[f32], y: &[f32], dy: &[f32], p: Plane, dx: &mut [MaybeUninit<f32>]) {
    for d in dx.iter_mut() {
        d.write(0.0);
    }
    // SAFETY: every element was just written.
    let dx = unsafe { &mut *(dx as *mut [MaybeUninit<f32>] as *mut [f32]) };
    for oh in 0..p.ho {
        for ow in 0..p.wo {
            let m = y[oh * p.wo + ow];
            let mut at = None;
            'window: for ih in (2 * oh).saturating_sub(1)..(2 * oh + 2).min(p.h) {
                for iw in (2 * ow).saturating_sub(1)..(2 * ow + 2).min(p.w) {
                    let v = x[ih * p.w + iw];
                    if m.is_nan() {
                        if v.is_nan() {
                            at = Some(ih * p.w + iw); // the last NaN
                        }
                    } else if v == m {
                        at = Some(ih * p.w + iw); // the first maximum
                        break 'window;
                    }
                }
            }
            if let Some(i) = at {
                dx[i] += dy[oh * p.wo + ow];
            }
        }
    }
}

#[derive(Debug)]
struct PoolBackward;

impl Backward<Flex, 1> for PoolBackward {
    type State = (FlexTensor, FlexTensor, Plane, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let Some(node) = node else { return };
        let (x, y, p, dims) = ops.state;
        let (xv, yv, dyv) = (values(&x), values(&y), values(&dy));
        let (plane_in, plane_out) = (p.h * p.w, p.ho * p.wo);
        // SAFETY: `backward_plane` writes every value of its plane.
        let dx = unsafe {
            written(xv.len(), plane_in, |i, d| {
                let out = i * plane_out..(i + 1) * plane_out;
                backward_plane(
                    &xv[i * plane_in..(i + 1) * plane_in],
                    &yv[out.clone()],
                    &dyv[out],
                    p,
                    d,
                )
            })
        };
        grads.register::<Flex>(node.id, tensor(dx, dims));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::{Device, Distribution};

    fn stem_pool() -> MaxPool2d {
        MaxPool2dConfig::new([3, 3])
            .with_strides([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init()
    }

    fn reference(x: Tensor<4>) -> Tensor<4> {
        stem_pool().forward(x)
    }

    fn ours(x: &Tensor<4>) -> Option<Tensor<4>> {
        try_max_pool2d(&stem_pool(), x)
    }

    /// Other pools are left to burn.
    #[test]
    fn other_pools_are_not_taken() {
        let x = Tensor::<4>::ones([1, 1, 8, 8], &Device::flex());
        assert!(try_max_pool2d(&MaxPool2dConfig::new([2, 2]).init(), &x).is_none());
        assert!(
            try_max_pool2d(
                &MaxPool2dConfig::new([3, 3])
                    .with_strides([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_ceil_mode(true)
                    .init(),
                &x
            )
            .is_none()
        );
    }

    /// Values and gradients against burn's max-pool: even and odd sizes, and inputs rounded to
    /// a few levels so that most windows hold ties (as after a ReLU).
    #[test]
    fn matches_burn_max_pool_and_its_gradient() {
        let device = Device::flex();
        for (n, c, h, w, ties) in [
            (2, 3, 8, 8, false),
            (1, 2, 7, 9, false),
            (3, 4, 11, 6, true),
            (2, 2, 1, 1, false),
            (1, 1, 2, 3, true),
        ] {
            let mut x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
            if ties {
                x = x.round().clamp_min(0.0);
            }
            let got = ours(&x).expect("flex f32 takes this path");
            let want = reference(x.clone());
            assert_eq!(got.dims(), want.dims());
            assert_eq!(
                got.to_data().try_to_vec::<f32>().unwrap(),
                want.to_data().try_to_vec::<f32>().unwrap(),
                "values {n}×{c}×{h}×{w}"
            );
            let r = Tensor::<4>::random(want.dims(), Distribution::Normal(0.0, 1.0), &device);
            let grad = |use_ours: bool| {
                let xa = x.clone().autodiff().require_grad();
                let y = if use_ours {
                    ours(&xa).unwrap()
                } else {
                    reference(xa.clone())
                };
                let g = (y * r.clone().autodiff()).sum().backward();
                xa.grad(&g).unwrap().to_data().try_to_vec::<f32>().unwrap()
            };
            let (a, b) = (grad(true), grad(false));
            let d = a
                .iter()
                .zip(&b)
                .map(|(u, v)| (u - v).abs())
                .fold(0f32, f32::max);
            assert!(d < 1e-6, "dx {n}×{c}×{h}×{w}: {d}");
        }
    }

    /// A NaN in a window gives NaN, as burn's pooling does.
    #[test]
    fn nan_propagates() {
        let device = Device::flex();
        let mut v = vec![1.0f32; 16];
        v[5] = f32::NAN;
        let x = Tensor::<4>::from_data(burn::tensor::TensorData::new(v, [1, 1, 4, 4]), &device);
        let got = ours(&x).unwrap().to_data().try_to_vec::<f32>().unwrap();
        let want = reference(x).to_data().try_to_vec::<f32>().unwrap();
        assert_eq!(
            got.iter().map(|v| v.is_nan()).collect::<Vec<_>>(),
            want.iter().map(|v| v.is_nan()).collect::<Vec<_>>()
        );
        assert!(got[0].is_nan());
    }
}
