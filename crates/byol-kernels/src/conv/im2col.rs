//! The layout of a convolution as a matrix product: its sizes, and im2col (the input patches
//! of a band of output rows as the columns of a matrix) with its adjoint col2im.

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
}

impl Geometry {
    /// Rows of the im2col matrix (C·kh·kw).
    pub fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Output positions per image.
    pub fn p(&self) -> usize {
        self.ho * self.wo
    }
    /// A stride-1 convolution whose output has the input's height and width.
    pub fn same(&self) -> bool {
        self.stride == 1 && self.ho == self.h && self.wo == self.w
    }
    /// A 1×1, stride-1, unpadded convolution: an image's im2col matrix is the image itself.
    pub fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    /// Images per GEMM: enough output columns (≥ 256) for the GEMM kernel to run at speed.
    pub fn group(&self) -> usize {
        (256 / self.p()).clamp(1, self.n.max(1))
    }
}

/// The output columns `[lo, hi)` whose input column `ow·stride + kj − pad` lies inside `[0, w)`.
fn valid_cols(g: &Geometry, kj: usize, w: usize) -> (usize, usize) {
    let lo = if g.pad > kj {
        (g.pad - kj).div_ceil(g.stride)
    } else {
        0
    };
    let hi = if w + g.pad > kj {
        ((w + g.pad - kj - 1) / g.stride + 1).min(g.wo)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Writes the patches of output rows `rows` of one image `x` [C, H, W] into columns
/// `off..off + rows.len()·Wo` of `col` [K, ld].
pub(crate) fn im2col(
    x: &[f32],
    g: &Geometry,
    col: &mut [f32],
    ld: usize,
    off: usize,
    rows: std::ops::Range<usize>,
) {
    if g.same() {
        return im2col_same(x, g, col, ld, off, rows);
    }
    let (h, w, p) = (g.h, g.w, rows.len() * g.wo);
    for c in 0..g.c {
        let plane = &x[c * h * w..(c + 1) * h * w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let r = (c * g.kh + ki) * g.kw + kj;
                let row = &mut col[r * ld + off..r * ld + off + p];
                let (lo, hi) = valid_cols(g, kj, w);
                for (t, oh) in rows.clone().enumerate() {
                    let dst = &mut row[t * g.wo..(t + 1) * g.wo];
                    let ih = (oh * g.stride + ki) as isize - g.pad as isize;
                    if ih < 0 || ih >= h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[ih as usize * w..(ih as usize + 1) * w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if g.stride == 1 {
                        dst[lo..hi].copy_from_slice(&src[lo + kj - g.pad..hi + kj - g.pad]);
                    } else {
                        for (ow, d) in dst.iter_mut().enumerate().take(hi).skip(lo) {
                            *d = src[ow * g.stride + kj - g.pad];
                        }
                    }
                }
            }
        }
    }
}

/// Adds columns `off..off + rows.len()·Wo` of `col` [K, ld] (output rows `rows`) back onto one
/// image's gradient `dx` [C, H, W] (the adjoint of [`im2col`]).
pub(crate) fn col2im(
    col: &mut [f32],
    g: &Geometry,
    ld: usize,
    off: usize,
    rows: std::ops::Range<usize>,
    dx: &mut [f32],
) {
    if g.same() {
        return col2im_same(col, g, ld, off, rows, dx);
    }
    let (h, w, p) = (g.h, g.w, rows.len() * g.wo);
    for c in 0..g.c {
        let plane = &mut dx[c * h * w..(c + 1) * h * w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let r = (c * g.kh + ki) * g.kw + kj;
                let row = &col[r * ld + off..r * ld + off + p];
                let (lo, hi) = valid_cols(g, kj, w);
                for (t, oh) in rows.clone().enumerate() {
                    let ih = (oh * g.stride + ki) as isize - g.pad as isize;
                    if ih < 0 || ih >= h as isize {
                        continue;
                    }
                    let src = &row[t * g.wo..(t + 1) * g.wo];
                    let dst = &mut plane[ih as usize * w..(ih as usize + 1) * w];
                    if g.stride == 1 {
                        for (d, s) in dst[lo + kj - g.pad..hi + kj - g.pad]
                            .iter_mut()
                            .zip(&src[lo..hi])
                        {
                            *d += s;
                        }
                    } else {
                        for ow in lo..hi {
                            dst[ow * g.stride + kj - g.pad] += src[ow];
                        }
                    }
                }
            }
        }
    }
}

/// For a stride-1 convolution whose output has the input's size: row (c, ki, kj) of the im2col
/// matrix is the flattened plane shifted by s = (ki − pad)·W + (kj − pad), with zeros where the
/// shifted row leaves the plane and in the columns that wrapped around from the neighbouring row.
/// Returns the output range [lo, hi) (flat indices oh·W + ow) that reads inside the plane, and
/// the shift.
fn same_shift(
    g: &Geometry,
    ki: usize,
    kj: usize,
    rows: &std::ops::Range<usize>,
) -> (usize, usize, isize) {
    let s = (ki as isize - g.pad as isize) * g.w as isize + (kj as isize - g.pad as isize);
    let hw = (g.h * g.w) as isize;
    let (start, end) = ((rows.start * g.w) as isize, (rows.end * g.w) as isize);
    let lo = start.max(-s).min(end);
    let hi = end.min(hw - s).max(lo);
    (lo as usize, hi as usize, s)
}

/// The output columns [0, a) and [b, W) of each row whose input column lies outside the plane.
fn wrapped_cols(g: &Geometry, kj: usize) -> (usize, usize) {
    let (dj, w) = (kj as isize - g.pad as isize, g.w as isize);
    let a = (-dj).clamp(0, w);
    (a as usize, (w - dj.max(0)).clamp(a, w) as usize)
}

/// Zeroes columns [0, a) and [b, w) of every w-wide row of `m` (at most `pad` columns on each
/// side, usually one). Column by column, with a stride of `w`: a per-row loop becomes one
/// `memset` call per row of a few bytes, which cost ≈ 3 % of a training step (`perf`).
fn zero_wrapped(m: &mut [f32], w: usize, a: usize, b: usize) {
    for j in (0..a).chain(b..w) {
        for v in m.iter_mut().skip(j).step_by(w) {
            *v = 0.0;
        }
    }
}

/// [`im2col`] for stride-1 "same" convolutions: one contiguous copy per row of the matrix.
fn im2col_same(
    x: &[f32],
    g: &Geometry,
    col: &mut [f32],
    ld: usize,
    off: usize,
    rows: std::ops::Range<usize>,
) {
    let (hw, w, base) = (g.h * g.w, g.w, rows.start * g.w);
    let t = rows.len() * w;
    // The shift and the bounds depend on (ki, kj) only: computed once for all channels.
    for ki in 0..g.kh {
        for kj in 0..g.kw {
            let (lo, hi, s) = same_shift(g, ki, kj, &rows);
            let (a, b) = wrapped_cols(g, kj);
            for c in 0..g.c {
                let plane = &x[c * hw..(c + 1) * hw];
                let r = (c * g.kh + ki) * g.kw + kj;
                let dst = &mut col[r * ld + off..r * ld + off + t];
                dst[..lo - base].fill(0.0);
                dst[hi - base..].fill(0.0);
                if hi > lo {
                    dst[lo - base..hi - base].copy_from_slice(
                        &plane[(lo as isize + s) as usize..(hi as isize + s) as usize],
                    );
                }
                zero_wrapped(dst, w, a, b);
            }
        }
    }
}

/// [`col2im`] for stride-1 "same" convolutions: the wrapped columns of `col` are zeroed, then
/// each row of the matrix is added onto the plane in one contiguous pass.
fn col2im_same(
    col: &mut [f32],
    g: &Geometry,
    ld: usize,
    off: usize,
    rows: std::ops::Range<usize>,
    dx: &mut [f32],
) {
    let (hw, w, base) = (g.h * g.w, g.w, rows.start * g.w);
    let t = rows.len() * w;
    for c in 0..g.c {
        let plane = &mut dx[c * hw..(c + 1) * hw];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let r = (c * g.kh + ki) * g.kw + kj;
                let src = &mut col[r * ld + off..r * ld + off + t];
                let (a, b) = wrapped_cols(g, kj);
                zero_wrapped(src, w, a, b);
                let (lo, hi, s) = same_shift(g, ki, kj, &rows);
                if hi > lo {
                    let dst = &mut plane[(lo as isize + s) as usize..(hi as isize + s) as usize];
                    dst.iter_mut()
                        .zip(&src[lo - base..hi - base])
                        .for_each(|(d, v)| *d += v);
                }
            }
        }
    }
}
