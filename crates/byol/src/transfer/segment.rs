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
use super::training::Training;
use super::voc::Sample;
use crate::augment::AugmentConfig;
use crate::augment::normalize;
use crate::image::Rgb8;
use crate::model::{ResNet, batch_norm_relu};
use crate::rng::{Stream, rng};
use crate::supervised::Progress;
use crate::{Error, Result};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::log_softmax;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Int, Tensor, TensorData};
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

/// The FCN: the encoder's feature map, two 3×3 convolutions with BatchNorm and ReLU, a 1×1
/// classifier, bilinear upsampling to the input's size.
#[derive(Module, Debug)]
pub struct Fcn {
    pub encoder: ResNet,
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub classifier: Conv2d,
}

impl Fcn {
    /// The head on `encoder` (whose feature map has `dim` channels), into `classes`, initialised
    /// from `seed`; the encoder's last stage dilated when `cfg.dilate`.
    pub fn new(
        encoder: ResNet,
        dim: usize,
        classes: usize,
        cfg: &SegmentConfig,
        seed: u64,
        device: &Device,
    ) -> Self {
        use crate::model::params::reinit;
        let encoder = if cfg.dilate {
            encoder.dilate_last_stage()
        } else {
            encoder
        };
        let (c, d) = (cfg.head_channels, cfg.head_dilation);
        let key = |k: u64| crate::rng::key(seed, Stream::SegmentHead, &[k]);
        // He-normal (fan-out) convolutions, as the encoder's; the classifier's bias starts at 0.
        let three = |cin: usize, k: u64| {
            let conv = Conv2dConfig::new([cin, c], [3, 3])
                .with_dilation([d, d])
                .with_padding(PaddingConfig2d::Explicit(d, d, d, d))
                .with_bias(false);
            reinit(conv.init(device), key(k))
        };
        let bn = || {
            BatchNormConfig::new(c)
                .with_epsilon(1e-5)
                .with_momentum(0.1)
                .init(device)
        };
        let mut classifier = reinit(Conv2dConfig::new([c, classes], [1, 1]).init(device), key(3));
        classifier.bias = Some(burn::nn::Initializer::Zeros.init([classes], device));
        Fcn {
            encoder: encoder.fork(device),
            conv1: three(dim, 1),
            bn1: bn(),
            conv2: three(c, 2),
            bn2: bn(),
            classifier,
        }
    }

    /// `x`: [B, 3, H, W] → logits [B, C, H, W].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let f = crate::model::precision::to_f32(self.encoder.feature_map(x)); // [B, D, H/s, W/s]
        let f = batch_norm_relu(&self.bn1, self.conv1.forward(f), None); // [B, 256, H/s, W/s]
        let f = batch_norm_relu(&self.bn2, self.conv2.forward(f), None); // [B, 256, H/s, W/s]
        let logits = self.classifier.forward(f); // [B, C, H/s, W/s]
        interpolate(
            logits,
            InterpolateOptions::new(InterpolateMode::Bilinear).with_output_size([h, w]),
        ) // [B, C, H, W]
    }
}

