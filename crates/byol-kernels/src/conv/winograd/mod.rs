//! 3×3, stride-1, padding-1 convolutions on f32 values by Winograd's minimal filtering algorithm
//! F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016).
//!
//! Each 2×2 block of output ("tile") is computed from the 4×4 block of input around it:
//!
//! ```text
//! Y = Aᵀ [ Σ_c (G g G ᵀ) ⊙ (Bᵀ d B) ] A      g: 3×3 kernel, d: 4×4 input tile
//! ```
//!
//! so the sum over input channels becomes 16 independent GEMMs, one per position (ξ, ν) of the
//! 4×4 transformed tile: M_ξν [O, T] = U_ξν [O, C] · V_ξν [C, T] over the T tiles of a group of
//! images. That is 16·O·C multiply-adds per tile of 4 outputs instead of 36·O·C, 2.25× fewer,
//! and the transformed input V is 4× the input, where an im2col matrix is 9×. The transform
//! matrices hold only 0, ±1 and ±½, so their rounding error is that of a few additions: values
//! agree with the direct convolution to f32 rounding (tested in `conv`, through which every
//! use goes).
//!
//! The input gradient is this same convolution of dy with the flipped, transposed kernel (see
//! `conv`); the weight gradient goes through the same identity (`weight_grad`).
//!
//! Memory layouts (all row-major): U \[O\]\[16\]\[C\], V \[C\]\[16\]\[T\], M \[O\]\[16\]\[T\], and for the weight
//! gradient dM \[T\]\[16\]\[O\] and dU \[16\]\[C\]\[O\]; the GEMM of position ξν reads and writes its slices
//! through strides.

use crate::common::{Scratch, run_split, with_scratch};
use crate::gemm::matmul;
use crate::simd::multiversion;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use transforms::{
    transform_input, transform_output, transform_output_grad, transform_weights, transpose,
};

mod transforms;

/// The sizes of one convolution: x [N, C, H, W] ⊛ w [O, C, 3, 3] → y [N, O, H, W].
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
}

/// Tiles (output columns of the 16 GEMMs) per group of images: enough for the GEMM kernel to run
/// at speed, few enough that a group's transformed input and output stay near the cores.
const GROUP_TILES: usize = 256;

/// Positions of the transformed 4×4 tile.
const P: usize = 16;

/// `Send`/`Sync` wrapper for a base pointer whose disjoint parts are written by different tasks.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: the pointer is only dereferenced inside `unsafe` blocks whose tasks write disjoint
// ranges of the buffer it points into, which outlives the parallel loop that shares it.
unsafe impl Send for Shared {}
// SAFETY: as for `Send`; no two tasks access the same element.
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer. A closure that calls this captures the whole `Shared` (which is `Sync`),
    /// not its raw-pointer field (which is not).
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// y = x ⊛ w (3×3, stride 1, zero padding 1, no bias), row-major values.
pub(super) fn conv3x3(x: &[f32], w: &[f32], s: Sizes) -> Vec<f32> {
    let per_img = s.h.div_ceil(2) * s.w.div_ceil(2);
    let gs = (GROUP_TILES / per_img).clamp(1, s.n.max(1));
    let groups = s.n.div_ceil(gs);
    let u = transform_weights(w, s.o, s.c); // [O][16][C]
    let (img_in, img_out) = (s.c * s.h * s.w, s.o * s.h * s.w);
    let len = s.n * img_out;
    let mut y: Vec<f32> = Vec::with_capacity(len);
    let group = |gi: usize, ychunk: &mut [MaybeUninit<f32>], inner: bool| {
        let imgs = ychunk.len() / img_out;
        let xg = &x[gi * gs * img_in..(gi * gs + imgs) * img_in];
        with_scratch(
            |Scratch {
                 col: v, dcol: m, ..
             }| group_conv(xg, &u, ychunk, imgs, per_img, s, v, m, inner),
        );
    };
    // Many groups: one per task, each on one thread with its own buffers. Few: one at a time,
    // each phase split over the threads.
    if groups >= 2 * rayon::current_num_threads() {
        y.spare_capacity_mut()[..len]
            .par_chunks_mut(gs * img_out)
            .enumerate()
            .for_each(|(gi, yc)| group(gi, yc, false));
    } else {
        y.spare_capacity_mut()[..len]
            .chunks_mut(gs * img_out)
            .enumerate()
            .for_each(|(gi, yc)| group(gi, yc, true));
    }
    // SAFETY: the groups cover all `len` values, and each writes every value of its chunk
    // (`transform_output` writes every position of each of its planes).
    unsafe { y.set_len(len) };
    y
}

/// Tiles per group of images in [`weight_grad`] (the depth of its GEMMs).
const DW_GROUP_TILES: usize = 256;

