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

mod im2col;
pub mod winograd;

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

fn backward(
    x: &FlexTensor,
    w: &FlexTensor,
    dy: &FlexTensor,
    g: &Geometry,
    want_dx: bool,
    want_dw: bool,
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    let (xv, wv, dyv) = (values(x), values(w), values(dy));
    if want_dw && !want_dx && takes_winograd(g) {
        let sizes = winograd::Sizes {
            n: g.n,
            c: g.c,
            h: g.h,
            w: g.w,
            o: g.o,
        };
        return (
            None,
            Some(tensor(
                winograd::weight_grad(&xv, &dyv, sizes),
                [g.o, g.c, g.kh, g.kw],
            )),
        );
    }
    // For a stride-1 "same" convolution the input gradient is itself such a convolution, of dy
    // with the kernel transposed (O ↔ C) and flipped: the forward GEMM shape (C × O·kh·kw ·
    // O·kh·kw × P) runs faster than Wᵀ·dy (O·kh·kw·C rows, O deep) followed by col2im.
    if want_dx && g.same() && !g.pointwise() && g.kh == g.kw && g.pad * 2 + 1 == g.kh {
        let flipped = flip_transpose(&wv, g);
        let gt = Geometry {
            c: g.o,
            o: g.c,
            ..*g
        };
        let dx = tensor(forward_values(&dyv, &flipped, &gt), [g.n, g.c, g.h, g.w]);
        let (_, dw) = if want_dw {
            backward(x, w, dy, g, false, true)
        } else {
            (None, None)
        };
        return (Some(dx), dw);
    }
    let (k, p, gs) = (g.k(), g.p(), g.group());
    let (img_in, img_out) = (g.c * g.h * g.w, g.o * p);
    let groups = g.n.div_ceil(gs);
    let inner = inner_parallel(groups);
    let mut dx = vec![0f32; if want_dx { g.n * img_in } else { 0 }];
    let work = |dw: &mut Vec<f32>, gi: usize, dxchunk: Option<&mut [f32]>| {
        with_scratch(|s| {
            let n0 = gi * gs;
            let imgs = gs.min(g.n - n0);
            if imgs == 1 && !g.pointwise() {
                // One large image: a band of output rows at a time, so that its im2col block and
                // the block's input gradient stay in the core's L2 cache between the GEMMs.
                if want_dw && dw.is_empty() {
                    *dw = vec![0.0; g.o * k];
                }
                let band = (TILE_COLS / g.wo).max(1);
                let x = &xv[n0 * img_in..(n0 + 1) * img_in];
                let mut dxchunk = dxchunk;
                for r0 in (0..g.ho).step_by(band) {
                    let rows = r0..(r0 + band).min(g.ho);
                    let t = rows.len() * g.wo;
                    let dyt = (dyv[n0 * img_out + r0 * g.wo..].as_ptr(), 1, p as isize); // [O, t]
                    if want_dw {
                        s.col.resize(k * t, 0.0);
                        im2col(x, g, &mut s.col, t, 0, rows.clone());
                        // dW (as dWᵀ [K, O]) += dy_t [O, t] · col_tᵀ [t, K]
                        // SAFETY: dy_t reads rows r0.. of image n0's dy (O rows of stride P, t
                        // columns), col is [K, t] (resized above), dW is this run's own o·k buffer.
                        unsafe {
                            matmul(
                                g.o,
                                k,
                                t,
                                (dw.as_mut_ptr(), g.o as isize, 1),
                                dyt,
                                (s.col.as_ptr(), t as isize, 1),
                                true,
                                inner,
                            )
                        };
                    }
                    if let Some(dxchunk) = dxchunk.as_deref_mut() {
                        s.dcol.resize(k * t, 0.0);
                        let wt = (wv.as_ptr(), k as isize, 1); // Wᵀ [K, O]
                        // SAFETY: Wᵀ is `wv` [O, K] read transposed, dy_t as above, dcol [K, t]
                        // resized above and this thread's own.
                        unsafe {
                            matmul(
                                k,
                                t,
                                g.o,
                                (s.dcol.as_mut_ptr(), 1, t as isize),
                                wt,
                                dyt,
                                false,
                                inner,
                            )
                        };
                        col2im(&mut s.dcol, g, t, 0, rows, dxchunk);
                    }
                }
                return;
            }
            let ld = imgs * p;
            // dy of the group as [O, G·P].
            let dyg: (*const f32, isize, isize) = if imgs == 1 {
                (dyv[n0 * img_out..].as_ptr(), 1, p as isize)
            } else {
                s.dy.resize(g.o * ld, 0.0);
                for i in 0..imgs {
                    for oc in 0..g.o {
                        let src = (n0 + i) * img_out + oc * p;
                        s.dy[oc * ld + i * p..oc * ld + (i + 1) * p]
                            .copy_from_slice(&dyv[src..src + p]);
                    }
                }
                (s.dy.as_ptr(), 1, ld as isize)
            };
            if want_dw {
                let colp = if g.pointwise() && imgs == 1 {
                    xv[n0 * img_in..].as_ptr()
                } else {
                    s.col.resize(k * ld, 0.0);
                    for i in 0..imgs {
                        im2col(
                            &xv[(n0 + i) * img_in..(n0 + i + 1) * img_in],
                            g,
                            &mut s.col,
                            ld,
                            i * p,
                            0..g.ho,
                        );
                    }
                    s.col.as_ptr()
                };
                if dw.is_empty() {
                    *dw = vec![0.0; g.o * k];
                }
                // dW [O, K] += dy_g [O, G·P] · col_gᵀ [G·P, K], accumulated column-major (as dWᵀ
                // [K, O]), which the GEMM kernel runs ~3× faster than row-major for these shapes.
                // SAFETY: dy_g is [O, G·P] (the group's dy, or `s.dy` sized o·ld), col_g [K, G·P] in
                // `xv` or `s.col` (sized k·ld), dW this run's own o·k buffer.
                unsafe {
                    matmul(
                        g.o,
                        k,
                        ld,
                        (dw.as_mut_ptr(), g.o as isize, 1),
                        dyg,
                        (colp, ld as isize, 1),
                        true,
                        inner,
                    )
                };
            }
            if let Some(dxchunk) = dxchunk {
                let wt = (wv.as_ptr(), k as isize, 1); // Wᵀ [K, O]
                if g.pointwise() && imgs == 1 {
                    // SAFETY: Wᵀ [K, O] from `wv`, dy_g [O, P], and dx's chunk is this image's
                    // [C, P] = [K, P], which only this task writes.
                    unsafe {
                        matmul(
                            k,
                            p,
                            g.o,
                            (dxchunk.as_mut_ptr(), 1, p as isize),
                            wt,
                            dyg,
                            false,
                            inner,
                        )
                    };
                } else {
                    s.dcol.resize(k * ld, 0.0);
                    // SAFETY: Wᵀ [K, O] from `wv`, dy_g [O, G·P], dcol [K, G·P] resized above.
                    unsafe {
                        matmul(
                            k,
                            ld,
                            g.o,
                            (s.dcol.as_mut_ptr(), 1, ld as isize),
                            wt,
                            dyg,
                            false,
                            inner,
                        )
                    }; // [K, G·P]
                    for i in 0..imgs {
                        col2im(
                            &mut s.dcol,
                            g,
                            ld,
                            i * p,
                            0..g.ho,
                            &mut dxchunk[i * img_in..(i + 1) * img_in],
                        );
                    }
                }
            }
        })
    };
    let (runs, per_run) = run_split(groups, g.o * k);
    let run = |r: usize, dxrun: Option<&mut [f32]>| {
        let mut dw = Vec::new();
        let first = r * per_run;
        let last = ((r + 1) * per_run).min(groups);
        match dxrun {
            Some(dxrun) => {
                for (i, chunk) in dxrun.chunks_mut(gs * img_in).enumerate() {
                    work(&mut dw, first + i, Some(chunk));
                }
            }
            None => (first..last).for_each(|gi| work(&mut dw, gi, None)),
        }
        dw
    };
    let partial: Vec<Vec<f32>> = if want_dx {
        dx.par_chunks_mut(per_run * gs * img_in)
            .enumerate()
            .map(|(r, d)| run(r, Some(d)))
            .collect()
    } else {
        (0..runs).into_par_iter().map(|r| run(r, None)).collect()
    };
    let dx = want_dx.then(|| tensor(dx, [g.n, g.c, g.h, g.w]));
    let dw = want_dw.then(|| tensor(sum_transposed(partial, k, g.o), [g.o, g.c, g.kh, g.kw]));
    (dx, dw)
}

