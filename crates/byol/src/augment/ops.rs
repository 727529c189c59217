//! The crop box and the individual operations on a CHW f32 image in [0, 1] (before
//! normalisation).

use crate::image::hsv_to_rgb;
use rand::Rng;

/// A crop box in source pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crop {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// Random resized crop box (Szegedy et al. 2015; the torchvision algorithm used by BYOL's
/// official code): area fraction ~ U\[scale\], log aspect ratio ~ U\[log ratio\], up to 10 tries,
/// then a centre crop with the ratio clamped into range.
pub fn sample_crop(
    width: usize,
    height: usize,
    scale: [f64; 2],
    ratio: [f64; 2],
    rng: &mut impl Rng,
) -> Crop {
    let (wf, hf) = (width as f64, height as f64);
    let area = wf * hf;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale[0]..=scale[1]);
        let r = if lr0 < lr1 {
            rng.random_range(lr0..=lr1)
        } else {
            lr0
        }
        .exp();
        let w = (target * r).sqrt().round();
        let h = (target / r).sqrt().round();
        if w >= 1.0 && h >= 1.0 && w <= wf && h <= hf {
            let x = rng.random_range(0..=(width - w as usize)) as f64;
            let y = rng.random_range(0..=(height - h as usize)) as f64;
            return Crop { x, y, w, h };
        }
    }
    let in_ratio = wf / hf;
    let (w, h) = if in_ratio < ratio[0] {
        (wf, (wf / ratio[0]).round())
    } else if in_ratio > ratio[1] {
        ((hf * ratio[1]).round(), hf)
    } else {
        (wf, hf)
    };
    Crop {
        x: ((wf - w) / 2.0).floor(),
        y: ((hf - h) / 2.0).floor(),
        w,
        h,
    }
}

/// Mirror left-right.
pub fn hflip(x: &mut [f32], size: usize) {
    for row in x.chunks_mut(size) {
        row.reverse();
    }
}

fn clip(x: &mut [f32]) {
    for v in x {
        *v = v.clamp(0.0, 1.0);
    }
}

/// Luma of ITU-R 601-2 (what the paper's grayscale uses).
pub const LUMA: [f32; 3] = [0.2989, 0.5870, 0.1140];

fn luma_plane(x: &[f32]) -> Vec<f32> {
    let n = x.len() / 3;
    (0..n)
        .map(|i| LUMA[0] * x[i] + LUMA[1] * x[n + i] + LUMA[2] * x[2 * n + i])
        .collect()
}

/// x + delta, clipped.
pub fn brightness(x: &mut [f32], delta: f32) {
    for v in x.iter_mut() {
        *v += delta;
    }
    clip(x);
}

/// (x − m)·f + m about the mean m of the grayscale image, clipped.
pub fn contrast(x: &mut [f32], factor: f32) {
    let g = luma_plane(x);
    let m = g.iter().sum::<f32>() / g.len() as f32;
    for v in x.iter_mut() {
        *v = (*v - m) * factor + m;
    }
    clip(x);
}

/// RGB → HSV, each in [0, 1] (hue in turns).
pub fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let s = if max > 0.0 { d / max } else { 0.0 };
    let h = if d == 0.0 {
        0.0
    } else if max == r {
        ((g - b) / d).rem_euclid(6.0) / 6.0
    } else if max == g {
        ((b - r) / d + 2.0) / 6.0
    } else {
        ((r - g) / d + 4.0) / 6.0
    };
    (h, s, max)
}

fn map_hsv(x: &mut [f32], f: impl Fn(f32, f32, f32) -> (f32, f32, f32)) {
    let n = x.len() / 3;
    for i in 0..n {
        let (h, s, v) = rgb_to_hsv(x[i], x[n + i], x[2 * n + i]);
        let (h, s, v) = f(h, s, v);
        let (r, g, b) = hsv_to_rgb(h, s, v);
        x[i] = r;
        x[n + i] = g;
        x[2 * n + i] = b;
    }
    clip(x);
}

/// Multiply the HSV saturation by `factor` (official BYOL `adjust_saturation`), clipped.
pub fn saturation(x: &mut [f32], factor: f32) {
    map_hsv(x, |h, s, v| (h, (s * factor).clamp(0.0, 1.0), v));
}

/// Shift the HSV hue by `delta` turns (wrapping).
pub fn hue(x: &mut [f32], delta: f32) {
    map_hsv(x, |h, s, v| ((h + delta).rem_euclid(1.0), s, v));
}

