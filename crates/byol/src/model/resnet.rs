//! ResNet v1 (He et al. 2016, post-activation) encoders: 18/34 layers with basic blocks,
//! 50/101/152/200 with bottleneck blocks, a width multiplier and a configurable base width.
//!
//! The representation y is the output of the final global average pool (spec, "Networks").
//! Field names follow torchvision's `resnet*` (conv1, bn1, layer1.0.conv1, …, downsample) so that
//! an export can map them one to one. A bottleneck block strides in its 3×3 convolution, as the
//! official BYOL code (which builds its blocks with haiku's `hk.nets.ResNet.BlockV1`) and
//! torchvision do.
//!
//! Initial γ of the last BatchNorm of each block ([`ResidualGamma`]): by default as in haiku's
//! `BlockV1`, which the official code uses: γ = 0 in a bottleneck block (`batchnorm_2` has
//! `scale_init=jnp.zeros`, the "zero-γ" trick of Goyal et al. 2017, so each block starts as the
//! identity), γ = 1 in a basic block (haiku gives its last BatchNorm the default scale, as
//! torchvision's default `zero_init_residual=False`). Every γ is a trainable parameter.
//!
//! Deviation: the official code gives the first block of every stage a projection shortcut
//! (`use_projection=(True, True, True, True)`); here, as in torchvision, a block has one only
//! where its shape changes.

use super::bn::{batch_norm, batch_norm_relu};
use super::precision::{conv_in_input_type as conv_x, to_f32};
use crate::{Error, Result};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Depth of the ResNet.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Resnet18,
    Resnet34,
    Resnet50,
    Resnet101,
    Resnet152,
    Resnet200,
}

impl Arch {
    /// Blocks per stage and whether the blocks are bottlenecks.
    fn layout(self) -> ([usize; 4], bool) {
        match self {
            Arch::Resnet18 => ([2, 2, 2, 2], false),
            Arch::Resnet34 => ([3, 4, 6, 3], false),
            Arch::Resnet50 => ([3, 4, 6, 3], true),
            Arch::Resnet101 => ([3, 4, 23, 3], true),
            Arch::Resnet152 => ([3, 8, 36, 3], true),
            Arch::Resnet200 => ([3, 24, 36, 3], true),
        }
    }
}

/// First layers of the network.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Stem {
    /// 7×7 stride-2 convolution and 3×3 stride-2 max-pool (ImageNet-size inputs).
    Imagenet,
    /// 3×3 stride-1 convolution, no max-pool: the usual variant for 32×32 images.
    Cifar,
}

/// Encoder configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ResNetConfig {
    pub arch: Arch,
    /// Width multiplier (paper: 1×, 2×, 4×).
    #[serde(default = "d_mult")]
    pub width_multiplier: usize,
    /// Channels of the first stage before the multiplier: 64 in the standard ResNet. Smaller
    /// values give tiny CPU models (a deviation from the paper, for laptops).
    #[serde(default = "d_base")]
    pub base_width: usize,
    pub stem: Stem,
    /// Initial γ of the last BatchNorm of each block (trainable in every case).
    #[serde(default)]
    pub residual_gamma: ResidualGamma,
}

/// Initial γ of the last BatchNorm of each residual block.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ResidualGamma {
    /// As the official code (haiku's `BlockV1`): 0 in bottleneck blocks, 1 in basic blocks.
    #[default]
    Official,
    /// 0 in every block, so that each starts as the identity (Goyal et al. 2017; torchvision's
    /// `zero_init_residual=True`).
    Zero,
    /// 1 in every block (torchvision's default).
    One,
}

impl ResidualGamma {
    fn zero(self, bottleneck: bool) -> bool {
        match self {
            ResidualGamma::Official => bottleneck,
            ResidualGamma::Zero => true,
            ResidualGamma::One => false,
        }
    }
}

fn d_mult() -> usize {
    1
}
fn d_base() -> usize {
    64
}

