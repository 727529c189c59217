//! The FCN of the segmentation protocol (MoCo's, He et al. 2020, Appendix A) and its per-pixel
//! loss.

use super::SegmentConfig;
use crate::model::{ResNet, batch_norm_relu};
use crate::rng::Stream;
use crate::transfer::IGNORE;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::log_softmax;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Int, Tensor, TensorData};

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