/// Replace every channel by the luma.
pub fn grayscale(x: &mut [f32]) {
    let g = luma_plane(x);
    let n = g.len();
    for c in 0..3 {
        x[c * n..(c + 1) * n].copy_from_slice(&g);
    }
}

/// Odd kernel side ≈ `fraction` of the image side: 224 → 23 (the paper's), 32 → 3.
pub fn kernel_size(size: usize, fraction: f64) -> usize {
    2 * ((size as f64 * fraction / 2.0).floor() as usize) + 1
}

/// Normalised 1-D Gaussian of odd length `k`.
pub fn gaussian_kernel(k: usize, sigma: f32) -> Vec<f32> {
    let r = (k / 2) as i32;
    let w: Vec<f32> = (-r..=r)
        .map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f32 = w.iter().sum();
    w.into_iter().map(|v| v / s).collect()
}

/// Index `i` reflected into 0..n at the borders (…, 2, 1, | 0, 1, …, n−1, | n−2, …), as the
/// reflect padding of the official blur.
pub fn reflect(mut i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    while i < 0 || i >= n {
        if i < 0 {
            i = -i;
        }
        if i >= n {
            i = 2 * (n - 1) - i;
        }
    }
    i as usize
}

/// Separable Gaussian blur with reflected borders.
pub fn gaussian_blur(x: &mut [f32], size: usize, k: usize, sigma: f32) {
    if k <= 1 {
        return;
    }
    let w = gaussian_kernel(k, sigma);
    let r = (k / 2) as isize;
    let refl = |i: isize| reflect(i, size);
    let mut tmp = vec![0f32; size * size];
    for plane in x.chunks_mut(size * size) {
        for y in 0..size {
            for xx in 0..size {
                let mut acc = 0.0;
                for (j, wj) in w.iter().enumerate() {
                    acc += wj * plane[y * size + refl(xx as isize + j as isize - r)];
                }
                tmp[y * size + xx] = acc;
            }
        }
        for y in 0..size {
            for xx in 0..size {
                let mut acc = 0.0;
                for (j, wj) in w.iter().enumerate() {
                    acc += wj * tmp[refl(y as isize + j as isize - r) * size + xx];
                }
                plane[y * size + xx] = acc;
            }
        }
    }
}

/// x ≥ 0.5 → 1 − x.
pub fn solarize(x: &mut [f32]) {
    for v in x {
        if *v >= 0.5 {
            *v = 1.0 - *v;
        }
    }
}

