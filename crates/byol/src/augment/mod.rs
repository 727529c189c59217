//! The two BYOL views (paper Appendix B, Table 6): one pipeline, two parameter sets.
//!
//! As in the official code, the work is split in two. On the host, per image: decode, random
//! resized crop (bilinear) to u8, and the draw of every random parameter of the view
//! ([`sample_params`], from the RNG the loader seeds by (seed, epoch, image index)). On the
//! training device, batched ([`ViewPipeline`]): horizontal flip, colour jitter (brightness,
//! contrast, saturation, hue in a random order per sample, clipped after each), grayscale,
//! Gaussian blur (separable, per-sample σ), solarize, normalisation. [`apply_host`] is the same
//! computation per image on the host: the reference the device pipeline is tested against.

mod device;
pub mod loader;
mod ops;
pub mod preview;
mod resize;

pub use device::ViewPipeline;
pub use ops::*;
pub use resize::*;

use crate::image::Rgb8;
use crate::{Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Parameters of one view. Defaults: view t of the paper's Table 6.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ViewConfig {
    /// Crop area as a fraction of the image, sampled uniformly in this range. Paper: [0.08, 1].
    #[serde(default = "d_scale")]
    pub crop_scale: [f64; 2],
    /// Crop aspect ratio, log-uniform in this range. Paper: [3/4, 4/3].
    #[serde(default = "d_ratio")]
    pub crop_ratio: [f64; 2],
    /// Horizontal flip probability. Paper: 0.5.
    #[serde(default = "d_half")]
    pub flip_prob: f64,
    /// Probability of applying colour jitter. Paper: 0.8.
    #[serde(default = "d_jitter")]
    pub jitter_prob: f64,
    /// Brightness: additive delta ~ U[−b, b]. Paper: 0.4.
    #[serde(default = "d_04")]
    pub brightness: f64,
    /// Contrast: factor ~ U[1−c, 1+c] about the grayscale mean. Paper: 0.4.
    #[serde(default = "d_04")]
    pub contrast: f64,
    /// Saturation: factor ~ U[1−s, 1+s] on the HSV saturation. Paper: 0.2.
    #[serde(default = "d_02")]
    pub saturation: f64,
    /// Hue: shift ~ U[−h, h] of the HSV hue (in turns). Paper: 0.1.
    #[serde(default = "d_01")]
    pub hue: f64,
    /// Grayscale probability. Paper: 0.2.
    #[serde(default = "d_02")]
    pub grayscale_prob: f64,
    /// Gaussian blur probability. Paper: 1.0 (view t), 0.1 (view t').
    #[serde(default = "d_one")]
    pub blur_prob: f64,
    /// Blur σ range (pixels at the training size). Paper: [0.1, 2.0].
    #[serde(default = "d_sigma")]
    pub blur_sigma: [f64; 2],
    /// Blur kernel side as a fraction of the image side (rounded to odd). Paper: 23 px of 224 ≈ 0.1.
    #[serde(default = "d_01")]
    pub blur_kernel_fraction: f64,
    /// Solarisation probability. Paper: 0.0 (view t), 0.2 (view t').
    #[serde(default)]
    pub solarize_prob: f64,
}

fn d_scale() -> [f64; 2] {
    [0.08, 1.0]
}
fn d_ratio() -> [f64; 2] {
    [3.0 / 4.0, 4.0 / 3.0]
}
fn d_half() -> f64 {
    0.5
}
fn d_jitter() -> f64 {
    0.8
}
fn d_04() -> f64 {
    0.4
}
fn d_02() -> f64 {
    0.2
}
fn d_01() -> f64 {
    0.1
}
fn d_one() -> f64 {
    1.0
}
fn d_sigma() -> [f64; 2] {
    [0.1, 2.0]
}

impl ViewConfig {
    /// View t of Table 6.
    pub fn paper_view1() -> Self {
        Self {
            crop_scale: d_scale(),
            crop_ratio: d_ratio(),
            flip_prob: 0.5,
            jitter_prob: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.2,
            hue: 0.1,
            grayscale_prob: 0.2,
            blur_prob: 1.0,
            blur_sigma: d_sigma(),
            blur_kernel_fraction: 0.1,
            solarize_prob: 0.0,
        }
    }

    /// View t' of Table 6.
    pub fn paper_view2() -> Self {
        Self {
            blur_prob: 0.1,
            solarize_prob: 0.2,
            ..Self::paper_view1()
        }
    }