impl ResNetConfig {
    pub fn validate(&self) -> Result<()> {
        if !(1..=4).contains(&self.width_multiplier) {
            return Err(Error::config(
                "model.encoder.width-multiplier",
                format!("{} is outside 1..=4", self.width_multiplier),
            ));
        }
        if self.base_width == 0 || self.base_width > 1024 {
            return Err(Error::config(
                "model.encoder.base-width",
                format!("{} is outside 1..=1024", self.base_width),
            ));
        }
        Ok(())
    }

    /// Width of stage i's block input/output (before the bottleneck expansion).
    fn stage_width(&self, i: usize) -> usize {
        self.base_width * self.width_multiplier * (1 << i)
    }

    /// The input pixels per feature-map pixel of [`ResNet::feature_map`] (undilated): 8 with
    /// the CIFAR stem, 32 with the ImageNet one.
    pub fn output_stride(&self) -> usize {
        match self.stem {
            Stem::Cifar => 8,
            Stem::Imagenet => 32,
        }
    }

    /// Dimension of the representation y.
    pub fn output_dim(&self) -> usize {
        let (_, bottleneck) = self.arch.layout();
        self.stage_width(3) * if bottleneck { 4 } else { 1 }
    }

    pub fn init(&self, device: &Device) -> ResNet {
        let (blocks, bottleneck) = self.arch.layout();
        let expansion = if bottleneck { 4 } else { 1 };
        let stem_width = self.stage_width(0);
        let (conv1, maxpool) = match self.stem {
            Stem::Imagenet => (
                conv(3, stem_width, 7, 2, 3, device),
                Some(
                    MaxPool2dConfig::new([3, 3])
                        .with_strides([2, 2])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(),
                ),
            ),
            Stem::Cifar => (conv(3, stem_width, 3, 1, 1, device), None),
        };
        let mut in_ch = stem_width;
        let mut stages = Vec::with_capacity(4);
        for (i, &n) in blocks.iter().enumerate() {
            let width = self.stage_width(i);
            let mut stage = Vec::with_capacity(n);
            for b in 0..n {
                let stride = if b == 0 && i > 0 { 2 } else { 1 };
                stage.push(Block::new(
                    in_ch,
                    width,
                    stride,
                    bottleneck,
                    self.residual_gamma.zero(bottleneck),
                    device,
                ));
                in_ch = width * expansion;
            }
            stages.push(stage);
        }
        let mut it = stages.into_iter();
        ResNet {
            conv1,
            bn1: bn(stem_width, false, device),
            maxpool,
            layer1: it.next().unwrap(),
            layer2: it.next().unwrap(),
            layer3: it.next().unwrap(),
            layer4: it.next().unwrap(),
        }
    }
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, pad: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        // He et al. (2015) fan-out normal initialisation, as torchvision's ResNet.
        .with_initializer(Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: true,
        })
        .init(device)
}

/// A BatchNorm with ε = 1e-5 and decay 0.9 (burn's momentum 0.1), as the official code.
/// `zero_gamma`: γ starts at 0 instead of 1, still trainable.
fn bn(c: usize, zero_gamma: bool, device: &Device) -> BatchNorm {
    let mut layer = BatchNormConfig::new(c)
        .with_epsilon(1e-5)
        .with_momentum(0.1)
        .init(device);
    if zero_gamma {
        // Through the initializer, which requires a gradient on an autodiff device. (A
        // `Param::initialized` of a plain `Tensor::zeros` would not: it takes the flag from the
        // tensor, and the optimizer would never update that γ.)
        layer.gamma = Initializer::Zeros.init([c], device);
    }
    layer
}

/// A projection shortcut: 1×1 convolution (strided) and BatchNorm.
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

/// A basic block (conv1 3×3, conv2 3×3) or a bottleneck (conv1 1×1, conv2 3×3 strided, conv3 1×1).
#[derive(Module, Debug)]
pub struct Block {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Option<Conv2d>,
    pub bn3: Option<BatchNorm>,
    pub downsample: Option<Downsample>,
}

