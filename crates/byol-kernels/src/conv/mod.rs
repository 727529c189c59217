//! The encoder's f32 convolutions on the `flex` CPU backend: im2col + GEMM for a group of images
//! at a time, forward and backward, with its own autodiff node.
//!
//! burn's `flex` convolution computes the weight gradient as a convolution of the input with the
//! output gradient (a 32×32 "kernel" for a CIFAR layer) and the input gradient as a transposed
//! convolution; measured on the 2-core benchmark machine that ran at 60–100 GFLOP/s for the
//! ResNet-18 CIFAR layers, where the GEMM underneath reaches 300–450 (docs/BENCHMARKS.md). Here
//! all three products are plain GEMMs on an im2col matrix:
//!
//! - forward      y\[n\]  = W · col(x\[n\])           W: \[O, K\], col: \[K, P\], K = C·kh·kw, P = Ho·Wo
//! - input grad   dx\[n\] = col⁻¹(Wᵀ · dy\[n\])       col⁻¹ adds each patch entry back (col2im);
//!   for a stride-1 "same" convolution, dx = dy ⊛ W' (W' = W with O ↔ C and both spatial axes
//!   reversed), the forward form, which runs faster
//! - weight grad  dW    = Σₙ dy\[n\] · col(x\[n\])ᵀ
//!
//! For small feature maps (deep layers) `G` images share one im2col matrix [K, G·P] so that each
//! GEMM has enough columns. 3×3, stride-1, padding-1 convolutions with at least
//! `WINOGRAD_MIN_CHANNELS` input channels (most of a ResNet's work) take Winograd's F(2×2, 3×3)
//! instead, for all three products ([`winograd`]). The path is taken for f32 tensors on
//! `flex` (with or without autodiff), groups = 1, dilation = 1 and symmetric padding, which is every encoder convolution;
//! anything else, and every other backend, uses burn's `conv2d`. Values agree with burn's to f32
//! rounding (tested in this module).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use crate::common::{Scratch, run_split, tensor, values, with_scratch, written};
use crate::gemm::matmul;
use im2col::{Geometry, col2im, im2col};

mod backward;
mod im2col;
pub mod winograd;

use backward::backward;

/// `x ⊛ weight` (stride, symmetric zero padding, no bias) through this module when `x` and
/// `weight` are f32 `flex` tensors, both tracked by autodiff or both not; `None` otherwise.
pub fn try_conv2d(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    stride: usize,
    pad: usize,
) -> Option<Tensor<4>> {
    if x.dtype() != DType::F32 || weight.dtype() != DType::F32 {
        return None;
    }
    let [n, c, h, w] = x.dims();
    let [o, cw, kh, kw] = weight.dims();
    if n == 0 || c == 0 || o == 0 || cw != c || h + 2 * pad < kh || w + 2 * pad < kw || stride == 0
    {
        return None;
    }
    let g = Geometry {
        n,
        c,
        h,
        w,
        o,
        kh,
        kw,
        stride,
        pad,
        ho: (h + 2 * pad - kh) / stride + 1,
        wo: (w + 2 * pad - kw) / stride + 1,
    };
    if let (Ok(xp), Ok(wp)) = (
        x.clone().try_into_primitive::<Autodiff<Flex>>(),
        weight.clone().try_into_primitive::<Autodiff<Flex>>(),
    ) {
        let out = match ConvBackward
            .prepare::<NoCheckpointing>([xp.node(), wp.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (xc, wc) = (
                    xp.primitive().to_contiguous(),
                    wp.primitive().to_contiguous(),
                );
                let y = forward(&xc, &wc, &g);
                prep.finish((xc, wc, g), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(xp.primitive(), wp.primitive(), &g)),
        };
        return Some(Tensor::from_primitive::<Autodiff<Flex>>(out));
    }
    if let (Ok(xp), Ok(wp)) = (
        x.clone().try_into_primitive::<Flex>(),
        weight.clone().try_into_primitive::<Flex>(),
    ) {
        return Some(Tensor::from_primitive::<Flex>(forward(&xp, &wp, &g)));
    }
    None
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 2> for ConvBackward {
    type State = (FlexTensor, FlexTensor, Geometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, w, g) = ops.state;
        let (dx, dw) = backward(&x, &w, &dy, &g, node_x.is_some(), node_w.is_some());
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, dx);
        }
        if let (Some(node), Some(dw)) = (node_w, dw) {
            grads.register::<Flex>(node.id, dw);
        }
    }
}