    fn validate(&self, field: &str) -> Result<()> {
        let prob = |name: &str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(Error::config(
                    format!("{field}.{name}"),
                    format!("{p} is outside [0, 1]"),
                ))
            }
        };
        prob("flip-prob", self.flip_prob)?;
        prob("jitter-prob", self.jitter_prob)?;
        prob("grayscale-prob", self.grayscale_prob)?;
        prob("blur-prob", self.blur_prob)?;
        prob("solarize-prob", self.solarize_prob)?;
        let [s0, s1] = self.crop_scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return Err(Error::config(
                format!("{field}.crop-scale"),
                format!("[{s0}, {s1}] must satisfy 0 < min ≤ max ≤ 1"),
            ));
        }
        let [r0, r1] = self.crop_ratio;
        if !(r0 > 0.0 && r0 <= r1) {
            return Err(Error::config(
                format!("{field}.crop-ratio"),
                format!("[{r0}, {r1}] must satisfy 0 < min ≤ max"),
            ));
        }
        for (name, v, hi) in [
            ("brightness", self.brightness, 1.0),
            ("contrast", self.contrast, 1.0),
            ("saturation", self.saturation, 1.0),
            ("hue", self.hue, 0.5),
        ] {
            if !(0.0..=hi).contains(&v) {
                return Err(Error::config(
                    format!("{field}.{name}"),
                    format!("{v} is outside [0, {hi}]"),
                ));
            }
        }
        let [a, b] = self.blur_sigma;
        if !(a > 0.0 && a <= b) {
            return Err(Error::config(
                format!("{field}.blur-sigma"),
                format!("[{a}, {b}] must satisfy 0 < min ≤ max"),
            ));
        }
        if !(0.0..=1.0).contains(&self.blur_kernel_fraction) {
            return Err(Error::config(
                format!("{field}.blur-kernel-fraction"),
                "must be in [0, 1]",
            ));
        }
        Ok(())
    }
}

/// Both views and the normalisation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AugmentConfig {
    /// View t (paper: blur 1.0, solarize 0.0).
    #[serde(default = "ViewConfig::paper_view1")]
    pub view1: ViewConfig,
    /// View t' (paper: blur 0.1, solarize 0.2).
    #[serde(default = "ViewConfig::paper_view2")]
    pub view2: ViewConfig,
    /// Per-channel mean subtracted after augmenting (default: ImageNet's).
    #[serde(default = "d_mean")]
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided after augmenting (default: ImageNet's).
    #[serde(default = "d_std")]
    pub std: [f32; 3],
    /// Where the operations after the crop run (the two give the same views to 1e-5).
    #[serde(default)]
    pub placement: Placement,
    /// Resizing of the training crops (evaluation resizes bilinearly, as torchvision's default).
    /// Paper: bicubic at 224 px.
    #[serde(default)]
    pub interpolation: Interpolation,
}

/// Where flip, jitter, grayscale, blur, solarize and normalisation run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// `device` on an accelerator, `host` on a CPU backend. On a CPU the batched tensor
    /// operations are memory-bound and several times slower than the per-image loop, which also
    /// overlaps with the training step on the loader threads (see `byol bench augment`).
    #[default]
    Auto,
    /// Per image on the loader threads ([`apply_host`]).
    Host,
    /// Batched on the training device ([`ViewPipeline`]), as the official code does.
    Device,
}

impl Placement {
    /// Whether the operations run on the device for `backend`.
    pub fn on_device(self, backend: crate::backend::BackendKind) -> bool {
        match self {
            Placement::Auto => backend != crate::backend::BackendKind::Flex,
            Placement::Host => false,
            Placement::Device => true,
        }
    }
}

fn d_mean() -> [f32; 3] {
    [0.485, 0.456, 0.406]
}
fn d_std() -> [f32; 3] {
    [0.229, 0.224, 0.225]
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            view1: ViewConfig::paper_view1(),
            view2: ViewConfig::paper_view2(),
            mean: d_mean(),
            std: d_std(),
            placement: Placement::Auto,
            interpolation: Interpolation::Bilinear,
        }
    }
}

impl AugmentConfig {
    pub fn validate(&self) -> Result<()> {
        self.view1.validate("augment.view1")?;
        self.view2.validate("augment.view2")?;
        if self.std.iter().any(|s| s.is_nan() || *s <= 0.0) {
            return Err(Error::config(
                "augment.std",
                "every channel's std must be positive",
            ));
        }
        Ok(())
    }
}

/// The random parameters of one view of one image, drawn on the host from the seeded RNG.
/// The same parameters give the same view on the host ([`apply_host`]) and on the device
/// ([`ViewPipeline`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewParams {
    pub crop: Crop,
    pub flip: bool,
    pub jitter: Option<Jitter>,
    pub grayscale: bool,
    pub blur_sigma: Option<f32>,
    pub solarize: bool,
}

/// Colour-jitter parameters: the four operations in `order` (0 brightness, 1 contrast,
/// 2 saturation, 3 hue), as torchvision's and the official code's random order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    pub order: [u8; 4],
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

impl Jitter {
    /// The parameter of operation `op` (0 brightness, 1 contrast, 2 saturation, 3 hue).
    pub fn param(&self, op: u8) -> f32 {
        match op {
            0 => self.brightness,
            1 => self.contrast,
            2 => self.saturation,
            _ => self.hue,
        }
    }
}

