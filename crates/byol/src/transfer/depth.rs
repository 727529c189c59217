//! Monocular depth estimation by fine-tuning the encoder with an up-projection decoder: the
//! paper's Table 4 (NYU v2), which follows Laina et al. 2016 ("Deeper Depth Prediction with Fully
//! Convolutional Residual Networks"): a 1×1 convolution halving the encoder's channels, then
//! up-projection blocks (2× unpooling; a 5×5 convolution, ReLU and 3×3 convolution beside a
//! 5×5 projection, summed, ReLU; BatchNorm after each convolution), each halving the channels,
//! until the output stride is 2; a 3×3 convolution to one channel, bilinear upsampling to the
//! input; the reverse Huber (berHu) loss on the pixels with a measured depth. Scored by δ < 1.25ᵏ,
//! rms and rel ([`super::metrics::depth_scores`]).
//!
//! Data ([`super::scenes`]): a folder with `train/` and `val/`, each with `rgb/<id>.png|jpg` and
//! `depth/<id>.png` (16-bit, millimetres), or built-in **synthetic** scenes with exact depth,
//! which stand in for NYU v2 where it cannot be downloaded.

use super::images::{image_tensor, rows_picture};
use super::metrics::{DepthScores, depth_scores};
pub use super::scenes::DepthSample;
use super::training::{Run, Training};
use crate::augment::{AugmentConfig, normalize};
use crate::image::Rgb8;
use crate::model::{ResNet, batch_norm, batch_norm_relu};
use crate::rng::{Stream, key, rng};
use crate::{Error, Result};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[transfer.depth]`: the fine-tuning protocol.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DepthConfig {
    #[serde(default = "super::training::d_epochs")]
    pub epochs: usize,
    /// Laina et al.: 16.
    #[serde(default = "super::training::d_batch")]
    pub batch_size: usize,
    /// SGD with momentum 0.9, constant but for ×0.1 at 70 % and 90 % of training (the schedule
    /// of the segmentation protocol; Laina et al. use 0.01 and momentum 0.9).
    #[serde(default = "super::training::d_lr")]
    pub learning_rate: f64,
    #[serde(default = "super::training::d_wd")]
    pub weight_decay: f64,
    /// The loss on the valid pixels.
    #[serde(default)]
    pub loss: DepthLoss,
    /// Validation images drawn in the run's `predictions.png`.
    #[serde(default = "super::training::d_pictures")]
    pub pictures: usize,
    /// Steps between checkpoints of the fine-tuning (one is also written when it is stopped).
    #[serde(default = "super::training::d_checkpoint_every")]
    pub checkpoint_every: u64,
    #[serde(default)]
    pub data: DepthData,
}

/// The training loss.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DepthLoss {
    /// Laina et al.'s reverse Huber: |e| up to c = 0.2·max|e| of the batch, (e² + c²)/2c above.
    #[default]
    Berhu,
    /// The mean absolute error.
    L1,
}

/// The depth data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "source", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DepthData {
    /// Built-in synthetic scenes ([`scene`]): `train` and `val` of them, `size` px square.
    Synthetic {
        train: usize,
        val: usize,
        size: usize,
    },
    /// `path/{train,val}/rgb/<id>.png|jpg` with `path/{train,val}/depth/<id>.png` (16-bit, mm).
    Folder { path: PathBuf },
}

impl Default for DepthData {
    fn default() -> Self {
        DepthData::Synthetic {
            train: 2000,
            val: 500,
            size: 64,
        }
    }
}

impl DepthData {
    /// `synthetic` or `folder:<path>`, as `--dataset` takes it.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s.split_once(':') {
            None if s == "synthetic" => Ok(DepthData::default()),
            Some(("folder", p)) if !p.is_empty() => Ok(DepthData::Folder { path: p.into() }),
            _ => Err(format!("`{s}`: expected `synthetic` or `folder:<path>`")),
        }
    }
}

impl Default for DepthConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl DepthConfig {
    /// Its optimisation settings.
    pub fn training(&self) -> Training {
        Training {
            section: "transfer.depth",
            epochs: self.epochs,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            weight_decay: self.weight_decay,
            checkpoint_every: self.checkpoint_every,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let field = |f: &str| format!("transfer.depth.{f}");
        self.training().validate()?;
        if let DepthData::Synthetic { train, val, size } = self.data
            && (train == 0 || val == 0 || !(16..=super::MAX_SIDE).contains(&size))
        {
            return Err(Error::config(
                field("data"),
                format!(
                    "synthetic scenes need train and val ≥ 1 and a size of 16 to {} px",
                    super::MAX_SIDE
                ),
            ));
        }
        Ok(())
    }
}

/// An up-projection block: 2× unpooling, then relu(bn(conv5(x)) → relu → bn(conv3(·)) +
/// bn(conv5'(x))), `cin` → `cout` channels.
#[derive(Module, Debug)]
pub struct UpProjection {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub project: Conv2d,
    pub bn_project: BatchNorm,
}

fn conv(cin: usize, cout: usize, k: usize, device: &Device) -> Conv2d {
    let p = k / 2;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
}

fn bn(c: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(c)
        .with_epsilon(1e-5)
        .with_momentum(0.1)
        .init(device)
}

/// Laina et al.'s 2× unpooling: each value to the top-left of a 2×2 cell, zeros elsewhere.
pub fn unpool(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let x = x.reshape([b, c, h, 1, w, 1]);
    let row = Tensor::cat(vec![x.clone(), x.zeros_like()], 5); // [B, C, H, 1, W, 2]
    Tensor::cat(vec![row.clone(), row.zeros_like()], 3).reshape([b, c, 2 * h, 2 * w]) // [B, C, 2H, 2W]
}

impl UpProjection {
    fn new(cin: usize, cout: usize, device: &Device) -> Self {
        UpProjection {
            conv1: conv(cin, cout, 5, device),
            bn1: bn(cout, device),
            conv2: conv(cout, cout, 3, device),
            bn2: bn(cout, device),
            project: conv(cin, cout, 5, device),
            bn_project: bn(cout, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = unpool(x); // [B, cin, 2H, 2W]
        let shortcut = batch_norm(&self.bn_project, self.project.forward(x.clone())); // [B, cout, 2H, 2W]
        let h = batch_norm_relu(&self.bn1, self.conv1.forward(x), None); // [B, cout, 2H, 2W]
        batch_norm_relu(&self.bn2, self.conv2.forward(h), Some(shortcut)) // [B, cout, 2H, 2W]
    }
}

/// The encoder and the up-projection decoder.
#[derive(Module, Debug)]
pub struct DepthNet {
    pub encoder: ResNet,
    pub reduce: Conv2d,
    pub bn_reduce: BatchNorm,
    pub up: Vec<UpProjection>,
    pub out: Conv2d,
}

impl DepthNet {
    /// The decoder on `encoder` (its feature map has `dim` channels at output stride `stride`),
    /// initialised from `seed`: up-projections until the stride is 2, channels halved by each
    /// (not below 8).
    pub fn new(encoder: ResNet, dim: usize, stride: usize, seed: u64, device: &Device) -> Self {
        use crate::model::params::reinit;
        let k = |i: u64| key(seed, Stream::DepthDecoder, &[i]);
        let mut c = (dim / 2).max(8);
        let reduce = reinit(conv(dim, c, 1, device), k(0));
        let mut up = Vec::new();
        let mut s = stride;
        while s > 2 {
            up.push(reinit(
                UpProjection::new(c, (c / 2).max(8), device),
                k(1 + up.len() as u64),
            ));
            c = (c / 2).max(8);
            s /= 2;
        }
        let mut out = reinit(
            Conv2dConfig::new([c, 1], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            k(99),
        );
        out.bias = Some(burn::nn::Initializer::Zeros.init([1], device));
        DepthNet {
            encoder: encoder.fork(device),
            reduce,
            bn_reduce: bn((dim / 2).max(8), device),
            up,
            out,
        }
    }

    /// `x`: [B, 3, H, W] → depth [B, 1, H, W] in metres.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let f = crate::model::precision::to_f32(self.encoder.feature_map(x)); // [B, D, H/s, W/s]
        let mut f = batch_norm(&self.bn_reduce, self.reduce.forward(f)); // [B, D/2, H/s, W/s]
        for block in &self.up {
            f = block.forward(f); // [B, c/2, 2·, 2·]
        }
        let d = self.out.forward(f); // [B, 1, H/2, W/2]
        interpolate(
            d,
            InterpolateOptions::new(InterpolateMode::Bilinear).with_output_size([h, w]),
        ) // [B, 1, H, W]
    }
}

/// The loss of `predicted` [B, 1, H, W] against `truth` (B·H·W metres, 0 where not measured)
/// over the measured pixels; 0 when none is. berHu's threshold c = 0.2·max|e| is taken from the
/// batch and held constant in the gradient, as in Laina et al.
pub fn depth_loss(predicted: Tensor<4>, truth: &[f32], loss: DepthLoss) -> Tensor<1> {
    let [b, _, h, w] = predicted.dims();
    assert_eq!(truth.len(), b * h * w, "one depth per pixel");
    let device = predicted.device();
    let keep: Vec<f32> = truth
        .iter()
        .map(|&t| if t > 0.0 { 1.0 } else { 0.0 })
        .collect();
    let counted = keep.iter().sum::<f32>().max(1.0);
    let keep = Tensor::<4>::from_data(TensorData::new(keep, [b, 1, h, w]), &device);
    let truth = Tensor::<4>::from_data(TensorData::new(truth.to_vec(), [b, 1, h, w]), &device);
    let err = (predicted - truth).abs() * keep.clone(); // [B, 1, H, W]
    let per_pixel = match loss {
        DepthLoss::L1 => err,
        DepthLoss::Berhu => {
            let c = (err.clone().detach().max().into_scalar::<f32>() * 0.2).max(1e-6);
            let quadratic = (err.clone().powi_scalar(2) + c * c).div_scalar(2.0 * c);
            let over = err.clone().greater_elem(c);
            err.mask_where(over, quadratic)
        }
    };
    (per_pixel * keep).sum().div_scalar(counted) // [1]
}

/// The outcome of a fine-tuning run.
#[derive(Debug, Clone, Serialize)]
pub struct DepthResult {
    pub train_images: usize,
    pub val_images: usize,
    pub steps: u64,
    pub epoch_losses: Vec<f64>,
    pub val: DepthScores,
}

/// A training view of `s`: flipped with probability ½ (image and depth), normalised CHW.
fn train_view(s: &DepthSample, aug: &AugmentConfig, rng: &mut impl Rng) -> (Vec<f32>, Vec<f32>) {
    let (w, h) = (s.image.width, s.image.height);
    let flip = rng.random_bool(0.5);
    let n = w * h;
    let (mut x, mut d) = (vec![0f32; 3 * n], vec![0f32; n]);
    for y in 0..h {
        for xx in 0..w {
            let src = y * w + if flip { w - 1 - xx } else { xx };
            let o = y * w + xx;
            for c in 0..3 {
                x[c * n + o] = f32::from(s.image.data[src * 3 + c]) / 255.0;
            }
            d[o] = s.depth[src];
        }
    }
    normalize(&mut x, &aug.mean, &aug.std);
    (x, d)
}

/// The size (width, height) every training image shares; an error when a split is empty or a
/// training image has another size.
fn image_size(train: &[DepthSample], val: &[DepthSample]) -> Result<(usize, usize)> {
    if val.is_empty() {
        return Err(Error::input(
            "depth estimation",
            "the validation split is empty",
        ));
    }
    let Some(first) = train.first() else {
        return Err(Error::input(
            "depth estimation",
            "the training split is empty",
        ));
    };
    let (w, h) = (first.image.width, first.image.height);
    if let Some(odd) = train
        .iter()
        .find(|s| (s.image.width, s.image.height) != (w, h))
    {
        return Err(Error::data(
            &odd.id,
            format!(
                "training images must share one size: {}×{} against {w}×{h}",
                odd.image.width, odd.image.height
            ),
        ));
    }
    Ok((w, h))
}

/// Fine-tune a [`DepthNet`] on `encoder` (feature map of `dim` channels at output stride
/// `stride`) over `train` (images of one size) and score it on `val`. Returns the result and the
/// network (on `run.device`, eval mode), or `None` when `run`'s session stopped it.
pub fn depth(
    (encoder, dim, stride): (ResNet, usize, usize),
    (train, val): (&[DepthSample], &[DepthSample]),
    cfg: &DepthConfig,
    mut run: Run<'_, DepthNet>,
) -> Result<Option<(DepthResult, DepthNet)>> {
    cfg.validate()?;
    let (w, h) = image_size(train, val)?;
    let (aug, seed, device) = (run.aug, run.seed, run.device);
    let ad = device.clone().autodiff();
    let model = crate::model::params::require_grad(DepthNet::new(encoder, dim, stride, seed, &ad));
    let b = cfg.batch_size;
    let training = cfg.training();
    let epochs = training.epochs(train.len(), seed, Stream::DepthOrder)?;
    let trained = training.train(&epochs, model, &mut run, |model, chunk, epoch, _| {
        let views: Vec<(Vec<f32>, Vec<f32>)> = chunk
            .iter()
            .map(|&i| {
                let mut r = rng(seed, Stream::DepthViews, &[epoch, i as u64]);
                train_view(&train[i], aug, &mut r)
            })
            .collect();
        let (pix, truth): (Vec<Vec<f32>>, Vec<Vec<f32>>) = views.into_iter().unzip();
        let x = Tensor::<4>::from_data(TensorData::new(pix.concat(), [b, 3, h, w]), &ad); // [B, 3, H, W]
        Ok(depth_loss(model.forward(x), &truth.concat(), cfg.loss)) // [1]
    })?;
    let Some((model, losses)) = trained else {
        return Ok(None);
    };
    let model = model.valid().fork(device);
    let (mut predicted, mut truth) = (Vec::new(), Vec::new());
    for s in val {
        predicted.extend(predict(&model, &s.image, aug, device)?);
        truth.extend_from_slice(&s.depth);
    }
    let result = DepthResult {
        train_images: train.len(),
        val_images: val.len(),
        steps: epochs.total(),
        epoch_losses: epochs.epoch_means(&losses),
        val: depth_scores(&predicted, &truth),
    };
    Ok(Some((result, model)))
}

/// The depth of each pixel of `img` (metres, row-major), by a network in eval mode.
pub fn predict(
    model: &DepthNet,
    img: &Rgb8,
    aug: &AugmentConfig,
    device: &Device,
) -> Result<Vec<f32>> {
    model
        .forward(image_tensor(img, aug, device))
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| Error::readback("the predicted depths", e))
}

/// `count` validation images in rows of three: the image, its true depth and the prediction, the
/// depths in one grey ramp from near (white) to `far` (black), unmeasured pixels red; each drawn
/// `scale` times its size.
pub fn prediction_picture(
    model: &DepthNet,
    val: &[DepthSample],
    count: usize,
    scale: usize,
    aug: &AugmentConfig,
    device: &Device,
) -> Result<Rgb8> {
    let shown = &val[..count.max(1).min(val.len())];
    let far = shown
        .iter()
        .flat_map(|s| s.depth.iter().copied())
        .fold(1e-3f32, f32::max);
    let grey = |d: f32| {
        if d > 0.0 {
            [(255.0 * (1.0 - (d / far).clamp(0.0, 1.0))) as u8; 3]
        } else {
            [200, 0, 0]
        }
    };
    let map = |s: &DepthSample, depth: &[f32]| Rgb8 {
        width: s.image.width,
        height: s.image.height,
        data: depth.iter().flat_map(|&d| grey(d)).collect(),
    };
    let rows = shown
        .iter()
        .map(|s| {
            Ok([
                s.image.clone(),
                map(s, &s.depth),
                map(
                    s,
                    &predict(model, &s.image, aug, device)?
                        .iter()
                        .map(|d| d.max(1e-3))
                        .collect::<Vec<_>>(),
                ),
            ])
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(rows_picture(&rows, scale))
}

#[cfg(test)]
mod tests;