/// w [O, C, kh, kw] → [C, O, kh, kw] with both spatial axes reversed.
fn flip_transpose(w: &[f32], g: &Geometry) -> Vec<f32> {
    let kk = g.kh * g.kw;
    let mut out = vec![0f32; w.len()];
    out.par_chunks_mut(g.o * kk)
        .enumerate()
        .for_each(|(c, row)| {
            for o in 0..g.o {
                let src = &w[(o * g.c + c) * kk..(o * g.c + c + 1) * kk];
                for (d, s) in row[o * kk..(o + 1) * kk].iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            }
        });
    out
}

/// Σ of the partial weight gradients, each dWᵀ [K, O] (empty where a run had none), as dW
/// [O, K]: in parallel over 32-row blocks of dW, each reading 32 × 32 tiles of the partials.
fn sum_transposed(partial: Vec<Vec<f32>>, k: usize, o: usize) -> Vec<f32> {
    const B: usize = 32;
    let parts: Vec<&Vec<f32>> = partial.iter().filter(|p| !p.is_empty()).collect();
    let block = |blk: usize, rows: &mut [std::mem::MaybeUninit<f32>]| {
        let o0 = blk * B;
        let ob = rows.len() / k;
        let mut tile = [0f32; B * B];
        for r0 in (0..k).step_by(B) {
            let rb = B.min(k - r0);
            tile[..rb * B].fill(0.0);
            for part in &parts {
                for r in 0..rb {
                    let src = &part[(r0 + r) * o + o0..(r0 + r) * o + o0 + ob];
                    tile[r * B..r * B + ob]
                        .iter_mut()
                        .zip(src)
                        .for_each(|(t, v)| *t += v);
                }
            }
            for oc in 0..ob {
                for r in 0..rb {
                    rows[oc * k + r0 + r].write(tile[r * B + oc]);
                }
            }
        }
    };
    // SAFETY: each chunk is rows o0..o0+ob of dW; the tile loops write every (oc, r) of them.
    unsafe { written(o * k, B * k, block) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Device, Distribution};

    fn reference(x: Tensor<4>, w: Tensor<4>, stride: usize, pad: usize) -> Tensor<4> {
        conv2d(
            x,
            w,
            None,
            ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1),
        )
    }

    fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    /// Forward, input gradient and weight gradient against burn's convolution, for the shapes of
    /// the encoders (3×3 s1/s2, 1×1 s1/s2, 7×7 s2 stem), single images and groups of images.
    #[test]
    fn matches_burn_conv_values_and_gradients() {
        let device = Device::flex();
        let cases = [
            // n, c, h, o, k, stride, pad
            (3, 4, 9, 5, 3, 1, 1),
            (2, 3, 32, 8, 3, 1, 1),
            (5, 6, 8, 7, 3, 2, 1),
            (4, 6, 7, 9, 1, 1, 0),
            (3, 5, 8, 4, 1, 2, 0),
            (2, 3, 23, 4, 7, 2, 3),
            (20, 8, 4, 6, 3, 1, 1),
            (7, 16, 16, 16, 3, 1, 1),
            (3, 4, 1, 5, 3, 1, 1),
            (2, 3, 2, 4, 3, 1, 1),
            (2, 2, 2, 3, 7, 1, 3),
            // Winograd F(2×2, 3×3): odd sizes, a 1×1 map, several groups of images.
            (2, 16, 7, 20, 3, 1, 1),
            (3, 32, 4, 24, 3, 1, 1),
            (2, 16, 1, 16, 3, 1, 1),
            (9, 16, 32, 16, 3, 1, 1),
            (600, 16, 2, 17, 3, 1, 1),
        ];
        for (n, c, h, o, k, stride, pad) in cases {
            let x = Tensor::<4>::random([n, c, h, h], Distribution::Normal(0.0, 1.0), &device);
            let w = Tensor::<4>::random([o, c, k, k], Distribution::Normal(0.0, 0.3), &device);
            let ours = try_conv2d(&x, &w, stride, pad).expect("flex f32 takes this path");
            let want = reference(x.clone(), w.clone(), stride, pad);
            assert_eq!(ours.dims(), want.dims());
            let d = max_diff(ours, want.clone());
            assert!(d < 1e-5, "forward {n}×{c}×{h}² k{k} s{stride}: {d}");

            // Gradients of Σ y ⊙ r for a fixed random r.
            let r = Tensor::<4>::random(want.dims(), Distribution::Normal(0.0, 1.0), &device);
            let grads = |use_ours: bool| {
                let xa = x.clone().autodiff().require_grad();
                let wa = w.clone().autodiff().require_grad();
                let y = if use_ours {
                    try_conv2d(&xa, &wa, stride, pad).expect("autodiff flex f32 takes this path")
                } else {
                    reference(xa.clone(), wa.clone(), stride, pad)
                };
                let g = (y * r.clone().autodiff()).sum().backward();
                (xa.grad(&g).unwrap(), wa.grad(&g).unwrap())
            };
            let ((dx, dw), (dx_ref, dw_ref)) = (grads(true), grads(false));
            let ddx = max_diff(dx, dx_ref);
            let ddw = max_diff(dw, dw_ref);
            assert!(ddx < 1e-5, "dx {n}×{c}×{h}² k{k} s{stride}: {ddx}");
            assert!(ddw < 1e-5, "dw {n}×{c}×{h}² k{k} s{stride}: {ddw}");
        }
    }

    /// Non-contiguous inputs (transposed views) give burn's values: a single image through the
    /// im2col path, and a non-square map (odd height, even width) through the Winograd path.
    #[test]
    fn strided_inputs() {
        let device = Device::flex();
        for (n, c, h, w, o) in [(1, 4, 9, 7, 5), (3, 16, 8, 5, 18)] {
            let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device)
                .swap_dims(2, 3);
            let k = Tensor::<4>::random([o, c, 3, 3], Distribution::Normal(0.0, 0.3), &device);
            let ours = try_conv2d(&x, &k, 1, 1).unwrap();
            assert!(
                max_diff(ours, reference(x, k, 1, 1)) < 1e-5,
                "{n}×{c}×{h}×{w}"
            );
        }
    }

    /// Only the weight needs a gradient (the first convolution on the input views).
    #[test]
    fn weight_gradient_without_input_gradient() {
        let device = Device::flex();
        let x = Tensor::<4>::random([4, 3, 10, 10], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<4>::random([6, 3, 3, 3], Distribution::Normal(0.0, 0.3), &device);
        let xa = x.clone().autodiff();
        let wa = w.clone().autodiff().require_grad();
        let g = try_conv2d(&xa, &wa, 1, 1)
            .unwrap()
            .powi_scalar(2)
            .sum()
            .backward();
        let wr = w.autodiff().require_grad();
        let gr = reference(x.autodiff(), wr.clone(), 1, 1)
            .powi_scalar(2)
            .sum()
            .backward();
        assert!(max_diff(wa.grad(&g).unwrap(), wr.grad(&gr).unwrap()) < 1e-5);
    }

    /// Empty batches and channel-less tensors are left to burn's convolution.
    #[test]
    fn empty_tensors_are_not_taken() {
        let device = Device::flex();
        let w = Tensor::<4>::ones([4, 16, 3, 3], &device);
        assert!(try_conv2d(&Tensor::<4>::ones([0, 16, 8, 8], &device), &w, 1, 1).is_none());
        assert!(
            try_conv2d(
                &Tensor::<4>::ones([2, 0, 8, 8], &device),
                &Tensor::<4>::ones([4, 0, 3, 3], &device),
                1,
                1
            )
            .is_none()
        );
    }

    /// Low-precision tensors are left to burn's convolution.
    #[test]
    fn other_dtypes_are_not_taken() {
        let device = Device::flex();
        let x = Tensor::<4>::ones([1, 2, 4, 4], &device).cast(burn::tensor::FloatDType::BF16);
        let w = Tensor::<4>::ones([2, 2, 3, 3], &device).cast(burn::tensor::FloatDType::BF16);
        assert!(try_conv2d(&x, &w, 1, 1).is_none());
    }
}