impl Block {
    fn new(
        cin: usize,
        width: usize,
        stride: usize,
        bottleneck: bool,
        zero_gamma: bool,
        device: &Device,
    ) -> Self {
        let cout = if bottleneck { width * 4 } else { width };
        let downsample = (stride != 1 || cin != cout).then(|| Downsample {
            conv: conv(cin, cout, 1, stride, 0, device),
            bn: bn(cout, false, device),
        });
        if bottleneck {
            Block {
                conv1: conv(cin, width, 1, 1, 0, device),
                bn1: bn(width, false, device),
                conv2: conv(width, width, 3, stride, 1, device),
                bn2: bn(width, false, device),
                conv3: Some(conv(width, cout, 1, 1, 0, device)),
                bn3: Some(bn(cout, zero_gamma, device)),
                downsample,
            }
        } else {
            Block {
                conv1: conv(cin, width, 3, stride, 1, device),
                bn1: bn(width, false, device),
                conv2: conv(width, width, 3, 1, 1, device),
                bn2: bn(width, zero_gamma, device),
                conv3: None,
                bn3: None,
                downsample,
            }
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(d) => batch_norm(&d.bn, conv_x(&d.conv, x.clone())), // [B, C_out, H/s, W/s]
            None => x.clone(),                                        // [B, C, H, W]
        };
        let h = batch_norm_relu(&self.bn1, conv_x(&self.conv1, x), None); // [B, w, H', W']
        match (&self.conv3, &self.bn3) {
            (Some(c3), Some(b3)) => {
                let h = batch_norm_relu(&self.bn2, conv_x(&self.conv2, h), None); // [B, w, H/s, W/s]
                batch_norm_relu(b3, conv_x(c3, h), Some(identity)) // [B, 4w, H/s, W/s]
            }
            _ => batch_norm_relu(&self.bn2, conv_x(&self.conv2, h), Some(identity)), // [B, w, H/s, W/s]
        }
    }
}

/// The encoder f: image → representation y.
#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: Option<MaxPool2d>,
    pub layer1: Vec<Block>,
    pub layer2: Vec<Block>,
    pub layer3: Vec<Block>,
    pub layer4: Vec<Block>,
}

