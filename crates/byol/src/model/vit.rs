//! Vision Transformer encoders (Dosovitskiy et al. 2021), as MoCo v3 (Chen, Xie & He, ICCV 2021)
//! trains them with BYOL, SimCLR and MoCo: a strided-convolution patch embedding, a class token,
//! fixed 2-D sine-cosine position embeddings (MoCo v3's `build_2d_sincos_position_embedding`) or
//! learned ones ([`PosEmbed`]),
//! pre-norm blocks (LayerNorm → multi-head self-attention → residual; LayerNorm → MLP with GELU,
//! ratio 4 → residual) and a final LayerNorm. The representation is the class token, or the mean
//! of the patch tokens ([`VitPool`]).
//!
//! Field names are timm's `VisionTransformer` (`patch_embed.proj`, `cls_token`, `blocks.N.norm1`,
//! `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`, `norm`), so that an export maps them
//! one to one ([`super::export`]). LayerNorm ε is 1e-6, as timm's and MoCo v3's ViTs.
//!
//! Mixed precision (`train.precision`) as PyTorch's autocast runs a ViT: with bf16 or f16 input
//! the patch projection, every Linear and the attention compute in that type on low-precision
//! copies of the f32 weights, while the residual stream, the LayerNorms and the representation
//! stay f32 (see [`super::precision`]).
//!
//! MoCo v3's stability trick is an option ([`VitConfig::freeze_patch_embedding`]).

use super::precision::{conv_in_input_type, to_f32};
use crate::{Error, Result};
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::module::{attention, linear};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// The standard sizes (Touvron et al. 2021, DeiT; timm's `vit_{tiny,small,base}_patch16_224`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum VitArch {
    /// Width 192, 12 blocks, 3 heads.
    VitTiny,
    /// Width 384, 12 blocks, 6 heads.
    VitSmall,
    /// Width 768, 12 blocks, 12 heads.
    VitBase,
}

impl VitArch {
    /// (width, depth, heads).
    fn layout(self) -> (usize, usize, usize) {
        match self {
            VitArch::VitTiny => (192, 12, 3),
            VitArch::VitSmall => (384, 12, 6),
            VitArch::VitBase => (768, 12, 12),
        }
    }
}

/// What the representation is made of.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VitPool {
    /// The class token after the final LayerNorm (MoCo v3; timm's `global_pool="token"`).
    #[default]
    ClassToken,
    /// The mean of the patch tokens after the final LayerNorm.
    Mean,
}

/// The position embeddings added to the tokens.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PosEmbed {
    /// MoCo v3's fixed 2-D sine-cosine embedding ([`sincos_position_embedding`]): no
    /// parameters, any image size.
    #[default]
    Sincos,
    /// Learned (ViT's and timm's default): a parameter `pos_embed` [1, 1 + N, D] for the image
    /// size the encoder is built for, drawn from N(0, 0.02²) as timm's, excluded from weight
    /// decay and LARS adaptation.
    Learned,
}

/// A Vision Transformer encoder's configuration (`model.encoder` with `arch = "vit-…"`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VitConfig {
    pub arch: VitArch,
    /// Side of a square patch in pixels: 16 at 224 px (ViT-B/16), 4 for 32 × 32 images.
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    /// Blocks, overriding the size's 12 (smaller for CPU-sized models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    /// Token width, overriding the size's (a multiple of 4 and of the heads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    /// Attention heads, overriding the size's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<usize>,
    /// The representation: the class token or the mean of the patch tokens.
    #[serde(default)]
    pub pool: VitPool,
    /// MoCo v3's stability trick (Section 4.2, "random patch projection"): the patch projection
    /// keeps its random initial weights; no gradient reaches it and the optimiser leaves it
    /// ([`super::ModelConfig::frozen_paths`]). Off by default, as in timm and MoCo v3's code
    /// (`--stop-grad-conv1`).
    #[serde(default)]
    pub freeze_patch_embedding: bool,
    /// Fixed sine-cosine (MoCo v3's, the default) or learned position embeddings.
    #[serde(default)]
    pub pos_embed: PosEmbed,
}

