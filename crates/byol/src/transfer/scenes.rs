//! The depth data: built-in synthetic scenes with exact depth, and folders of RGB images with
//! 16-bit PNG depth maps in millimetres (the layout of the common 16-bit exports of NYU v2, such
//! as BTS's): `<split>/rgb/<id>.png|jpg` with `<split>/depth/<id>.png`, 0 where nothing was
//! measured.

use super::Split;
use crate::image::Rgb8;
use crate::rng::{Stream, key};
use crate::{Error, Result};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// One image and its depth in metres (0: not measured), row-major, the image's size.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthSample {
    pub id: String,
    pub image: Rgb8,
    pub depth: Vec<f32>,
}

/// A built-in scene, `size` px square, drawn from `key`: a camera 1.5 m above a checkered floor
/// that meets a striped back wall 6–10 m away, and 2–5 upright boxes on the floor 1.5–8 m away
/// (drawn far to near, so nearer boxes hide farther ones), every surface's colour faded towards
/// grey with distance. The image carries the cues a network can learn depth from (perspective of
/// the floor's squares, the height in the image where a box meets the floor, occlusion, haze);
/// the depth of each pixel is exact. Synthetic: no claim that it resembles NYU v2.
pub fn scene(size: usize, key: u64) -> DepthSample {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(key);
    let mut scene = Scene::room(size, &mut r);
    scene.boxes(&mut r);
    scene.into_sample()
}

/// A scene being drawn: the camera (focal length `f` px, `cam` m above the floor, the horizon's
/// row), the back wall's distance, and the pixels' colours and depths so far.
struct Scene {
    size: usize,
    f: f32,
    cam: f32,
    horizon: f32,
    wall: f32,
    rgb: Vec<[f32; 3]>,
    depth: Vec<f32>,
}

/// A colour faded towards grey with distance `z`.
fn haze(rgb: [f32; 3], z: f32) -> [f32; 3] {
    let k = (-z / 12.0).exp();
    rgb.map(|c| c * k + 0.6 * (1.0 - k))
}

impl Scene {
    /// The room: the floor below the row where it meets the wall, the wall above.
    fn room(size: usize, r: &mut impl Rng) -> Scene {
        let s = size as f32;
        let (f, cam) = (0.9 * s, 1.5f32);
        let horizon = s * r.random_range(0.3..0.45);
        let wall = r.random_range(6.0..10.0f32);
        let floor_a = [
            r.random_range(0.5..1.0f32),
            r.random_range(0.3..0.7),
            r.random_range(0.1..0.4),
        ];
        let floor_b = [0.15f32, 0.15, 0.2];
        let wall_rgb = [
            r.random_range(0.3..0.9f32),
            r.random_range(0.3..0.9),
            r.random_range(0.3..0.9),
        ];
        let mut scene = Scene {
            size,
            f,
            cam,
            horizon,
            wall,
            rgb: vec![[0f32; 3]; size * size],
            depth: vec![0f32; size * size],
        };
        let meet = horizon + cam * f / wall;
        for y in 0..size {
            for x in 0..size {
                let (yc, xc) = (y as f32 + 0.5, x as f32 + 0.5 - s / 2.0);
                let (z, c) = if yc > meet {
                    let z = cam * f / (yc - horizon);
                    let (wx, wz) = (xc * z / f, z);
                    let check =
                        ((wx / 0.5).floor() as i64 + (wz / 0.5).floor() as i64).rem_euclid(2) == 0;
                    (z, if check { floor_a } else { floor_b })
                } else {
                    let stripe = ((xc * wall / f / 0.4).floor() as i64).rem_euclid(2) == 0;
                    (
                        wall,
                        if stripe {
                            wall_rgb
                        } else {
                            wall_rgb.map(|c| c * 0.7)
                        },
                    )
                };
                scene.rgb[y * size + x] = haze(c, z);
                scene.depth[y * size + x] = z;
            }
        }
        scene
    }