/// Mean per-pixel cross-entropy of `logits` [B, C, H, W] against `labels` (B·H·W class
/// indices, row-major), over the pixels not labelled [`IGNORE`]; 0 when every pixel is ignored.
pub fn pixel_loss(logits: Tensor<4>, labels: &[u8]) -> Tensor<1> {
    let [b, _, h, w] = logits.dims();
    assert_eq!(labels.len(), b * h * w, "one label per pixel");
    let device = logits.device();
    let target: Vec<i64> = labels
        .iter()
        .map(|&l| if l == IGNORE { 0 } else { i64::from(l) })
        .collect();
    let keep: Vec<f32> = labels
        .iter()
        .map(|&l| if l == IGNORE { 0.0 } else { 1.0 })
        .collect();
    let counted = keep.iter().sum::<f32>().max(1.0);
    let target = Tensor::<4, Int>::from_data(TensorData::new(target, [b, 1, h, w]), &device); // [B, 1, H, W]
    let keep = Tensor::<4>::from_data(TensorData::new(keep, [b, 1, h, w]), &device); // [B, 1, H, W]
    let nll = log_softmax(logits, 1).gather(1, target).neg(); // [B, 1, H, W]
    (nll * keep).sum().div_scalar(counted) // [1]
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
/// result and the trained network (on `device`, eval mode).
#[allow(
    clippy::too_many_arguments,
    reason = "the protocol's inputs: the encoder and its width, the two splits, their class names, the protocol, the views' normalisation, the seed, the device"
)]
pub fn segment(
    encoder: ResNet,
    dim: usize,
    train: &[Sample],
    val: &[Sample],
    classes: &[String],
    cfg: &SegmentConfig,
    aug: &AugmentConfig,
    seed: u64,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<(SegmentResult, Fcn)> {
    cfg.validate()?;
    if val.is_empty() {
        return Err(Error::input(
            "segmentation",
            "the validation split is empty",
        ));
    }
    let ad = device.clone().autodiff();
    let model =
        crate::model::params::require_grad(Fcn::new(encoder, dim, classes.len(), cfg, seed, &ad));
    let (b, c) = (cfg.batch_size, cfg.crop);
    let training = cfg.training();
    let epochs = training.epochs(train.len(), seed, Stream::SegmentOrder)?;
    let trained = training.tuning(&epochs).run(
        (model, training.optimizer()),
        0,
        progress,
        &mut (),
        |model, chunk, epoch, _| {
            let crops: Vec<(Vec<f32>, Vec<u8>)> = chunk
                .par_iter()
                .map(|&i| {
                    train_crop(
                        &train[i],
                        cfg,
                        aug,
                        &mut rng(seed, Stream::SegmentCrops, &[epoch, i as u64]),
                    )
                })
                .collect();
            let (pix, labels): (Vec<Vec<f32>>, Vec<Vec<u8>>) = crops.into_iter().unzip();
            let x = Tensor::<4>::from_data(TensorData::new(pix.concat(), [b, 3, c, c]), &ad); // [B, 3, S, S]
            Ok(pixel_loss(model.forward(x), &labels.concat())) // [1]
        },
    )?;
    let (step, epoch_losses) = (trained.step, epochs.epoch_means(&trained.losses));
    let model = trained.model.valid().fork(device);
    let mut confusion = Confusion::new(classes.len());
    for s in val {
        confusion.add(&predict(&model, &s.image, aug, device)?, &s.mask);
    }
    let result = SegmentResult {
        classes: classes.to_vec(),
        train_images: train.len(),
        val_images: val.len(),
        steps: step,
        epoch_losses,
        val: confusion.scores(),
    };
    Ok((result, model))
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

#[cfg(test)]
mod tests {
    use super::super::training::small_encoder as small;
    use super::*;

    /// A zero head setting is refused under its own name (`head-dilation = 0` was reported as
    /// `head-channels`).
    #[test]
    fn each_head_setting_is_named_in_its_error() {
        let e = SegmentConfig {
            head_dilation: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("transfer.segment.head-dilation") && !e.contains("head-channels"),
            "{e}"
        );
        let e = SegmentConfig {
            head_channels: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("transfer.segment.head-channels"), "{e}");
    }

    /// Sizes that would abort an allocation are refused when the config is read: a crop of
    /// 100,000 px (it aborted), mosaics of 50 × 50 tiles (they grew to 23 GB); and an epoch
    /// count whose steps overflow is an error before a step (`--epochs 9223372036854775807`
    /// panicked with "capacity overflow").
    #[test]
    fn sizes_and_epochs_beyond_reach_are_refused() {
        let e = SegmentConfig {
            crop: 100_000,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("transfer.segment.crop") && e.contains("8 to 1024"),
            "{e}"
        );
        let mosaic = SegmentData::Mosaic {
            grid: 50,
            tile: 32,
            train: 16,
            val: 8,
        };
        let e = SegmentConfig {
            data: mosaic,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("transfer.segment.data") && e.contains("over 1024 px"),
            "{e}"
        );
        let e = crate::transfer::depth::DepthConfig {
            data: crate::transfer::depth::DepthData::Synthetic {
                train: 4,
                val: 2,
                size: 100_000,
            },
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("transfer.depth.data") && e.contains("16 to 1024 px"),
            "{e}"
        );
        let training = SegmentConfig {
            epochs: usize::MAX,
            batch_size: 2,
            ..Default::default()
        }
        .training();
        let e = training
            .epochs(4, 0, Stream::SegmentOrder)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("transfer.segment.epochs") && e.contains("overflow"),
            "{e}"
        );
    }

    /// The FCN's logits have the input's size, for inputs that the output stride divides and
    /// for one it does not.
    #[test]
    fn the_fcn_output_has_the_input_size() {
        let device = Device::flex();
        let (encoder, dim) = small();
        let cfg = SegmentConfig {
            head_channels: 8,
            ..Default::default()
        };
        let fcn = Fcn::new(encoder, dim, 5, &cfg, 0, &device).valid();
        for (h, w) in [(32, 32), (40, 24), (37, 29)] {
            assert_eq!(
                fcn.forward(Tensor::zeros([2, 3, h, w], &device)).dims(),
                [2, 5, h, w]
            );
        }
    }

    /// The loss is the mean of −log p(label) over the counted pixels: ignored pixels change
    /// neither its value nor get a gradient.
    #[test]
    fn the_loss_ignores_the_ignore_label() {
        let device = Device::flex().autodiff();
        let raw: Vec<f32> = vec![2.0, 0.0, -1.0, 0.5, 0.0, 1.0, 3.0, 0.5]; // [1, 2, 2, 2]: class-major
        let logits = Tensor::<4>::from_data(TensorData::new(raw.clone(), [1, 2, 2, 2]), &device)
            .require_grad();
        let labels = [0, 1, IGNORE, 0];
        let loss = pixel_loss(logits.clone(), &labels);
        // −log softmax by hand for pixels 0, 1 and 3.
        let nll = |p: usize, k: usize| {
            let (a, b) = (raw[p] as f64, raw[4 + p] as f64);
            let z = (a.exp() + b.exp()).ln();
            z - if k == 0 { a } else { b }
        };
        let expect = (nll(0, 0) + nll(1, 1) + nll(3, 0)) / 3.0;
        assert!((f64::from(loss.clone().into_scalar::<f32>()) - expect).abs() < 1e-6);
        let g: Vec<f32> = logits
            .grad(&loss.backward())
            .unwrap()
            .into_data()
            .try_into_vec()
            .unwrap();
        assert_eq!((g[2], g[6]), (0.0, 0.0), "pixel 2 is ignored: {g:?}");
        assert!(g[0] != 0.0 && g[5] != 0.0);
        let none = pixel_loss(
            Tensor::<4>::from_data(TensorData::new(raw, [1, 2, 2, 2]), &device),
            &[IGNORE; 4],
        );
        assert_eq!(none.into_scalar::<f32>(), 0.0);
    }

    /// Fine-tuning on a few mosaics of the built-in shapes lowers the loss and labels the
    /// validation mosaics' pixels well above chance (10 balanced classes: 10 %).
    #[test]
    fn fine_tuning_on_mosaics_lowers_the_loss_and_beats_chance() {
        use crate::data::{SyntheticConfig, synthetic};
        let device = Device::flex();
        let splits = synthetic::generate(
            &SyntheticConfig {
                train_per_class: 16,
                test_per_class: 8,
            },
            16,
            0,
        );
        let as_samples = |set, n, seed| -> Vec<Sample> {
            super::super::mosaic::mosaics(set, n, 2, 16, seed)
                .unwrap()
                .into_iter()
                .enumerate()
                .map(|(i, m)| Sample {
                    id: i.to_string(),
                    image: m.image,
                    mask: m.mask,
                })
                .collect()
        };
        let (train, val) = (
            as_samples(&splits.train, 96, 1),
            as_samples(&splits.test, 24, 2),
        );
        let (encoder, dim) = small();
        let cfg = SegmentConfig {
            epochs: 12,
            batch_size: 8,
            learning_rate: 0.05,
            head_channels: 16,
            crop: 32,
            ..Default::default()
        };
        let (r, _) = segment(
            encoder,
            dim,
            &train,
            &val,
            &splits.train.classes,
            &cfg,
            &AugmentConfig::default(),
            0,
            &device,
            &mut (),
        )
        .unwrap();
        assert_eq!((r.steps, r.val_images), (144, 24));
        // Measured: 2.51 → 1.82 and 30 % of the pixels.
        assert!(
            r.epoch_losses[11] < 0.8 * r.epoch_losses[0],
            "{:?}",
            r.epoch_losses
        );
        assert!(r.val.pixel_accuracy > 0.2, "{:?}", r.val);
    }

    /// A crop keeps each pixel's label with its pixel: at scale 1 without padding, the crop's
    /// image (de-normalised) and labels are a window of the sample's, flipped or not.
    #[test]
    fn crops_keep_pixels_and_labels_together() {
        let (w, h) = (12, 10);
        let image = Rgb8 {
            width: w,
            height: h,
            data: (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect(),
        };
        let mask: Vec<u8> = (0..w * h).map(|i| (i % 5) as u8).collect();
        let sample = Sample {
            id: "s".into(),
            image,
            mask,
        };
        let cfg = SegmentConfig {
            scale: [1.0, 1.0],
            crop: 8,
            ..Default::default()
        };
        let aug = AugmentConfig::default();
        for seed in 0..6 {
            let (x, labels) =
                train_crop(&sample, &cfg, &aug, &mut rng(seed, Stream::Augment, &[0]));
            let red = |o: usize| ((x[o] * aug.std[0] + aug.mean[0]) * 255.0).round() as u8;
            let found = (0..=h - 8)
                .flat_map(|y0| (0..=w - 8).map(move |x0| (y0, x0)))
                .any(|(y0, x0)| {
                    [false, true].iter().any(|&flip| {
                        (0..64).all(|o| {
                            let (y, xx) = (o / 8, o % 8);
                            let i = (y0 + y) * w + x0 + if flip { 7 - xx } else { xx };
                            labels[o] == sample.mask[i] && red(o) == sample.image.data[i * 3]
                        })
                    })
                });
            assert!(found, "seed {seed}: the crop is no window of the sample");
        }
        // Scaled below the crop: the padding is ignored.
        let cfg = SegmentConfig {
            scale: [0.5, 0.5],
            crop: 8,
            ..Default::default()
        };
        let (_, labels) = train_crop(&sample, &cfg, &aug, &mut rng(0, Stream::Augment, &[0]));
        assert_eq!(labels.iter().filter(|&&l| l == IGNORE).count(), 64 - 6 * 5);
    }
}
