//! The transforms of Winograd's F(2×2, 3×3): the kernels' G g Gᵀ, the input tiles' Bᵀ d B,
//! the output tiles' Aᵀ M A, and for the weight gradient the output gradient's A dY Aᵀ.

use super::*;

/// U [O][16][C] = G g Gᵀ for every 3×3 kernel g of w [O, C, 3, 3], with
/// G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
pub(super) fn transform_weights(w: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0f32; o * P * c];
    u.par_chunks_mut(P * c).enumerate().for_each(|(oc, uo)| {
        for ci in 0..c {
            let g = &w[(oc * c + ci) * 9..(oc * c + ci + 1) * 9];
            // Gg [4][3], by rows of g.
            let mut gg = [[0f32; 3]; 4];
            for j in 0..3 {
                let (a, b, d) = (g[j], g[3 + j], g[6 + j]);
                gg[0][j] = a;
                gg[1][j] = 0.5 * (a + b + d);
                gg[2][j] = 0.5 * (a - b + d);
                gg[3][j] = d;
            }
            // (Gg) Gᵀ [4][4].
            for (r, row) in gg.iter().enumerate() {
                let (a, b, d) = (row[0], row[1], row[2]);
                uo[(r * 4) * c + ci] = a;
                uo[(r * 4 + 1) * c + ci] = 0.5 * (a + b + d);
                uo[(r * 4 + 2) * c + ci] = 0.5 * (a - b + d);
                uo[(r * 4 + 3) * c + ci] = d;
            }
        }
    });
    u
}

multiversion! {
/// Writes Bᵀ d B for every tile of one plane [H, W] into columns `off..` of the 16 rows of `v`
/// (row stride `t`), with Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]].
/// `rows` is scratch. Tiles are numbered row-major (ty, tx), and every inner loop runs over
/// contiguous memory, so it vectorises.
pub(super) fn transform_input(plane: &[f32], h: usize, w: usize, rows: &mut Vec<f32>, v: &mut [f32], t: usize, off: usize) {
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let n = th * tw;
    // Row transform d·B of every row of the zero-padded plane (padded rows 0..2·th+2; padded
    // row pr = plane row pr − 1), tile column tx reading padded columns 2tx..2tx+3 = plane
    // columns 2tx−1..2tx+2. With the padded row split into even columns e[k] = row[2k−1] and
    // odd columns o[k] = row[2k]: (d0, d1, d2, d3) = (e[tx], o[tx], e[tx+1], o[tx+1]).
    // Stored as rows[ν][pr mod 2][pr / 2][tx], so that the column transform below reads each
    // of its four input rows as one contiguous run over all tiles.
    let plane_len = (th + 1) * tw;
    rows.resize(8 * plane_len + 2 * (tw + 1), 0.0);
    let (rows, eo) = rows.split_at_mut(8 * plane_len);
    let (e, o) = eo.split_at_mut(tw + 1);
    // e[0] (padded column 0) and, for an odd width, e[tw] and o[tw] lie in the padding.
    (e[0], e[tw], o[tw]) = (0.0, 0.0, 0.0);
    let at = |nu: usize, pr: usize| (nu * 2 + pr % 2) * plane_len + (pr / 2) * tw;
    for pr in std::iter::once(0).chain(h + 1..2 * th + 2) {
        for nu in 0..4 {
            rows[at(nu, pr)..at(nu, pr) + tw].fill(0.0);
        }
    }
    for r in 0..h {
        let src = &plane[r * w..(r + 1) * w];
        let half = w / 2;
        let (pairs, (os, es)) = (&src[..2 * half], (&mut o[..half], &mut e[1..half + 1]));
        for k in 0..half {
            os[k] = pairs[2 * k];
            es[k] = pairs[2 * k + 1];
        }
        if w % 2 == 1 {
            o[half] = src[w - 1];
        }
        let (e0, e1, o0, o1) = (&e[..tw], &e[1..], &o[..tw], &o[1..]);
        let row = |nu: usize| at(nu, r + 1)..at(nu, r + 1) + tw;
        for ((y, a), b) in rows[row(0)].iter_mut().zip(e0).zip(e1) {
            *y = a - b;
        }
        for ((y, a), b) in rows[row(1)].iter_mut().zip(o0).zip(e1) {
            *y = a + b;
        }
        for ((y, a), b) in rows[row(2)].iter_mut().zip(e1).zip(o0) {
            *y = a - b;
        }
        for ((y, a), b) in rows[row(3)].iter_mut().zip(o0).zip(o1) {
            *y = a - b;
        }
    }
    // Column transform (Bᵀ ·): tile row ty reads padded rows 2ty..2ty+3, i.e. even[ty],
    // odd[ty], even[ty + 1], odd[ty + 1]: four runs of n values over all tiles.
    for nu in 0..4 {
        let even = &rows[at(nu, 0)..at(nu, 0) + plane_len];
        let odd = &rows[at(nu, 1)..at(nu, 1) + plane_len];
        let (d0, d1, d2, d3) = (&even[..n], &odd[..n], &even[tw..tw + n], &odd[tw..tw + n]);
        let out = |xi: usize| (xi * 4 + nu) * t + off..(xi * 4 + nu) * t + off + n;
        for ((y, a), c) in v[out(0)].iter_mut().zip(d0).zip(d2) {
            *y = a - c;
        }
        for ((y, b), c) in v[out(1)].iter_mut().zip(d1).zip(d2) {
            *y = b + c;
        }
        for ((y, b), c) in v[out(2)].iter_mut().zip(d1).zip(d2) {
            *y = c - b;
        }
        for ((y, b), d) in v[out(3)].iter_mut().zip(d1).zip(d3) {
            *y = b - d;
        }
    }
}
}

