//! A built-in, procedurally generated dataset: ten classes of shapes and textures, each image
//! with random foreground and background colours, position, scale, rotation and pixel noise.
//! Deterministic by seed. The class is carried by shape alone (colours are random), so an
//! encoder must learn shape to classify it; it is small enough to pre-train on a laptop CPU.

use super::{ImageSet, Pixels, Splits, SyntheticConfig};
use crate::augment::Rgb8;
use crate::rng::{Stream, rng};
use rand::Rng;
use rayon::prelude::*;

/// The class names, in label order.
pub const CLASSES: [&str; 10] =
    ["disc", "square", "triangle", "cross", "ring", "stripes", "checker", "dots", "star", "crescent"];

/// Render one image of `class` at `size`×`size`.
pub fn render(class: usize, size: usize, r: &mut impl Rng) -> Rgb8 {
    let mut colour = || [r.random_range(0.0..1.0f32), r.random_range(0.0..1.0f32), r.random_range(0.0..1.0f32)];
    let bg = colour();
    let mut fg = colour();
    // Keep foreground and background distinguishable.
    while (0..3).map(|c| (fg[c] - bg[c]).abs()).sum::<f32>() < 0.6 {
        fg = colour();
    }
    let s = size as f32;
    let cx = r.random_range(0.35..0.65) * s;
    let cy = r.random_range(0.35..0.65) * s;
    let rad = r.random_range(0.22..0.36) * s;
    let angle: f32 = r.random_range(0.0..std::f32::consts::TAU);
    let period = r.random_range(0.12..0.22) * s;
    let noise = 0.06f32;
    let (ca, sa) = (angle.cos(), angle.sin());
    let mut data = vec![0u8; size * size * 3];
    for y in 0..size {
        for x in 0..size {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            // Coordinates in the shape's rotated frame, in units of the radius.
            let u = (ca * dx + sa * dy) / rad;
            let v = (-sa * dx + ca * dy) / rad;
            let d = (u * u + v * v).sqrt();
            let inside = match class {
                0 => d < 1.0,
                1 => u.abs() < 0.8 && v.abs() < 0.8,
                2 => v > -0.6 && v < 0.9 && u.abs() < (v + 0.6) * 0.65,
                3 => (u.abs() < 0.28 && v.abs() < 1.0) || (v.abs() < 0.28 && u.abs() < 1.0),
                4 => d < 1.0 && d > 0.6,
                5 => d < 1.2 && ((u * rad / period).floor() as i32).rem_euclid(2) == 0,
                6 => d < 1.2 && (((u * rad / period).floor() as i32) + ((v * rad / period).floor() as i32)).rem_euclid(2) == 0,
                7 => {
                    let (gu, gv) = ((u * rad / period).rem_euclid(1.0) - 0.5, (v * rad / period).rem_euclid(1.0) - 0.5);
                    d < 1.2 && gu * gu + gv * gv < 0.09
                }
                8 => {
                    let a = v.atan2(u);
                    d < 0.45 + 0.55 * (0.5 + 0.5 * (5.0 * a).cos()).powf(3.0)
                }
                _ => d < 1.0 && ((u - 0.45).powi(2) + v * v).sqrt() > 0.75,
            };
            let base = if inside { fg } else { bg };
            for c in 0..3 {
                let val = base[c] + r.random_range(-noise..noise);
                data[(y * size + x) * 3 + c] = (val.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
    Rgb8 { width: size, height: size, data }
}

fn split(per_class: usize, size: usize, seed: u64, split: u64) -> ImageSet {
    let n = per_class * CLASSES.len();
    let images: Vec<Pixels> = (0..n)
        .into_par_iter()
        .map(|i| Pixels::Memory(render(i % CLASSES.len(), size, &mut rng(seed, Stream::Synthetic, &[split, i as u64]))))
        .collect();
    ImageSet {
        images,
        labels: (0..n).map(|i| i % CLASSES.len()).collect(),
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        skipped: Vec::new(),
    }
}

/// Train and test splits, disjoint draws of the same distribution.
pub fn generate(cfg: &SyntheticConfig, size: usize, seed: u64) -> Splits {
    Splits { train: split(cfg.train_per_class, size, seed, 0), test: split(cfg.test_per_class, size, seed, 1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_by_seed_and_all_classes_present() {
        let cfg = SyntheticConfig { train_per_class: 3, test_per_class: 1 };
        let a = generate(&cfg, 16, 1);
        let b = generate(&cfg, 16, 1);
        let c = generate(&cfg, 16, 2);
        let px = |s: &ImageSet, i: usize| match &s.images[i] {
            Pixels::Memory(m) => m.data.clone(),
            Pixels::File(_) => unreachable!(),
        };
        assert_eq!(px(&a.train, 5), px(&b.train, 5));
        assert_ne!(px(&a.train, 5), px(&c.train, 5));
        assert_eq!(a.train.len(), 30);
        assert_eq!(a.test.len(), 10);
        for k in 0..10 {
            assert_eq!(a.train.labels.iter().filter(|&&l| l == k).count(), 3);
        }
    }
}
