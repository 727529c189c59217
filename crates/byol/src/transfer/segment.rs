//! Semantic segmentation by fine-tuning an FCN on the encoder: the paper's Table 4 (PASCAL VOC
//! 2012, mIoU), which follows MoCo's protocol (He et al. 2020, Appendix A): the last stage
//! dilated (output stride 16 with the ImageNet stem, 4 with the CIFAR one), two 3×3
//! convolutions of 256 channels with dilation 6, BatchNorm and ReLU, a 1×1 classifier, bilinear
//! upsampling to the input; per-pixel cross-entropy with VOC's ignore label; random scaling in
//! [0.5, 2], crop and flip; SGD with momentum 0.9 and weight decay 1e-4, the learning rate ×0.1
//! at 70 % and 90 % of training. Validation images are scored whole, in eval mode.

use super::IGNORE;
use super::images::{image_tensor, rows_picture};
use super::metrics::{Confusion, SegScores};
use super::training::{Run, Training};
use super::voc::Sample;
use crate::augment::AugmentConfig;
use crate::augment::normalize;
use crate::image::Rgb8;
use crate::model::ResNet;
use crate::rng::{Stream, rng};
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
pub use fcn::{Fcn, pixel_loss};
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// `[transfer.segment]`: the fine-tuning protocol.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SegmentConfig {
    /// Passes over the training images. Paper: 30,000 iterations at batch 16 on VOC's 10,582
    /// images (about 45 epochs).
    #[serde(default = "super::training::d_epochs")]
    pub epochs: usize,
    /// Paper: 16.
    #[serde(default = "super::training::d_batch")]
    pub batch_size: usize,
    /// Paper: the best of 5 log-spaced values in [1e-3, 1e-1] on a held-out split.
    #[serde(default = "super::training::d_lr")]
    pub learning_rate: f64,
    /// Paper: 1e-4.
    #[serde(default = "super::training::d_wd")]
    pub weight_decay: f64,
    /// Channels of the head's two 3×3 convolutions. Paper: 256.
    #[serde(default = "d_head")]
    pub head_channels: usize,
    /// Dilation of the head's 3×3 convolutions. MoCo: 6 (DeepLab's large field of view).
    #[serde(default = "d_head_dilation")]
    pub head_dilation: usize,
    /// Replace the last stage's stride by dilation ([`ResNet::dilate_last_stage`]). Paper: yes.
    #[serde(default = "d_true")]
    pub dilate: bool,
    /// Range of the random rescaling of a training image. Paper: [0.5, 2.0].
    #[serde(default = "d_scale")]
    pub scale: [f64; 2],
    /// Side of the square training crop, in pixels. Paper: 513 (VOC images are about 500 px);
    /// deviation: 64 by default, the side of a 2 × 2 mosaic of 32 px images.
    #[serde(default = "d_crop")]
    pub crop: usize,
    /// Validation images drawn in the run's `predictions.png`.
    #[serde(default = "super::training::d_pictures")]
    pub pictures: usize,
    /// Steps between checkpoints of the fine-tuning (one is also written when it is stopped).
    #[serde(default = "super::training::d_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Where the images and label maps come from.
    #[serde(default)]
    pub data: SegmentData,
}

/// The segmentation data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "source", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SegmentData {
    /// Mosaics of the labelled images of `[data]` (CIFAR-10's, for one): `grid` × `grid` tiles
    /// of `tile` px, `train` of them from the training split and `val` from the test split
    /// ([`super::mosaic`]).
    Mosaic {
        grid: usize,
        tile: usize,
        train: usize,
        val: usize,
    },
    /// A dataset in PASCAL VOC's layout ([`super::voc`]): the splits `train` and `val`.
    Voc { path: std::path::PathBuf },
}

impl Default for SegmentData {
    fn default() -> Self {
        SegmentData::Mosaic {
            grid: 2,
            tile: 32,
            train: 2000,
            val: 500,
        }
    }
}

impl SegmentData {
    /// `mosaic`, `mosaic:<grid>` or `voc:<path>`, as `--dataset` takes it.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let default = SegmentData::default();
        match s.split_once(':') {
            None if s == "mosaic" => Ok(default),
            Some(("mosaic", g)) => match (g.parse::<usize>(), default) {
                (
                    Ok(grid),
                    SegmentData::Mosaic {
                        tile, train, val, ..
                    },
                ) if grid >= 1 => Ok(SegmentData::Mosaic {
                    grid,
                    tile,
                    train,
                    val,
                }),
                _ => Err(format!(
                    "`{s}`: the grid of `mosaic:<grid>` is a whole number ≥ 1"
                )),
            },
            Some(("voc", p)) if !p.is_empty() => Ok(SegmentData::Voc { path: p.into() }),
            _ => Err(format!(
                "`{s}`: expected `mosaic`, `mosaic:<grid>` or `voc:<path>`"
            )),
        }
    }
}