/// dW [O, C, 3, 3] of `y = x ⊛ w` from x [N, C, H, W] and dy [N, O, H, W].
///
/// Through the identity of [`conv3x3`]: with U = G g Gᵀ and M = Σ_c U ⊙ V per tile, the
/// gradient of U is Σ_tiles (A dY Aᵀ) ⊙ V: 16 GEMMs dU_ξν [O, C] = dM_ξν [O, T] · V_ξν [C, T]ᵀ,
/// then dW = Gᵀ dU G. dM is laid out [T][16][O] (each image's dy transposed to [H·W, O] first,
/// then transformed along O-vectors) so that both GEMM operands are in the layout the GEMM
/// kernel packs fastest; with dM as [O][16][T] the whole weight gradient ran ≈ 2× slower
/// (64 channels at 32 × 32, batch 128: 54 ms against 21–25).
/// The groups of images are cut into runs as in `conv` ([`run_split`]): each sums its own dU
/// in order and the runs are added in order, so the result does not depend on the thread count
/// or on scheduling.
pub(super) fn weight_grad(x: &[f32], dy: &[f32], s: Sizes) -> Vec<f32> {
    let per_img = s.h.div_ceil(2) * s.w.div_ceil(2);
    let gs = (DW_GROUP_TILES / per_img).clamp(1, s.n.max(1));
    let groups = s.n.div_ceil(gs);
    let du_len = P * s.c * s.o;
    let (runs, per_run) = run_split(groups, du_len);
    let (img_in, img_out, hw) = (s.c * s.h * s.w, s.o * s.h * s.w, s.h * s.w);
    let partial: Vec<Vec<f32>> = (0..runs)
        .into_par_iter()
        .map(|r| {
            // dU [16][C][O]: each position's [O, C] block column-major.
            let mut du = vec![0f32; du_len];
            with_scratch(
                |Scratch {
                     col: v, dcol: md, ..
                 }| {
                    let mut scratch = PLANE_SCRATCH.take();
                    for gi in r * per_run..((r + 1) * per_run).min(groups) {
                        let n0 = gi * gs;
                        let imgs = gs.min(s.n - n0);
                        let t = imgs * per_img;
                        v.resize(s.c * P * t, 0.0);
                        md.resize(t * P * s.o, 0.0);
                        for (c, vc) in v.chunks_mut(P * t).enumerate() {
                            for i in 0..imgs {
                                let plane = &x
                                    [(n0 + i) * img_in + c * hw..(n0 + i) * img_in + (c + 1) * hw];
                                transform_input(plane, s.h, s.w, &mut scratch, vc, t, i * per_img);
                            }
                        }
                        for (i, mi) in md.chunks_mut(per_img * P * s.o).enumerate() {
                            transform_output_grad(
                                &dy[(n0 + i) * img_out..(n0 + i + 1) * img_out],
                                s.h,
                                s.w,
                                s.o,
                                &mut scratch,
                                mi,
                            );
                        }
                        for k in 0..P {
                            // dU_k [O, C] (column-major) += dM_k [O, T] (column-major) · V_k [C, T]ᵀ.
                            // SAFETY: in-bounds blocks of `du`, `md` and `v`, as laid out above.
                            unsafe {
                                matmul(
                                    s.o,
                                    s.c,
                                    t,
                                    (du.as_mut_ptr().add(k * s.c * s.o), s.o as isize, 1),
                                    (md.as_ptr().add(k * s.o), (P * s.o) as isize, 1),
                                    (v.as_ptr().add(k * t), (P * t) as isize, 1),
                                    true,
                                    false,
                                )
                            }
                        }
                    }
                    PLANE_SCRATCH.set(scratch);
                },
            );
            du
        })
        .collect();
    // Σ over runs, in run order, then each position's block transposed to [O][C] (blocked), so
    // that the transform below reads 16 contiguous runs per output channel.
    let (c, o) = (s.c, s.o);
    let mut parts = partial.into_iter();
    let mut total = parts.next().unwrap_or_else(|| vec![0f32; du_len]);
    let rest: Vec<Vec<f32>> = parts.collect();
    total
        .par_chunks_mut(c * o)
        .enumerate()
        .for_each(|(k, blk)| {
            for part in &rest {
                blk.iter_mut()
                    .zip(&part[k * c * o..(k + 1) * c * o])
                    .for_each(|(d, v)| *d += v);
            }
        });
    let mut du = vec![0f32; du_len]; // [16][O][C]
    du.par_chunks_mut(c * o)
        .zip(total.par_chunks(c * o))
        .for_each(|(dst, src)| transpose(src, c, o, dst));
    let mut dw = vec![0f32; o * c * 9];
    dw.par_chunks_mut(c * 9).enumerate().for_each(|(oc, dwo)| {
        let row = |k: usize| &du[(k * o + oc) * c..(k * o + oc + 1) * c];
        for (ci, g) in dwo.chunks_exact_mut(9).enumerate() {
            let d: [f32; P] = std::array::from_fn(|k| row(k)[ci]);
            // Gᵀ d G with Gᵀ = [[1, ½, ½, 0], [0, ½, −½, 0], [0, ½, ½, 1]]: columns, then rows.
            let mut e = [[0f32; 4]; 3];
            for nu in 0..4 {
                let (d0, d1, d2, d3) = (d[nu], d[4 + nu], d[8 + nu], d[12 + nu]);
                e[0][nu] = d0 + 0.5 * (d1 + d2);
                e[1][nu] = 0.5 * (d1 - d2);
                e[2][nu] = 0.5 * (d1 + d2) + d3;
            }
            for (i, ei) in e.iter().enumerate() {
                g[i * 3] = ei[0] + 0.5 * (ei[1] + ei[2]);
                g[i * 3 + 1] = 0.5 * (ei[1] - ei[2]);
                g[i * 3 + 2] = 0.5 * (ei[1] + ei[2]) + ei[3];
            }
        }
    });
    dw
}