multiversion! {
/// Writes Aᵀ m A for every tile of one output plane [H, W] from columns `off..` of the 16 rows
/// of `m` (row stride `t`), with Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]. `tmp` is scratch.
pub(super) fn transform_output(m: &[f32], t: usize, off: usize, plane: &mut [MaybeUninit<f32>], h: usize, w: usize, tmp: &mut Vec<f32>) {
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let n = th * tw;
    tmp.resize(10 * n, 0.0); // Aᵀ m [2][4][n], then one output row parity's even/odd columns
    let (q, eo) = tmp.split_at_mut(8 * n);
    for nu in 0..4 {
        let row = |xi: usize| &m[(xi * 4 + nu) * t + off..(xi * 4 + nu) * t + off + n];
        let (m0, m1, m2, m3) = (row(0), row(1), row(2), row(3));
        for (((y, a), b), c) in q[nu * n..(nu + 1) * n].iter_mut().zip(m0).zip(m1).zip(m2) {
            *y = a + b + c;
        }
        for (((y, a), b), c) in q[(4 + nu) * n..(5 + nu) * n].iter_mut().zip(m1).zip(m2).zip(m3) {
            *y = a - b - c;
        }
    }
    let (even, odd) = eo.split_at_mut(n);
    for i in 0..2 {
        let qi = &q[i * 4 * n..(i + 1) * 4 * n];
        let (q0, q1, q2, q3) = (&qi[..n], &qi[n..2 * n], &qi[2 * n..3 * n], &qi[3 * n..]);
        for ((((ev, od), a), b), (c, d)) in even.iter_mut().zip(odd.iter_mut()).zip(q0).zip(q1).zip(q2.iter().zip(q3)) {
            *ev = a + b + c;
            *od = b - c - d;
        }
        // Output row 2ty + i of every tile row.
        for ty in 0..th {
            let oh = 2 * ty + i;
            if oh >= h {
                break;
            }
            let out = &mut plane[oh * w..(oh + 1) * w];
            let half = w / 2;
            let (pairs, ev, od) = (&mut out[..2 * half], &even[ty * tw..ty * tw + half], &odd[ty * tw..ty * tw + half]);
            for k in 0..half {
                pairs[2 * k].write(ev[k]);
                pairs[2 * k + 1].write(od[k]);
            }
            if w % 2 == 1 {
                out[w - 1].write(even[ty * tw + tw - 1]);
            }
        }
    }
}
}