fn d_head() -> usize {
    256
}
fn d_head_dilation() -> usize {
    6
}
fn d_true() -> bool {
    true
}
fn d_scale() -> [f64; 2] {
    [0.5, 2.0]
}
fn d_crop() -> usize {
    64
}

impl Default for SegmentConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl SegmentConfig {
    /// Its optimisation settings.
    pub fn training(&self) -> Training {
        Training {
            section: "transfer.segment",
            epochs: self.epochs,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            weight_decay: self.weight_decay,
            checkpoint_every: self.checkpoint_every,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let field = |f: &str| format!("transfer.segment.{f}");
        self.training().validate()?;
        if self.head_channels == 0 {
            return Err(Error::config(
                field("head-channels"),
                "the head's channels must be ≥ 1",
            ));
        }
        if self.head_dilation == 0 {
            return Err(Error::config(
                field("head-dilation"),
                "the head's dilation must be ≥ 1",
            ));
        }
        if !(self.scale[0] > 0.0 && self.scale[0] <= self.scale[1] && self.scale[1].is_finite()) {
            return Err(Error::config(
                field("scale"),
                format!("{:?} must be [low, high] with 0 < low ≤ high", self.scale),
            ));
        }
        if !(8..=super::MAX_SIDE).contains(&self.crop) {
            return Err(Error::config(
                field("crop"),
                format!("{} must be 8 to {} pixels", self.crop, super::MAX_SIDE),
            ));
        }
        if let SegmentData::Mosaic {
            grid,
            tile,
            train,
            val,
        } = self.data
        {
            if grid == 0 || tile == 0 || train == 0 || val == 0 {
                return Err(Error::config(
                    field("data"),
                    "a mosaic's grid, tile, train and val counts must be ≥ 1",
                ));
            }
            if grid.saturating_mul(tile) > super::MAX_SIDE {
                return Err(Error::config(
                    field("data"),
                    format!(
                        "mosaics of {grid} × {grid} tiles of {tile} px are over {} px a side",
                        super::MAX_SIDE
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A training crop of `sample`: rescaled by a factor drawn from `cfg.scale` (image bilinear,
/// labels nearest), padded to the crop (image with the mean colour, labels with [`IGNORE`]),
/// cropped at a random place and flipped with probability ½. Returns the normalised CHW image
/// and its labels, `crop`² each.
pub fn train_crop(
    sample: &Sample,
    cfg: &SegmentConfig,
    aug: &AugmentConfig,
    rng: &mut impl Rng,
) -> (Vec<f32>, Vec<u8>) {
    let s = rng.random_range(cfg.scale[0]..=cfg.scale[1]);
    let (w, h) = (sample.image.width, sample.image.height);
    let (sw, sh) = (
        ((w as f64 * s).round() as usize).max(1),
        ((h as f64 * s).round() as usize).max(1),
    );
    let img = image::RgbImage::from_raw(w as u32, h as u32, sample.image.data.clone())
        .expect("an Rgb8 holds width·height·3 bytes");
    let img = image::imageops::resize(
        &img,
        sw as u32,
        sh as u32,
        image::imageops::FilterType::Triangle,
    );
    let mask = image::GrayImage::from_raw(w as u32, h as u32, sample.mask.clone())
        .expect("a label map holds width·height bytes");
    let mask = image::imageops::resize(
        &mask,
        sw as u32,
        sh as u32,
        image::imageops::FilterType::Nearest,
    );
    let c = cfg.crop;
    let x0 = rng.random_range(0..=sw.saturating_sub(c));
    let y0 = rng.random_range(0..=sh.saturating_sub(c));
    let flip = rng.random_bool(0.5);
    let mut x = vec![0f32; 3 * c * c];
    let mut labels = vec![IGNORE; c * c];
    for y in 0..c {
        for xx in 0..c {
            let (sy, sx) = (y0 + y, x0 + if flip { c - 1 - xx } else { xx });
            let o = y * c + xx;
            if sy < sh && sx < sw {
                let p = img.get_pixel(sx as u32, sy as u32);
                for ch in 0..3 {
                    x[ch * c * c + o] = f32::from(p[ch]) / 255.0;
                }
                labels[o] = mask.get_pixel(sx as u32, sy as u32)[0];
            } else {
                for ch in 0..3 {
                    x[ch * c * c + o] = aug.mean[ch];
                }
            }
        }
    }
    normalize(&mut x, &aug.mean, &aug.std);
    (x, labels)
}

/// The outcome of a fine-tuning run.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentResult {
    pub classes: Vec<String>,
    pub train_images: usize,
    pub val_images: usize,
    pub steps: u64,
    /// Mean training loss of each epoch.
    pub epoch_losses: Vec<f64>,
    pub val: SegScores,
}

/// Fine-tune an FCN on `encoder` (its feature map has `dim` channels) over `train` and score it
/// on `val`, whose label maps hold class indices below `classes.len()` or [`IGNORE`]. Returns the
/// result and the trained network (on `run.device`, eval mode), or `None` when `run`'s session
/// stopped it.
pub fn segment(
    (encoder, dim): (ResNet, usize),
    (train, val, classes): (&[Sample], &[Sample], &[String]),
    cfg: &SegmentConfig,
    mut run: Run<'_, Fcn>,
) -> Result<Option<(SegmentResult, Fcn)>> {
    cfg.validate()?;
    if val.is_empty() {
        return Err(Error::input(
            "segmentation",
            "the validation split is empty",
        ));
    }
    let (aug, seed, device) = (run.aug, run.seed, run.device);
    let ad = device.clone().autodiff();
    let model =
        crate::model::params::require_grad(Fcn::new(encoder, dim, classes.len(), cfg, seed, &ad));
    let (b, c) = (cfg.batch_size, cfg.crop);
    let training = cfg.training();
    let epochs = training.epochs(train.len(), seed, Stream::SegmentOrder)?;
    let trained = training.train(&epochs, model, &mut run, |model, chunk, epoch, _| {
        let crops: Vec<(Vec<f32>, Vec<u8>)> = chunk
            .par_iter()
            .map(|&i| {
                let mut r = rng(seed, Stream::SegmentCrops, &[epoch, i as u64]);
                train_crop(&train[i], cfg, aug, &mut r)
            })
            .collect();
        let (pix, labels): (Vec<Vec<f32>>, Vec<Vec<u8>>) = crops.into_iter().unzip();
        let x = Tensor::<4>::from_data(TensorData::new(pix.concat(), [b, 3, c, c]), &ad); // [B, 3, S, S]
        Ok(pixel_loss(model.forward(x), &labels.concat())) // [1]
    })?;
    let Some((model, losses)) = trained else {
        return Ok(None);
    };
    let model = model.valid().fork(device);
    let mut confusion = Confusion::new(classes.len());
    for s in val {
        confusion.add(&predict(&model, &s.image, aug, device)?, &s.mask);
    }
    let result = SegmentResult {
        classes: classes.to_vec(),
        train_images: train.len(),
        val_images: val.len(),
        steps: epochs.total(),
        epoch_losses: epochs.epoch_means(&losses),
        val: confusion.scores(),
    };
    Ok(Some((result, model)))
}

/// The class of each pixel of `img` (row-major), by an FCN in eval mode.
pub fn predict(model: &Fcn, img: &Rgb8, aug: &AugmentConfig, device: &Device) -> Result<Vec<u8>> {
    let classes = model.forward(image_tensor(img, aug, device)).argmax(1); // [1, 1, H, W]
    let v: Vec<i64> = classes
        .into_data()
        .convert::<i64>()
        .try_into_vec()
        .map_err(|e| Error::readback("the predicted classes", e))?;
    Ok(v.into_iter().map(|k| k as u8).collect())
}

/// `count` validation images in rows of three: the image, its labels and the prediction, the
/// label maps in VOC's colours blended over the image (ignored pixels left as they are), each
/// drawn `scale` times its size.
pub fn prediction_picture(
    model: &Fcn,
    val: &[Sample],
    count: usize,
    scale: usize,
    aug: &AugmentConfig,
    device: &Device,
) -> Result<Rgb8> {
    let palette = super::voc::palette();
    let overlay = |s: &Sample, mask: &[u8]| {
        let mut img = s.image.clone();
        for (px, &m) in img.data.chunks_exact_mut(3).zip(mask) {
            if m != IGNORE {
                // Class 0 of VOC's palette is black: shift by one so that every class has a colour.
                let k = usize::from(m) + 1;
                for (ch, p) in px.iter_mut().enumerate() {
                    *p = ((u16::from(*p) + 2 * u16::from(palette[k * 3 + ch])) / 3) as u8;
                }
            }
        }
        img
    };
    let rows = val
        .iter()
        .take(count.max(1))
        .map(|s| {
            Ok([
                s.image.clone(),
                overlay(s, &s.mask),
                overlay(s, &predict(model, &s.image, aug, device)?),
            ])
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(rows_picture(&rows, scale))
}

mod fcn;
#[cfg(test)]
mod tests;