fn d_patch() -> usize {
    16
}

impl VitConfig {
    /// (width, depth, heads) after the overrides.
    pub fn layout(&self) -> (usize, usize, usize) {
        let (w, d, h) = self.arch.layout();
        (
            self.width.unwrap_or(w),
            self.depth.unwrap_or(d),
            self.heads.unwrap_or(h),
        )
    }

    pub fn validate(&self) -> Result<()> {
        let (width, depth, heads) = self.layout();
        let bad = |field: &str, m: String| Err(Error::config(format!("model.encoder.{field}"), m));
        if !(1..=64).contains(&self.patch_size) {
            return bad(
                "patch-size",
                format!("{} is outside 1..=64", self.patch_size),
            );
        }
        if !(1..=48).contains(&depth) {
            return bad("depth", format!("{depth} is outside 1..=48"));
        }
        if !(1..=64).contains(&heads) {
            return bad("heads", format!("{heads} is outside 1..=64"));
        }
        if width == 0 || width > 4096 || !width.is_multiple_of(4) || !width.is_multiple_of(heads) {
            return bad(
                "width",
                format!(
                    "{width} must be a positive multiple of 4 (the sine-cosine position embedding \
                     has four parts) and of the {heads} heads, at most 4096"
                ),
            );
        }
        Ok(())
    }

    /// An error naming the fields unless `image_size` is a whole number of patches.
    pub fn check_image_size(&self, image_size: usize) -> Result<()> {
        if !image_size.is_multiple_of(self.patch_size) {
            return Err(Error::config(
                "data.image-size",
                format!(
                    "{image_size} is not a multiple of model.encoder.patch-size ({}): a ViT cuts \
                     the image into whole patches",
                    self.patch_size
                ),
            ));
        }
        Ok(())
    }

    /// Dimension of the representation y: the token width.
    pub fn output_dim(&self) -> usize {
        self.layout().0
    }

    /// The encoder for `image_size` × `image_size` images: a learned position embedding has one
    /// row per patch of that size (the fixed one is computed for any size).
    pub fn init(&self, image_size: usize, device: &Device) -> Vit {
        let (width, depth, heads) = self.layout();
        let p = self.patch_size;
        let tokens = 1 + (image_size / p).pow(2);
        // Through the initializer, which requires a gradient on an autodiff device (the values
        // are redrawn by `params::reinit`).
        let drawn = |shape: [usize; 3]| {
            Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init(shape, device)
        };
        let patch_embed = PatchEmbed {
            proj: Conv2dConfig::new([3, width], [p, p])
                .with_stride([p, p])
                .with_bias(true)
                .init(device),
        };
        let linear = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        let norm = || LayerNormConfig::new(width).with_epsilon(1e-6).init(device);
        let blocks = (0..depth)
            .map(|_| VitBlock {
                norm1: norm(),
                attn: Attention {
                    qkv: linear(width, 3 * width),
                    proj: linear(width, width),
                    heads,
                },
                norm2: norm(),
                mlp: VitMlp {
                    fc1: linear(width, 4 * width),
                    fc2: linear(4 * width, width),
                },
            })
            .collect();
        Vit {
            patch_embed,
            cls_token: drawn([1, 1, width]),
            pos_embed: (self.pos_embed == PosEmbed::Learned).then(|| drawn([1, tokens, width])),
            blocks,
            norm: norm(),
            mean_pool: self.pool == VitPool::Mean,
            frozen_patch_embed: self.freeze_patch_embedding,
        }
    }
}

/// The patch embedding: a convolution with kernel and stride the patch size.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Conv2d,
}

/// Multi-head self-attention with one fused query-key-value projection (timm's layout: the
/// output columns are ordered (q|k|v, head, channel)).
#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    pub heads: usize,
}