    /// 2–5 upright boxes on the floor, drawn far to near.
    fn boxes(&mut self, r: &mut impl Rng) {
        let (s, f, wall) = (self.size as f32, self.f, self.wall);
        let mut boxes: Vec<(f32, f32, f32, f32, [f32; 3])> = (0..r.random_range(2..=5))
            .map(|_| {
                let z = r.random_range(1.5..8.0f32).min(wall - 0.5);
                (
                    z,
                    r.random_range(-2.0..2.0f32),
                    r.random_range(0.4..1.2f32),
                    r.random_range(0.4..1.8f32),
                    [r.random(), r.random(), r.random()],
                )
            })
            .collect();
        boxes.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (z, wx, w, h, c) in boxes {
            let bottom = self.horizon + self.cam * f / z;
            let (top, left, right) = (
                bottom - h * f / z,
                s / 2.0 + (wx - w / 2.0) * f / z,
                s / 2.0 + (wx + w / 2.0) * f / z,
            );
            for y in (top.max(0.0) as usize)..(bottom.min(s) as usize) {
                for x in (left.max(0.0) as usize)..(right.min(s) as usize) {
                    // A vertical shading band, so that a box has texture of its own.
                    let band = ((x as f32 - left) / (right - left) * 4.0) as usize;
                    let shade = if band.is_multiple_of(2) { 1.0 } else { 0.8 };
                    self.rgb[y * self.size + x] = haze(c.map(|v| v * shade), z);
                    self.depth[y * self.size + x] = z;
                }
            }
        }
    }

    fn into_sample(self) -> DepthSample {
        let data = self
            .rgb
            .iter()
            .flat_map(|p| p.map(|c| (c.clamp(0.0, 1.0) * 255.0).round() as u8))
            .collect();
        let image = Rgb8 {
            width: self.size,
            height: self.size,
            data,
        };
        DepthSample {
            id: String::new(),
            image,
            depth: self.depth,
        }
    }
}

/// `count` scenes of `size` px for `split`, drawn from `seed`.
pub fn scenes(count: usize, size: usize, seed: u64, split: Split) -> Vec<DepthSample> {
    let slot = match split {
        Split::Train => 0,
        Split::Val => 1,
    };
    (0..count)
        .map(|i| {
            let mut s = scene(size, key(seed, Stream::Scene, &[slot, i as u64]));
            s.id = format!("{split}-{i:06}");
            s
        })
        .collect()
}

/// Write a depth map in metres as a 16-bit grayscale PNG in millimetres (0: not measured).
pub fn write_depth_png(path: &Path, depth: &[f32], width: usize, height: usize) -> Result<()> {
    let bytes: Vec<u8> = depth
        .iter()
        .flat_map(|&m| ((m * 1000.0).round().clamp(0.0, 65535.0) as u16).to_be_bytes())
        .collect();
    crate::io::write_png(
        path,
        (width, height),
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        None,
        &bytes,
    )
}

/// A 16-bit grayscale PNG depth map in millimetres, as metres, with its size.
pub fn read_depth_png(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let (buf, w, h) = super::read_png(
        path,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        "depth map",
        "a 16-bit grayscale PNG in millimetres",
    )?;
    Ok((
        buf.chunks_exact(2)
            .map(|b| f32::from(u16::from_be_bytes([b[0], b[1]])) / 1000.0)
            .collect(),
        w,
        h,
    ))
}

/// What a split's depths are fit for: an error (naming `split` of the data at `at`) when no pixel
/// has a measured depth, since there would be nothing to score (rms 0.000 of 0 pixels); a warning
/// when the measured depths lie outside 0.05–100 m, the sign of maps written in another unit than
/// millimetres (metres stored as millimetres read as a few millimetres, and give rel in the
/// hundreds).
pub fn check_depths(at: &Path, split: Split, samples: &[DepthSample]) -> Result<Option<String>> {
    let valid = || {
        samples
            .iter()
            .flat_map(|s| s.depth.iter().copied())
            .filter(|&d| d > 0.0)
    };
    let Some((low, high)) = valid().fold(None, |r: Option<(f32, f32)>, d| {
        Some(r.map_or((d, d), |(l, h)| (l.min(d), h.max(d))))
    }) else {
        return Err(Error::data(
            at,
            format!(
                "the `{split}` split has no pixel with a measured (positive) depth: nothing to train on or score"
            ),
        ));
    };
    Ok((high < 0.05 || low > 100.0).then(|| {
        format!(
            "the `{split}` depths of {} lie between {low:.4} and {high:.4} m: depth maps are read as millimetres; maps in another unit give meaningless scores",
            at.display()
        )
    }))
}

