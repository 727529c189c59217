//! A built-in, procedurally generated dataset of ten object classes. As in natural images, the
//! class shows in both the object's shape and its typical colour: each class has a shape and a
//! characteristic hue, and every image draws the hue's jitter, the saturation and brightness, the
//! object's position, size and rotation, a random background colour with a texture, and pixel
//! noise. Deterministic by seed; small enough to pre-train on a laptop CPU.

use super::{ImageSet, Pixels, Splits, SyntheticConfig};
use crate::image::{Rgb8, hsv_to_rgb};
use crate::rng::{Stream, rng};
use rand::Rng;
use rayon::prelude::*;

/// The class names, in label order.
pub const CLASSES: [&str; 10] = [
    "disc", "square", "triangle", "cross", "ring", "star", "crescent", "bar", "diamond", "arrow",
];

/// Whether (u, v), in the object's frame in units of its radius, is inside the shape of `class`.
fn inside(class: usize, u: f32, v: f32) -> bool {
    let d = (u * u + v * v).sqrt();
    match class {
        0 => d < 1.0,
        1 => u.abs() < 0.8 && v.abs() < 0.8,
        2 => v > -0.7 && v < 0.9 && u.abs() < (v + 0.7) * 0.6,
        3 => (u.abs() < 0.3 && v.abs() < 1.0) || (v.abs() < 0.3 && u.abs() < 1.0),
        4 => d < 1.0 && d > 0.55,
        5 => d < 0.4 + 0.6 * (0.5 + 0.5 * (5.0 * v.atan2(u)).cos()).powf(2.0),
        6 => d < 1.0 && ((u - 0.5).powi(2) + v * v).sqrt() > 0.75,
        7 => u.abs() < 1.0 && v.abs() < 0.35,
        8 => u.abs() + v.abs() < 1.0,
        _ => {
            (v.abs() < 0.25 && u > -1.0 && u < 0.2)
                || ((0.2..1.0).contains(&u) && v.abs() < (1.0 - u) * 0.9)
        }
    }
}

/// Render one image of `class` at `size`×`size`.
pub fn render(class: usize, size: usize, r: &mut impl Rng) -> Rgb8 {
    let hue = class as f32 / CLASSES.len() as f32 + r.random_range(-0.04..0.04f32);
    let (fr, fg, fb) = hsv_to_rgb(hue, r.random_range(0.5..1.0), r.random_range(0.5..1.0));
    let bg1 = hsv_to_rgb(
        r.random_range(0.0..1.0),
        r.random_range(0.0..0.6),
        r.random_range(0.1..0.9),
    );
    let bg2 = hsv_to_rgb(
        r.random_range(0.0..1.0),
        r.random_range(0.0..0.6),
        r.random_range(0.1..0.9),
    );
    let s = size as f32;
    let (cx, cy) = (r.random_range(0.3..0.7) * s, r.random_range(0.3..0.7) * s);
    let rad = r.random_range(0.25..0.4) * s;
    let angle: f32 = r.random_range(-0.5..0.5);
    let (ca, sa) = (angle.cos(), angle.sin());
    let period = r.random_range(0.15..0.4) * s;
    let (bu, bv) = (r.random_range(-1.0..1.0f32), r.random_range(-1.0..1.0f32));
    let noise = 0.05f32;
    let mut data = vec![0u8; size * size * 3];
    for y in 0..size {
        for x in 0..size {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            let (u, v) = ((ca * dx + sa * dy) / rad, (-sa * dx + ca * dy) / rad);
            let c = if inside(class, u, v) {
                (fr, fg, fb)
            } else if ((bu * x as f32 + bv * y as f32) / period).rem_euclid(2.0) < 1.0 {
                bg1
            } else {
                bg2
            };
            for (k, val) in [c.0, c.1, c.2].into_iter().enumerate() {
                let val = val + r.random_range(-noise..noise);
                data[(y * size + x) * 3 + k] = (val.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
    Rgb8 {
        width: size,
        height: size,
        data,
    }
}

fn split(per_class: usize, size: usize, seed: u64, split: u64) -> ImageSet {
    let n = per_class * CLASSES.len();
    let images: Vec<Pixels> = (0..n)
        .into_par_iter()
        .map(|i| {
            Pixels::Memory(render(
                i % CLASSES.len(),
                size,
                &mut rng(seed, Stream::Synthetic, &[split, i as u64]),
            ))
        })
        .collect();
    ImageSet {
        images,
        names: (0..n)
            .map(|i| {
                format!(
                    "synthetic/{}/{i}",
                    if split == 0 { "train" } else { "test" }
                )
            })
            .collect(),
        labels: (0..n).map(|i| i % CLASSES.len()).collect(),
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        skipped: Vec::new(),
        lost: 0,
    }
}

/// Train and test splits, disjoint draws of the same distribution.
pub fn generate(cfg: &SyntheticConfig, size: usize, seed: u64) -> Splits {
    Splits {
        train: split(cfg.train_per_class, size, seed, 0),
        test: split(cfg.test_per_class, size, seed, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_by_seed_and_all_classes_present() {
        let cfg = SyntheticConfig {
            train_per_class: 3,
            test_per_class: 1,
        };
        let a = generate(&cfg, 16, 1);
        let b = generate(&cfg, 16, 1);
        let c = generate(&cfg, 16, 2);
        let px = |s: &ImageSet, i: usize| match &s.images[i] {
            Pixels::Memory(m) => m.data.clone(),
            Pixels::File(_) | Pixels::Member { .. } => unreachable!(),
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