impl Attention {
    /// `x`: [B, N, D] → [B, N, D]: softmax(q kᵀ / √(D/heads)) v per head, through burn's
    /// attention operation (a fused kernel where the backend has one; its decomposition under
    /// autodiff).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_in(x, DType::F32)
    }

    /// [`Attention::forward`] computed in `compute` (f32, bf16 or f16); the output is f32.
    pub fn forward_in(&self, x: Tensor<3>, compute: DType) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let h = self.heads;
        let qkv = linear_in(&self.qkv, x, compute)
            .reshape([b, n, 3, h, d / h])
            .permute([2, 0, 3, 1, 4]); // [3, B, heads, N, D/heads]
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, h, n, d / h]);
        let context = attention(
            part(0),
            part(1),
            part(2),
            None,
            None,
            AttentionModuleOptions::default(),
        ); // [B, heads, N, D/heads]
        to_f32(linear_in(
            &self.proj,
            context.swap_dims(1, 2).reshape([b, n, d]),
            compute,
        ))
    }
}

/// `l` applied to `x` in `compute`: as it is for f32, else on copies of its weights in that type.
fn linear_in<const D: usize>(l: &Linear, x: Tensor<D>, compute: DType) -> Tensor<D> {
    if compute == DType::F32 {
        return l.forward(to_f32(x));
    }
    let low: FloatDType = compute.into();
    linear(
        x.cast(low),
        l.weight.val().cast(low),
        l.bias.as_ref().map(|b| b.val().cast(low)),
    )
}

/// The block's MLP: Linear(D, 4D) → GELU → Linear(4D, D).
#[derive(Module, Debug)]
pub struct VitMlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

/// A pre-norm Transformer block.
#[derive(Module, Debug)]
pub struct VitBlock {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: VitMlp,
}

impl VitBlock {
    /// `x`: the f32 residual stream; the attention and the MLP compute in `compute`.
    fn forward(&self, x: Tensor<3>, compute: DType) -> Tensor<3> {
        let x = x.clone() + self.attn.forward_in(self.norm1.forward(x), compute);
        let hidden = gelu(linear_in(
            &self.mlp.fc1,
            self.norm2.forward(x.clone()),
            compute,
        ));
        x + to_f32(linear_in(&self.mlp.fc2, hidden, compute))
    }
}

/// GELU, x·Φ(x) = x/2·(1 + erf(x/√2)), composed from `erf` so that its gradient is exact on every
/// backend: burn 0.22.1's fused `gelu` is exact on `flex`, but the backward the CubeCL backends
/// inherit (burn-backend's default `gelu_backward`) is the derivative of the tanh approximation,
/// off by up to 5e-4 of the gradient on lavapipe (`tests/gpu.rs`).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone()
        * x.div_scalar(std::f64::consts::SQRT_2)
            .erf()
            .add_scalar(1.0)
            .mul_scalar(0.5)
}

/// The encoder f of a ViT: image → representation y.
#[derive(Module, Debug)]
pub struct Vit {
    pub patch_embed: PatchEmbed,
    pub cls_token: Param<Tensor<3>>,
    /// Learned position embeddings [1, 1 + N, D]; none: the fixed sine-cosine ones.
    pub pos_embed: Option<Param<Tensor<3>>>,
    pub blocks: Vec<VitBlock>,
    pub norm: LayerNorm,
    pub mean_pool: bool,
    /// The patch projection's output is detached from the graph: no gradient reaches it.
    pub frozen_patch_embed: bool,
}

impl Vit {
    /// An error naming `data.image-size` unless this encoder's learned position embeddings (if it
    /// has them) are for `image_size` × `image_size` images: the number of patches they were built
    /// (and trained) for. Whole patches are the config's check ([`VitConfig::check_image_size`]).
    pub fn check_image_size(&self, image_size: usize) -> Result<()> {
        let Some(learned) = &self.pos_embed else {
            return Ok(());
        };
        let p = self.patch_embed.proj.stride[0];
        let (built, given) = (learned.dims()[1] - 1, (image_size / p).pow(2));
        if built == given {
            return Ok(());
        }
        Err(Error::config(
            "data.image-size",
            format!(
                "this ViT's learned position embeddings are for {built} patches of {p} px ({} px \
                 images), and {image_size} px images have {given}: use its image size",
                p * (built as f64).sqrt().round() as usize
            ),
        ))
    }