/// The samples of split `split` of a depth folder (see the module's documentation), by id order.
pub fn read_folder(root: &Path, split: Split) -> Result<Vec<DepthSample>> {
    let rgb_dir = root.join(split.name()).join("rgb");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&rgb_dir)
        .map_err(|e| Error::io(&rgb_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| {
                ["png", "jpg", "jpeg"].contains(&x.to_string_lossy().to_lowercase().as_str())
            })
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::data(&rgb_dir, "no .png or .jpg image"));
    }
    files
        .iter()
        .map(|file| {
            let id = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let image = crate::data::decode::decode(file)?;
            let depth_path = root
                .join(split.name())
                .join("depth")
                .join(format!("{id}.png"));
            let (depth, w, h) = read_depth_png(&depth_path)?;
            if (w, h) != (image.width, image.height) {
                return Err(Error::data(
                    &depth_path,
                    format!(
                        "the depth map is {w}×{h}, its image {}×{}",
                        image.width, image.height
                    ),
                ));
            }
            Ok(DepthSample { id, image, depth })
        })
        .collect()
}

/// Write `samples` as split `split` of a depth folder under `root`.
pub fn write_folder(root: &Path, split: Split, samples: &[DepthSample]) -> Result<()> {
    let (rgb, depth) = (
        root.join(split.name()).join("rgb"),
        root.join(split.name()).join("depth"),
    );
    for d in [&rgb, &depth] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    for s in samples {
        crate::io::write_rgb_png(&rgb.join(format!("{}.png", s.id)), &s.image)?;
        write_depth_png(
            &depth.join(format!("{}.png", s.id)),
            &s.depth,
            s.image.width,
            s.image.height,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No measured pixel is an error naming the split; depths of a few millimetres (metres
    /// written as millimetres) a warning; scene-like depths neither.
    #[test]
    fn depths_with_nothing_to_score_or_in_another_unit_are_told() {
        let sample = |depth: Vec<f32>| DepthSample {
            id: "a".into(),
            image: Rgb8 {
                width: 2,
                height: 1,
                data: vec![0; 6],
            },
            depth,
        };
        let at = Path::new("scenes");
        let e = check_depths(at, Split::Val, &[sample(vec![0.0, 0.0])])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`val` split has no pixel with a measured"),
            "{e}"
        );
        let w = check_depths(at, Split::Train, &[sample(vec![0.002, 0.0])])
            .unwrap()
            .expect("a warning");
        assert!(
            w.contains("`train` depths") && w.contains("0.0020 and 0.0020 m"),
            "{w}"
        );
        assert_eq!(
            check_depths(
                at,
                Split::Val,
                &[sample(vec![1.5, 0.0]), sample(vec![9.8, 3.0])]
            )
            .unwrap(),
            None
        );
    }

    /// Scenes: exact depths in the floor/wall/box ranges, seeded; they round-trip through the
    /// 16-bit PNG folder layout to the millimetre; an 8-bit depth map is a named error.
    #[test]
    fn scenes_round_trip_through_the_folder_layout() {
        let a = scenes(3, 32, 5, Split::Val);
        assert_eq!(a, scenes(3, 32, 5, Split::Val));
        assert_ne!(a[0].depth, scenes(1, 32, 6, Split::Val)[0].depth);
        assert_ne!(a[0].depth, scenes(1, 32, 5, Split::Train)[0].depth);
        for s in &a {
            assert!(s.depth.iter().all(|&d| (1.5..=10.0).contains(&d)));
            let near = s.depth.iter().fold(f32::MAX, |m, &d| m.min(d));
            let far = s.depth.iter().fold(0f32, |m, &d| m.max(d));
            assert!(far > 2.0 * near, "a scene spans depths: {near}..{far}");
        }
        let root = std::env::temp_dir().join(format!("byol-depth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        write_folder(&root, Split::Val, &a).unwrap();
        let back = read_folder(&root, Split::Val).unwrap();
        for (x, y) in a.iter().zip(&back) {
            assert_eq!((x.id.as_str(), &x.image), (y.id.as_str(), &y.image));
            assert!(
                x.depth
                    .iter()
                    .zip(&y.depth)
                    .all(|(p, q)| (p - q).abs() <= 0.0005 + 1e-6)
            );
        }
        image::GrayImage::new(32, 32)
            .save(root.join("val/depth/val-000001.png"))
            .unwrap();
        let e = read_folder(&root, Split::Val).unwrap_err().to_string();
        assert!(e.contains("val-000001.png") && e.contains("16-bit"), "{e}");
        let e = read_folder(&root, Split::Train).unwrap_err().to_string();
        assert!(e.contains("train/rgb"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