/// Draw the parameters of one view of a `width`×`height` image.
pub fn sample_params(
    width: usize,
    height: usize,
    view: &ViewConfig,
    rng: &mut impl Rng,
) -> ViewParams {
    let crop = sample_crop(width, height, view.crop_scale, view.crop_ratio, rng);
    let flip = rng.random::<f64>() < view.flip_prob;
    let jitter = (rng.random::<f64>() < view.jitter_prob).then(|| {
        let mut order = [0u8, 1, 2, 3];
        for i in (1..4).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        Jitter {
            order,
            brightness: rng.random_range(-view.brightness..=view.brightness) as f32,
            contrast: rng.random_range(1.0 - view.contrast..=1.0 + view.contrast) as f32,
            saturation: rng.random_range(1.0 - view.saturation..=1.0 + view.saturation) as f32,
            hue: rng.random_range(-view.hue..=view.hue) as f32,
        }
    });
    let grayscale = rng.random::<f64>() < view.grayscale_prob;
    let blur_sigma = (rng.random::<f64>() < view.blur_prob)
        .then(|| rng.random_range(view.blur_sigma[0]..=view.blur_sigma[1]) as f32);
    let solarize = rng.random::<f64>() < view.solarize_prob;
    ViewParams {
        crop,
        flip,
        jitter,
        grayscale,
        blur_sigma,
        solarize,
    }
}

/// Apply everything after the crop to one CHW image in [0, 1], per pixel on the host: flip,
/// jitter, grayscale, blur (kernel side `kernel`), solarize. The reference implementation of the
/// device pipeline, and the per-image baseline of `byol bench augment`.
pub fn apply_host(x: &mut [f32], size: usize, p: &ViewParams, kernel: usize) {
    if p.flip {
        hflip(x, size);
    }
    if let Some(j) = &p.jitter {
        for op in j.order {
            match op {
                0 => brightness(x, j.brightness),
                1 => contrast(x, j.contrast),
                2 => saturation(x, j.saturation),
                _ => hue(x, j.hue),
            }
        }
    }
    if p.grayscale {
        grayscale(x);
    }
    if let Some(sigma) = p.blur_sigma {
        gaussian_blur(x, size, kernel, sigma);
    }
    if p.solarize {
        solarize(x);
    }
}

/// Everything after the crop for a batch, on the host: u8 crops [B, 3, S, S] (CHW per image, as
/// [`resize_crop_u8`] makes them) and each image's parameters → normalised f32 [B, 3, S, S],
/// the images in parallel. The loader's `placement = "host"` path, and the reference the device
/// pipeline is tested against.
pub fn finish_host(
    crops: &[u8],
    params: &[ViewParams],
    size: usize,
    view: &ViewConfig,
    aug: &AugmentConfig,
) -> Vec<f32> {
    use rayon::prelude::*;
    let kernel = kernel_size(size, view.blur_kernel_fraction);
    let mut x: Vec<f32> = crops.iter().map(|&v| f32::from(v) / 255.0).collect(); // [B, 3, S, S]
    x.par_chunks_mut(3 * size * size)
        .zip(params.par_iter())
        .for_each(|(img, p)| {
            apply_host(img, size, p, kernel);
            normalize(img, &aug.mean, &aug.std);
        });
    x
}

/// Make one view of `img` at `size`×`size` entirely on the host: returns normalised CHW f32 of
/// length 3·size².
pub fn make_view(
    img: &Rgb8,
    size: usize,
    view: &ViewConfig,
    aug: &AugmentConfig,
    rng: &mut impl Rng,
) -> Vec<f32> {
    let p = sample_params(img.width, img.height, view, rng);
    let mut x: Vec<f32> = resize_crop_u8(img, p.crop, size, aug.interpolation)
        .into_iter()
        .map(|v| f32::from(v) / 255.0)
        .collect(); // [3, S, S]
    apply_host(
        &mut x,
        size,
        &p,
        kernel_size(size, view.blur_kernel_fraction),
    );
    normalize(&mut x, &aug.mean, &aug.std);
    x
}

/// Deterministic evaluation preprocessing: resize the shorter side to `size`·256/224 (or to
/// `size` if the image is not larger than that), centre-crop `size`×`size`, normalise.
pub fn eval_view(img: &Rgb8, size: usize, norm: (&[f32; 3], &[f32; 3])) -> Vec<f32> {
    let short = img.width.min(img.height);
    let crop_side = if short > size {
        (short as f64 * 224.0 / 256.0).round().max(size as f64) as usize
    } else {
        short
    };
    let crop_side = crop_side.min(short);
    let x0 = (img.width - crop_side) / 2;
    let y0 = (img.height - crop_side) / 2;
    let mut x = resize_crop(
        img,
        Crop {
            x: x0 as f64,
            y: y0 as f64,
            w: crop_side as f64,
            h: crop_side as f64,
        },
        size,
        Interpolation::Bilinear,
    );
    normalize(&mut x, norm.0, norm.1);
    x
}
