//! The backward pass of [`super`]'s convolution: the input gradient (col2im of Wᵀ·dy, or the
//! forward form with the flipped, transposed kernel for a stride-1 "same" convolution) and the
//! weight gradient (Σₙ dy·colᵀ), each by im2col + GEMM or Winograd's F(2×2, 3×3).

use super::*;

pub(super) fn backward(
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