/// Output columns per band of rows when one image is processed in bands (see [`backward`]).
const TILE_COLS: usize = 256;

/// Input channels from which 3×3 convolutions use [`winograd`].
const WINOGRAD_MIN_CHANNELS: usize = 16;

/// A 3×3, stride-1, padding-1 convolution with enough input channels for the 16 GEMMs of
/// [`winograd`] to run at speed.
fn takes_winograd(g: &Geometry) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == 1 && g.pad == 1 && g.c >= WINOGRAD_MIN_CHANNELS
}

/// Whether one GEMM per group should itself be split over threads (too few groups to share out).
fn inner_parallel(groups: usize) -> bool {
    groups < 2 * rayon::current_num_threads()
}

fn forward(x: &FlexTensor, w: &FlexTensor, g: &Geometry) -> FlexTensor {
    tensor(
        forward_values(&values(x), &values(w), g),
        [g.n, g.o, g.ho, g.wo],
    )
}

/// The forward convolution on row-major values: x [N, C, H, W], w [O, C, kh, kw] → [N, O, Ho, Wo].
fn forward_values(xv: &[f32], wv: &[f32], g: &Geometry) -> Vec<f32> {
    if takes_winograd(g) {
        return winograd::conv3x3(
            xv,
            wv,
            winograd::Sizes {
                n: g.n,
                c: g.c,
                h: g.h,
                w: g.w,
                o: g.o,
            },
        );
    }
    let (k, p, gs) = (g.k(), g.p(), g.group());
    let (img_in, img_out) = (g.c * g.h * g.w, g.o * p);
    let groups = g.n.div_ceil(gs);
    let inner = inner_parallel(groups);
    let group = |gi: usize, ychunk: &mut [std::mem::MaybeUninit<f32>]| {
        with_scratch(|s| {
            let Scratch { col, dy: tmp, .. } = s;
            let imgs = ychunk.len() / img_out;
            let yp = ychunk.as_mut_ptr() as *mut f32;
            let x0 = gi * gs * img_in;
            let ld = imgs * p;
            let lhs = (wv.as_ptr(), 1, k as isize); // W [O, K]
            let rhs = if g.pointwise() && imgs == 1 {
                (xv[x0..].as_ptr(), 1, p as isize) // the image itself is [C, P]
            } else {
                col.resize(k * ld, 0.0);
                for i in 0..imgs {
                    im2col(
                        &xv[x0 + i * img_in..x0 + (i + 1) * img_in],
                        g,
                        col,
                        ld,
                        i * p,
                        0..g.ho,
                    );
                }
                (col.as_ptr(), 1, ld as isize) // [K, G·P]
            };
            if imgs == 1 {
                // SAFETY: W is [O, K] in `wv`, the rhs [K, P] lies in `xv` or `col` (sized k·ld
                // above), and y's chunk holds this image's [O, P], written only here.
                unsafe { matmul(g.o, p, k, (yp, 1, p as isize), lhs, rhs, false, inner) };
            } else {
                tmp.resize(g.o * ld, 0.0);
                // SAFETY: W [O, K] in `wv`, col [K, G·P] sized k·ld above, `tmp` sized o·ld.
                unsafe {
                    matmul(
                        g.o,
                        ld,
                        k,
                        (tmp.as_mut_ptr(), 1, ld as isize),
                        lhs,
                        rhs,
                        false,
                        inner,
                    )
                }; // [O, G·P]
                for i in 0..imgs {
                    for oc in 0..g.o {
                        let src = &tmp[oc * ld + i * p..oc * ld + (i + 1) * p];
                        // SAFETY: image i's row oc of y lies inside this group's chunk
                        // (imgs·img_out values), which `tmp` does not overlap.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                src.as_ptr(),
                                yp.add(i * img_out + oc * p),
                                p,
                            )
                        };
                    }
                }
            }
        })
    };
    // [N, O, Ho·Wo], a group of images per chunk. SAFETY: `group` writes its chunk whole, by the
    // GEMM (which does not read its destination) or by the copies from `tmp`.
    unsafe { written(g.n * img_out, gs * img_out, group) }
}

#[cfg(test)]
mod tests;