/// (x − mean_c)/std_c per channel.
pub fn normalize(x: &mut [f32], mean: &[f32; 3], std: &[f32; 3]) {
    let n = x.len() / 3;
    for c in 0..3 {
        for v in &mut x[c * n..(c + 1) * n] {
            *v = (*v - mean[c]) / std[c];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Rgb8;
    use crate::rng::{Stream, rng};

    fn px(r: f32, g: f32, b: f32) -> Vec<f32> {
        vec![r, g, b]
    }

    #[test]
    fn hue_shift_of_pure_colours() {
        // Red shifted by a third of a turn becomes green, by two thirds blue.
        let mut x = px(1.0, 0.0, 0.0);
        hue(&mut x, 1.0 / 3.0);
        for (a, b) in x.iter().zip([0.0, 1.0, 0.0]) {
            assert!((a - b).abs() < 1e-5, "{x:?}");
        }
        let mut x = px(1.0, 0.0, 0.0);
        hue(&mut x, -1.0 / 3.0);
        for (a, b) in x.iter().zip([0.0, 0.0, 1.0]) {
            assert!((a - b).abs() < 1e-5, "{x:?}");
        }
        // HSV round trip on an arbitrary colour.
        let (h, s, v) = rgb_to_hsv(0.2, 0.7, 0.4);
        let (r, g, b) = hsv_to_rgb(h, s, v);
        assert!((r - 0.2).abs() < 1e-6 && (g - 0.7).abs() < 1e-6 && (b - 0.4).abs() < 1e-6);
    }

    #[test]
    fn contrast_is_about_the_grayscale_mean() {
        // Two pixels: (1,0,0) and (0,0,1). Grayscale mean m = (0.2989 + 0.1140)/2.
        let mut x = vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let m = (LUMA[0] + LUMA[2]) / 2.0;
        contrast(&mut x, 0.5);
        let expect = [
            (1.0 - m) * 0.5 + m,
            m * 0.5,
            m * 0.5,
            m * 0.5,
            m * 0.5,
            (1.0 - m) * 0.5 + m,
        ];
        for (a, b) in x.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{x:?}");
        }
    }

    #[test]
    fn brightness_saturation_grayscale_solarize() {
        let mut x = vec![0.9, 0.5, 0.2];
        brightness(&mut x, 0.2);
        assert_eq!(x, vec![1.0, 0.7, 0.4]);
        let mut x = vec![0.8, 0.4, 0.2]; // s = 0.75
        saturation(&mut x, 0.0);
        assert!(x.iter().all(|v| (v - 0.8).abs() < 1e-6), "{x:?}");
        let mut x = vec![1.0, 0.5, 0.0];
        grayscale(&mut x);
        let l = 0.2989 + 0.5870 * 0.5;
        assert!(x.iter().all(|v| (v - l).abs() < 1e-6));
        let mut x = vec![0.49, 0.5, 0.8];
        solarize(&mut x);
        assert_eq!(x, vec![0.49, 0.5, 1.0 - 0.8]);
    }

    #[test]
    fn blur_kernel_sums_to_one_and_is_separable() {
        assert_eq!(kernel_size(224, 0.1), 23);
        assert_eq!(kernel_size(32, 0.1), 3);
        let k = gaussian_kernel(23, 1.7);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // A unit impulse blurred gives the outer product of the 1-D kernel.
        let size = 9;
        let mut x = vec![0f32; 3 * size * size];
        x[4 * size + 4] = 1.0;
        gaussian_blur(&mut x, size, 5, 1.0);
        let k = gaussian_kernel(5, 1.0);
        for dy in 0..5 {
            for dx in 0..5 {
                let v = x[(2 + dy) * size + 2 + dx];
                assert!((v - k[dy] * k[dx]).abs() < 1e-6);
            }
        }
        // A constant image stays constant (reflected borders).
        let mut c = vec![0.3f32; 3 * 16];
        gaussian_blur(&mut c, 4, 3, 2.0);
        assert!(c.iter().all(|v| (v - 0.3).abs() < 1e-6));
    }

    #[test]
    fn crop_statistics_match_the_ranges() {
        let mut r = rng(3, Stream::Augment, &[0]);
        let n = 20_000;
        let (mut lo_area, mut hi_area) = (0, 0);
        let mut log_ratio_sum = 0.0;
        for _ in 0..n {
            let c = sample_crop(224, 224, [0.08, 1.0], [0.75, 4.0 / 3.0], &mut r);
            let area = c.w * c.h / (224.0 * 224.0);
            assert!(area <= 1.0 + 1e-9);
            assert!(area >= 0.07, "{area}");
            let ratio = c.w / c.h;
            assert!((0.74..=1.35).contains(&ratio), "{ratio}");
            assert!(c.x >= 0.0 && c.y >= 0.0 && c.x + c.w <= 224.0 && c.y + c.h <= 224.0);
            if area < 0.3 {
                lo_area += 1;
            }
            if area > 0.7 {
                hi_area += 1;
            }
            log_ratio_sum += ratio.ln();
        }
        // Area is uniform in [0.08, 1] among accepted draws (large areas with extreme ratios are
        // rejected more often, so the upper tail is thinner): check both tails are populated.
        assert!(lo_area as f64 / n as f64 > 0.15, "{lo_area}");
        assert!(hi_area as f64 / n as f64 > 0.15, "{hi_area}");
        // Log-ratio symmetric about 0.
        assert!((log_ratio_sum / n as f64).abs() < 0.01);
    }

    #[test]
    fn flip_probability() {
        let img = Rgb8 {
            width: 2,
            height: 1,
            data: vec![0, 0, 0, 255, 255, 255],
        };
        let view = super::super::ViewConfig {
            crop_scale: [1.0, 1.0],
            crop_ratio: [2.0, 2.0],
            jitter_prob: 0.0,
            grayscale_prob: 0.0,
            blur_prob: 0.0,
            ..super::super::ViewConfig::paper_view1()
        };
        let aug = super::super::AugmentConfig {
            mean: [0.0; 3],
            std: [1.0; 3],
            ..Default::default()
        };
        let mut r = rng(1, Stream::Augment, &[9]);
        let n = 4000;
        let flips = (0..n)
            .filter(|_| super::super::make_view(&img, 2, &view, &aug, &mut r)[0] > 0.5)
            .count();
        let p = flips as f64 / n as f64;
        assert!((p - 0.5).abs() < 0.03, "{p}");
    }
}