thread_local! {
    /// Scratch of the per-plane transforms, kept between calls (not allocated per plane). Apart
    /// from `conv`'s [`Scratch`]: the transforms run as parallel tasks inside a call that
    /// holds that one, and a task on the same thread would otherwise find it taken.
    static PLANE_SCRATCH: std::cell::Cell<Vec<f32>> = std::cell::Cell::default();
}

/// Runs `f(i, chunk)` over the `size`-long chunks of `data`, in parallel when `par`.
fn chunks<T: Send + Sync>(
    par: bool,
    data: &mut [T],
    size: usize,
    f: impl Fn(usize, &mut [T]) + Send + Sync,
) {
    if par {
        data.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        data.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// One group of `imgs` images: xg [imgs, C, H, W] → y [imgs, O, H, W].
#[allow(
    clippy::too_many_arguments,
    reason = "the group's input, weights and output, its sizes, and two scratch buffers reused across groups"
)]
fn group_conv(
    xg: &[f32],
    u: &[f32],
    y: &mut [MaybeUninit<f32>],
    imgs: usize,
    per_img: usize,
    s: Sizes,
    v: &mut Vec<f32>,
    m: &mut Vec<f32>,
    par: bool,
) {
    let t = imgs * per_img;
    let (img_in, img_out, hw) = (s.c * s.h * s.w, s.o * s.h * s.w, s.h * s.w);
    v.resize(s.c * P * t, 0.0);
    m.resize(s.o * P * t, 0.0);
    // V [C][16][T]: each channel of each image of the group.
    chunks(par, v, P * t, |c, vc| {
        let mut rows = PLANE_SCRATCH.take();
        for i in 0..imgs {
            let plane = &xg[i * img_in + c * hw..i * img_in + (c + 1) * hw];
            transform_input(plane, s.h, s.w, &mut rows, vc, t, i * per_img);
        }
        PLANE_SCRATCH.set(rows);
    });
    // M_ξν [O, T] = U_ξν [O, C] · V_ξν [C, T] for the 16 positions.
    let mp = Shared(m.as_mut_ptr());
    let product = |k: usize| {
        // SAFETY: position k writes only the k-th T-wide block of each row of M; the operands
        // are read-only slices of U and V that outlive the call.
        unsafe {
            matmul(
                s.o,
                t,
                s.c,
                (mp.get().add(k * t), 1, (P * t) as isize),
                (u.as_ptr().add(k * s.c), 1, (P * s.c) as isize),
                (v.as_ptr().add(k * t), 1, (P * t) as isize),
                false,
                false,
            )
        }
    };
    if par {
        (0..P).into_par_iter().for_each(product);
    } else {
        (0..P).for_each(product);
    }
    // y [imgs][O][H][W] from M [O][16][T]: output channel o of every image of the group.
    let yp = Shared(y.as_mut_ptr().cast::<f32>());
    let out = |o: usize, mo: &mut [f32]| {
        let mut tmp = PLANE_SCRATCH.take();
        for i in 0..imgs {
            // SAFETY: plane (i, o) of the group's output, written by this call only.
            let plane = unsafe {
                std::slice::from_raw_parts_mut(
                    yp.get()
                        .add(i * img_out + o * hw)
                        .cast::<MaybeUninit<f32>>(),
                    hw,
                )
            };
            transform_output(mo, t, i * per_img, plane, s.h, s.w, &mut tmp);
        }
        PLANE_SCRATCH.set(tmp);
    };
    chunks(par, m, P * t, out);
}
