//! Random resized crops: the crop box resized to the training size, bilinear or bicubic, from
//! the decoded u8 image; what the loader threads do for every view.

use super::ops::Crop;
use crate::image::Rgb8;

/// How a crop is resized to the training size.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Interpolation {
    /// 2×2 taps.
    #[default]
    Bilinear,
    /// 4×4 taps of Keys' cubic convolution with a = −0.5 (PIL's bicubic, which the paper's
    /// pipeline uses at 224 px), clipped to the pixel range.
    Bicubic,
}

/// Keys' cubic convolution kernel, a = −0.5.
fn cubic(t: f64) -> f64 {
    let (a, t) = (-0.5, t.abs());
    if t <= 1.0 {
        ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    } else if t < 2.0 {
        ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
    } else {
        0.0
    }
}

/// The source taps (index, weight) of each output coordinate along one axis: pixel-centre
/// sampling of `len` outputs over [start, start + extent) of a source of `n` pixels, edge clamped.
fn taps(
    start: f64,
    extent: f64,
    len: usize,
    n: usize,
    interp: Interpolation,
) -> Vec<[(usize, f32); 4]> {
    let max = n as f64 - 1.0;
    let scale = extent / len as f64;
    (0..len)
        .map(|o| {
            let f = (start + (o as f64 + 0.5) * scale - 0.5).clamp(0.0, max);
            let i0 = f.floor();
            let t = f - i0;
            let at = |k: f64| (i0 + k).clamp(0.0, max) as usize;
            match interp {
                Interpolation::Bilinear => [
                    (at(0.0), (1.0 - t) as f32),
                    (at(1.0), t as f32),
                    (0, 0.0),
                    (0, 0.0),
                ],
                Interpolation::Bicubic => [
                    (at(-1.0), cubic(t + 1.0) as f32),
                    (at(0.0), cubic(t) as f32),
                    (at(1.0), cubic(1.0 - t) as f32),
                    (at(2.0), cubic(2.0 - t) as f32),
                ],
            }
        })
        .collect()
}

/// Resize the crop box to `size`×`size` (pixel-centre sampling, edge clamped, no antialiasing).
/// Returns CHW f32 in [0, 1].
pub fn resize_crop(img: &Rgb8, crop: Crop, size: usize, interp: Interpolation) -> Vec<f32> {
    let mut out = vec![0f32; 3 * size * size];
    resize_crop_rows(img, crop, size, interp, |at, row| {
        out[at..at + row.len()].copy_from_slice(row)
    });
    out
}

/// [`resize_crop`] rounded to u8, CHW: what the host hands to the device pipeline.
pub fn resize_crop_u8(img: &Rgb8, crop: Crop, size: usize, interp: Interpolation) -> Vec<u8> {
    let mut out = vec![0u8; 3 * size * size];
    resize_crop_u8_into(img, crop, size, interp, &mut out);
    out
}

/// [`resize_crop_u8`] into `out` (3·`size`² bytes).
pub fn resize_crop_u8_into(
    img: &Rgb8,
    crop: Crop,
    size: usize,
    interp: Interpolation,
    out: &mut [u8],
) {
    assert_eq!(out.len(), 3 * size * size, "output of a {size}-px crop");
    resize_crop_rows(img, crop, size, interp, |at, row| {
        for (o, &v) in out[at..at + row.len()].iter_mut().zip(row) {
            *o = round_u8(v * 255.0);
        }
    });
}

/// `x.round() as u8` for x in [0, 255] (halves away from zero), without a call to `roundf`:
/// `x − ⌊x⌋` is exact for such x.
#[inline]
fn round_u8(x: f32) -> u8 {
    let t = x as u8;
    if x - f32::from(t) >= 0.5 { t + 1 } else { t }
}

/// One source row (interleaved RGB) resampled horizontally with the first `N` taps of each
/// output, into the three channel rows.
#[inline]
fn resample_row<const N: usize>(
    src: &[u8],
    xs: &[[(usize, f32); 4]],
    d0: &mut [f32],
    d1: &mut [f32],
    d2: &mut [f32],
) {
    for (((tx, o0), o1), o2) in xs
        .iter()
        .zip(d0.iter_mut())
        .zip(d1.iter_mut())
        .zip(d2.iter_mut())
    {
        let (mut a0, mut a1, mut a2) = (0f32, 0f32, 0f32);
        for &(xi, wx) in &tx[..N] {
            let p = &src[xi * 3..xi * 3 + 3];
            a0 += wx * f32::from(p[0]);
            a1 += wx * f32::from(p[1]);
            a2 += wx * f32::from(p[2]);
        }
        (*o0, *o1, *o2) = (a0, a1, a2);
    }
}