impl ResNet {
    /// `x`: [B, 3, H, W] in f32, bf16 or f16 (the compute type, see [`super::precision`]) →
    /// the representation y: [B, D], f32.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.feature_map(x);
        let [b, c, h, w] = x.dims();
        to_f32(x).reshape([b, c, h * w]).mean_dim(2).reshape([b, c]) // global average pool: [B, D]
    }

    /// The last stage's output before the pool: [B, D, H/s, W/s] in the compute type, where the
    /// output stride s is 8 (CIFAR stem) or 32 (ImageNet stem), half that after
    /// [`ResNet::dilate_last_stage`].
    pub fn feature_map(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = batch_norm_relu(&self.bn1, conv_x(&self.conv1, x), None); // [B, w, H/2 or H, …]
        if let Some(pool) = &self.maxpool {
            // [B, w, H/4, W/4]
            x = super::kernels::max_pool2d(pool, x);
        }
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = block.forward(x); // [B, C_i, H_i, W_i]
        }
        x
    }

    /// The same weights with the last stage's stride replaced by dilation, which halves the
    /// output stride (32 → 16 with the ImageNet stem): the backbone of the FCN that MoCo's
    /// segmentation protocol (He et al. 2020, Appendix A) and the paper's Table 4 use. As in
    /// torchvision's `replace_stride_with_dilation`, the convolution that carried the stride
    /// loses it (and the shortcut's with it) and every later 3×3 convolution of the stage gets
    /// dilation 2 and padding 2, so the dilated map at even positions is the strided map.
    /// (torchvision allows this in bottleneck blocks only; a basic block's second 3×3
    /// convolution is dilated by the same rule.)
    pub fn dilate_last_stage(mut self) -> Self {
        let mut strided_seen = false;
        for block in &mut self.layer4 {
            let threes: Vec<&mut Conv2d> = match block.conv3 {
                Some(_) => vec![&mut block.conv2],
                None => vec![&mut block.conv1, &mut block.conv2],
            };
            for c in threes {
                if c.stride != [1, 1] {
                    c.stride = [1, 1];
                    strided_seen = true;
                } else if strided_seen {
                    c.dilation = [2, 2];
                    c.padding = PaddingConfig2d::Explicit(2, 2, 2, 2);
                }
            }
            if let Some(d) = &mut block.downsample {
                d.conv.stride = [1, 1];
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_params(m: &ResNet) -> usize {
        crate::model::params::count_trainable(m)
    }

    #[test]
    fn resnet18_and_50_have_torchvision_parameter_counts() {
        let device = Device::flex();
        // torchvision resnet18 has 11,689,512 parameters, of which the fc layer 513,000.
        let r18 = ResNetConfig {
            arch: Arch::Resnet18,
            width_multiplier: 1,
            base_width: 64,
            stem: Stem::Imagenet,
            residual_gamma: Default::default(),
        }
        .init(&device);
        assert_eq!(count_params(&r18), 11_689_512 - 513_000);
        // torchvision resnet50: 25,557,032 parameters, fc 2,049,000.
        let r50 = ResNetConfig {
            arch: Arch::Resnet50,
            width_multiplier: 1,
            base_width: 64,
            stem: Stem::Imagenet,
            residual_gamma: Default::default(),
        }
        .init(&device);
        assert_eq!(count_params(&r50), 25_557_032 - 2_049_000);
    }

    #[test]
    fn output_shapes() {
        let device = Device::flex();
        let cfg = ResNetConfig {
            arch: Arch::Resnet18,
            width_multiplier: 2,
            base_width: 4,
            stem: Stem::Cifar,
            residual_gamma: Default::default(),
        };
        let net = cfg.init(&device);
        let y = net.forward(Tensor::zeros([2, 3, 16, 16], &device));
        assert_eq!(y.dims(), [2, cfg.output_dim()]);
        assert_eq!(cfg.output_dim(), 64);
        let cfg = ResNetConfig {
            arch: Arch::Resnet50,
            width_multiplier: 1,
            base_width: 2,
            stem: Stem::Imagenet,
            residual_gamma: Default::default(),
        };
        let y = cfg
            .init(&device)
            .forward(Tensor::zeros([2, 3, 32, 32], &device));
        assert_eq!(y.dims(), [2, 64]);
    }

    /// Dilating the last stage halves the output stride with the same weights, and the dilated
    /// map at even positions is the strided map (eval mode, so BatchNorm is per pixel).
    #[test]
    fn dilation_halves_the_output_stride_and_keeps_the_strided_values() {
        let device = Device::flex();
        for (arch, stem, side, stride) in [
            (Arch::Resnet18, Stem::Cifar, 32, 8),
            (Arch::Resnet50, Stem::Imagenet, 128, 32),
        ] {
            let cfg = ResNetConfig {
                arch,
                width_multiplier: 1,
                base_width: 4,
                stem,
                residual_gamma: ResidualGamma::One,
            };
            let net = cfg.init(&device);
            let x = Tensor::<4>::random(
                [1, 3, side, side],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            );
            let plain = net.valid().feature_map(x.clone());
            let dilated = net.clone().dilate_last_stage();
            assert_eq!(
                crate::model::params::collect(&dilated).len(),
                crate::model::params::collect(&net).len()
            );
            let wide = dilated.valid().feature_map(x);
            let (d, h) = (cfg.output_dim(), side / stride);
            assert_eq!((plain.dims(), cfg.output_stride()), ([1, d, h, h], stride));
            assert_eq!(wide.dims(), [1, d, 2 * h, 2 * h]);
            let even = wide
                .reshape([1, d, h, 2, h, 2])
                .narrow(3, 0, 1)
                .narrow(5, 0, 1)
                .reshape([1, d, h, h]);
            let (a, b): (Vec<f32>, Vec<f32>) = (
                even.into_data().try_into_vec().unwrap(),
                plain.into_data().try_into_vec().unwrap(),
            );
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            let rms = (b.iter().map(|y| y * y).sum::<f32>() / b.len() as f32).sqrt();
            // The two compute sums of up to a few thousand products in other orders, through up
            // to 50 layers: measured 2e-6 of the map's rms (ResNet-18 and 50); a convolution
            // left undilated is off by the map's own scale.
            assert!(
                worst < 2e-5 * rms,
                "{arch:?}: the dilated map differs by up to {worst} (rms {rms})"
            );
        }
    }
}