    /// `x`: [B, 3, H, W] in the compute type (f32, bf16 or f16), H and W multiples of the patch
    /// size → the representation: [B, D], f32.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let tokens = self.tokens(x);
        let [b, n, d] = tokens.dims();
        if self.mean_pool {
            tokens.narrow(1, 1, n - 1).mean_dim(1).reshape([b, d])
        } else {
            tokens.narrow(1, 0, 1).reshape([b, d])
        }
    }

    /// The normalised tokens: [B, 1 + H·W/p², D], the class token first, then the patches row
    /// by row.
    ///
    /// # Panics
    /// When H or W is not a multiple of the patch size (configs are checked before:
    /// [`VitConfig::check_image_size`]), or with learned position embeddings for another number
    /// of patches (the encoder is built for the run's image size).
    pub fn tokens(&self, x: Tensor<4>) -> Tensor<3> {
        let [b, _, hi, wi] = x.dims();
        let p = self.patch_embed.proj.stride[0]; // the patch size
        assert!(
            hi.is_multiple_of(p) && wi.is_multiple_of(p),
            "a {hi}×{wi} image is not a whole number of {p}×{p} patches"
        );
        let compute = x.dtype();
        let mut patches = to_f32(if compute == DType::F32 {
            self.patch_embed.proj.forward(x)
        } else {
            conv_in_input_type(&self.patch_embed.proj, x)
        }); // [B, D, H/p, W/p]
        if self.frozen_patch_embed {
            patches = patches.detach();
        }
        let [_, d, gh, gw] = patches.dims();
        let patches = patches.reshape([b, d, gh * gw]).swap_dims(1, 2); // [B, N, D]
        let device = patches.device();
        let cls = self.cls_token.val().expand([b, 1, d]);
        let pos = match &self.pos_embed {
            Some(learned) => {
                let rows = learned.dims()[1];
                assert_eq!(
                    rows,
                    1 + gh * gw,
                    "learned position embeddings for {} patches, and a {hi}×{wi} image has {}",
                    rows - 1,
                    gh * gw
                );
                learned.val()
            }
            None => sincos_position_embedding(gh, gw, d, &device).unsqueeze::<3>(),
        }; // [1, 1+N, D]
        let mut x = Tensor::cat(vec![cls, patches], 1) + pos; // [B, 1+N, D]
        for block in &self.blocks {
            x = block.forward(x, compute);
        }
        self.norm.forward(x)
    }
}

/// MoCo v3's fixed 2-D sine-cosine position embedding (`vits.py`,
/// `build_2d_sincos_position_embedding`, temperature 10,000) for a `gh` × `gw` grid of width
/// `d`, with the class token's row of zeros first: [1 + gh·gw, d]. Patch k (row k / gw, column
/// k % gw) gets [sin(row·ω), cos(row·ω), sin(col·ω), cos(col·ω)] with ω_i = 10000^(−i/(d/4)),
/// i < d/4 (MoCo v3 names the row coordinate `grid_w`: its `meshgrid` is in `ij` order).
pub fn sincos_position_embedding(gh: usize, gw: usize, d: usize, device: &Device) -> Tensor<2> {
    let quarter = d / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|i| 1.0 / 10000f64.powf(i as f64 / quarter as f64))
        .collect();
    let mut values = vec![0f32; (1 + gh * gw) * d];
    for k in 0..gh * gw {
        let (row, col) = ((k / gw) as f64, (k % gw) as f64);
        let out = &mut values[(1 + k) * d..(2 + k) * d];
        for (i, w) in omega.iter().enumerate() {
            out[i] = (row * w).sin() as f32;
            out[quarter + i] = (row * w).cos() as f32;
            out[2 * quarter + i] = (col * w).sin() as f32;
            out[3 * quarter + i] = (col * w).cos() as f32;
        }
    }
    Tensor::from_data(TensorData::new(values, [1 + gh * gw, d]), device)
}

#[cfg(test)]
mod tests;