/// The resize of [`resize_crop`], separably: each source row the vertical taps use is resampled
/// horizontally once (into one plane per channel), then each output row combines its rows. The
/// sums are the same, in the same order, as the direct 2-D sum over the taps, so the values are
/// bit-identical to it (tested against it below). `put(at, row)` receives each output row of
/// a plane, in [0, 1], and its CHW offset.
fn resize_crop_rows(
    img: &Rgb8,
    crop: Crop,
    size: usize,
    interp: Interpolation,
    mut put: impl FnMut(usize, &[f32]),
) {
    let plane = size * size;
    let n = match interp {
        Interpolation::Bilinear => 2,
        Interpolation::Bicubic => 4,
    };
    let xs = taps(crop.x, crop.w, size, img.width, interp);
    let ys = taps(crop.y, crop.h, size, img.height, interp);
    // The vertical taps with a weight, and the range of source rows they touch.
    let ys: Vec<Vec<(usize, f32)>> = ys
        .iter()
        .map(|t| t[..n].iter().copied().filter(|&(_, w)| w != 0.0).collect())
        .collect();
    let (lo, hi) = ys
        .iter()
        .flatten()
        .fold((usize::MAX, 0), |(lo, hi), &(y, _)| (lo.min(y), hi.max(y)));
    let mut acc = vec![0f32; size];
    if lo > hi {
        // Every vertical weight is zero (cannot happen for a crop inside the image): all black.
        (0..3 * size).for_each(|r| put(r * size, &acc));
        return;
    }
    let nrows = hi - lo + 1;
    let mut rows = vec![0f32; 3 * nrows * size]; // [3, rows, S]
    let (r0, rest) = rows.split_at_mut(nrows * size);
    let (r1, r2) = rest.split_at_mut(nrows * size);
    for (r, ((d0, d1), d2)) in r0
        .chunks_exact_mut(size)
        .zip(r1.chunks_exact_mut(size))
        .zip(r2.chunks_exact_mut(size))
        .enumerate()
    {
        let src = &img.data[(lo + r) * img.width * 3..(lo + r + 1) * img.width * 3];
        match n {
            2 => resample_row::<2>(src, &xs, d0, d1, d2),
            _ => resample_row::<4>(src, &xs, d0, d1, d2),
        }
    }
    for c in 0..3 {
        let chan = &rows[c * nrows * size..(c + 1) * nrows * size];
        for (oy, ty) in ys.iter().enumerate() {
            acc.fill(0.0);
            for &(yi, wy) in ty {
                for (a, &v) in acc
                    .iter_mut()
                    .zip(&chan[(yi - lo) * size..(yi - lo + 1) * size])
                {
                    *a += wy * v;
                }
            }
            for a in acc.iter_mut() {
                *a = (*a / 255.0).clamp(0.0, 1.0);
            }
            put(c * plane + oy * size, &acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::ops::sample_crop;
    use rand::Rng;

    /// The resize as a direct 2-D sum over each output pixel's taps: the definition the separable
    /// implementation must reproduce bit for bit.
    fn resize_crop_direct(img: &Rgb8, crop: Crop, size: usize, interp: Interpolation) -> Vec<f32> {
        let plane = size * size;
        let mut out = vec![0f32; 3 * plane];
        let xs = taps(crop.x, crop.w, size, img.width, interp);
        let ys = taps(crop.y, crop.h, size, img.height, interp);
        for (oy, ty) in ys.iter().enumerate() {
            for (ox, tx) in xs.iter().enumerate() {
                for c in 0..3 {
                    let mut acc = 0f32;
                    for &(yi, wy) in ty {
                        if wy == 0.0 {
                            continue;
                        }
                        let row = yi * img.width;
                        let mut r = 0f32;
                        for &(xi, wx) in tx {
                            r += wx * f32::from(img.data[(row + xi) * 3 + c]);
                        }
                        acc += wy * r;
                    }
                    out[c * plane + oy * size + ox] = (acc / 255.0).clamp(0.0, 1.0);
                }
            }
        }
        out
    }

    #[test]
    fn separable_resize_equals_the_direct_sum_bit_for_bit() {
        use crate::rng::{Stream, rng};
        let mut r = rng(0, Stream::Synthetic, &[77]);
        for case in 0..200 {
            let (w, h) = (r.random_range(1..60usize), r.random_range(1..60usize));
            let data: Vec<u8> = (0..w * h * 3).map(|_| r.random()).collect();
            let img = Rgb8 {
                width: w,
                height: h,
                data,
            };
            let crop = sample_crop(w, h, [0.08, 1.0], [0.75, 4.0 / 3.0], &mut r);
            let size = r.random_range(1..40usize);
            for interp in [Interpolation::Bilinear, Interpolation::Bicubic] {
                let want = resize_crop_direct(&img, crop, size, interp);
                let got = resize_crop(&img, crop, size, interp);
                assert!(
                    want.iter()
                        .zip(&got)
                        .all(|(a, b)| a.to_bits() == b.to_bits() || (*a == 0.0 && *b == 0.0)),
                    "case {case} {interp:?} {w}x{h} {crop:?} → {size}"
                );
                let u8s: Vec<u8> = want.iter().map(|v| (v * 255.0).round() as u8).collect();
                assert_eq!(resize_crop_u8(&img, crop, size, interp), u8s);
            }
        }
    }

    #[test]
    fn resize_of_full_crop_at_same_size_is_identity() {
        let img = Rgb8 {
            width: 4,
            height: 4,
            data: (0..48).map(|v| (v * 5) as u8).collect(),
        };
        for interp in [Interpolation::Bilinear, Interpolation::Bicubic] {
            let out = resize_crop(
                &img,
                Crop {
                    x: 0.0,
                    y: 0.0,
                    w: 4.0,
                    h: 4.0,
                },
                4,
                interp,
            );
            for y in 0..4 {
                for x in 0..4 {
                    for c in 0..3 {
                        let want = f32::from(img.data[(y * 4 + x) * 3 + c]) / 255.0;
                        assert!((out[c * 16 + y * 4 + x] - want).abs() < 1e-6, "{interp:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn bicubic_reproduces_a_linear_ramp_and_differs_from_bilinear_on_a_curve() {
        // A horizontal ramp 10·x: both interpolations give the ramp's value at the sample point.
        let (w, h) = (16usize, 4usize);
        let ramp = Rgb8 {
            width: w,
            height: h,
            data: (0..w * h).flat_map(|i| [((i % w) * 10) as u8; 3]).collect(),
        };
        // 4 outputs over [4, 12): sample points 4.5, 6.5, 8.5, 10.5 (pixel centres) → 45, 65, 85, 105.
        for interp in [Interpolation::Bilinear, Interpolation::Bicubic] {
            let out = resize_crop(
                &ramp,
                Crop {
                    x: 4.0,
                    y: 0.0,
                    w: 8.0,
                    h: 4.0,
                },
                4,
                interp,
            );
            for (o, want) in [45.0f32, 65.0, 85.0, 105.0].iter().enumerate() {
                assert!(
                    (out[o] * 255.0 - want).abs() < 1e-3,
                    "{interp:?}: {}",
                    out[o] * 255.0
                );
            }
        }
        // On x² the cubic kernel is closer to the true value than linear interpolation.
        let sq = Rgb8 {
            width: w,
            height: h,
            data: (0..w * h)
                .flat_map(|i| [((i % w) * (i % w)) as u8; 3])
                .collect(),
        };
        let crop = Crop {
            x: 4.0,
            y: 0.0,
            w: 8.0,
            h: 4.0,
        };
        let bl = resize_crop(&sq, crop, 4, Interpolation::Bilinear)[1] * 255.0;
        let bc = resize_crop(&sq, crop, 4, Interpolation::Bicubic)[1] * 255.0;
        let truth = 6.5f32 * 6.5;
        assert!(
            (bc - truth).abs() < (bl - truth).abs(),
            "bicubic {bc}, bilinear {bl}, truth {truth}"
        );
    }
}