multiversion! {
/// A dY Aᵀ for every tile of one image's output gradient dy [O, H, W], written as md
/// [tile][16][O], with A = [[1, 0], [1, 1], [1, −1], [0, −1]] (the adjoint of
/// [`transform_output`]). dy is first transposed to [H·W, O] in `scratch`, so that every loop
/// after runs over contiguous O-vectors.
pub(super) fn transform_output_grad(dy: &[f32], h: usize, w: usize, o: usize, scratch: &mut Vec<f32>, md: &mut [f32]) {
    let (th, tw, hw) = (h.div_ceil(2), w.div_ceil(2), h * w);
    scratch.resize(hw * o + 5 * o, 0.0);
    let (dyt, rest) = scratch.split_at_mut(hw * o);
    let (zero, z) = rest.split_at_mut(o);
    zero.fill(0.0);
    transpose(dy, o, hw, dyt);
    let at = |r: usize, c: usize| if r < h && c < w { &dyt[(r * w + c) * o..(r * w + c + 1) * o] } else { &zero[..] };
    // z holds dY Aᵀ for one tile, [row i][ν] for ν = 1, 2 (ν = 0 and 3 are ±y_i0 / y_i1).
    let (z01, z02) = z.split_at_mut(2 * o);
    for ty in 0..th {
        for tx in 0..tw {
            let tile = &mut md[(ty * tw + tx) * P * o..(ty * tw + tx + 1) * P * o];
            let (y00, y01, y10, y11) = (at(2 * ty, 2 * tx), at(2 * ty, 2 * tx + 1), at(2 * ty + 1, 2 * tx), at(2 * ty + 1, 2 * tx + 1));
            // Columns: z_i1 = y_i0 + y_i1, z_i2 = y_i0 − y_i1 (z_i0 = y_i0, z_i3 = −y_i1).
            let (z01a, z01b) = z01.split_at_mut(o);
            let (z02a, z02b) = z02[..2 * o].split_at_mut(o);
            for (((p, m), a), b) in z01a.iter_mut().zip(z02a.iter_mut()).zip(y00).zip(y01) {
                *p = a + b;
                *m = a - b;
            }
            for (((p, m), a), b) in z01b.iter_mut().zip(z02b.iter_mut()).zip(y10).zip(y11) {
                *p = a + b;
                *m = a - b;
            }
            // Rows, for each ν with (top, bottom) = (z_0ν, z_1ν) and a sign for ν = 3:
            // out[0][ν] = top, out[1][ν] = top + bottom, out[2][ν] = top − bottom, out[3][ν] = −bottom.
            let cols: [(&[f32], &[f32], f32); 4] = [(y00, y10, 1.0), (z01a, z01b, 1.0), (z02a, z02b, 1.0), (y01, y11, -1.0)];
            for (nu, (top, bottom, sign)) in cols.into_iter().enumerate() {
                let out = |xi: usize| (xi * 4 + nu) * o..(xi * 4 + nu + 1) * o;
                for (y, a) in tile[out(0)].iter_mut().zip(top) {
                    *y = sign * a;
                }
                for ((y, a), b) in tile[out(1)].iter_mut().zip(top).zip(bottom) {
                    *y = sign * (a + b);
                }
                for ((y, a), b) in tile[out(2)].iter_mut().zip(top).zip(bottom) {
                    *y = sign * (a - b);
                }
                for (y, b) in tile[out(3)].iter_mut().zip(bottom) {
                    *y = -(sign * b);
                }
            }
        }
    }
}
}

/// `dst` [cols, rows] = `src` [rows, cols]ᵀ, in 16 × 16 blocks.
#[inline(always)]
pub(super) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const B: usize = 16;
    for r0 in (0..rows).step_by(B) {
        let rb = B.min(rows - r0);
        for c0 in (0..cols).step_by(B) {
            let cb = B.min(cols - c0);
            for r in r0..r0 + rb {
                for (j, v) in src[r * cols + c0..r * cols + c0 + cb].iter().enumerate() {
                    dst[(c0 + j) * rows + r] = *v;
                }
            }
        }
    }
}
