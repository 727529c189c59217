//! Mixed precision: the encoder computes in the float type of its input. With bf16 or f16 views,
//! every convolution runs in that type on a low-precision copy of its f32 weights (the weights
//! the optimizer updates stay f32, as do their gradients: the cast is differentiable), batch
//! normalisation computes its statistics in f32, and the pooled representation is f32, so the
//! projector, predictor, loss, optimizer and EMA are f32 — the split of mixed-precision
//! training (Micikevicius et al. 2018) and of PyTorch's autocast.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// The compute type of the encoder.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::Bf16 => FloatDType::BF16,
            Precision::F16 => FloatDType::F16,
        }
    }

    /// The reference script's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "float32",
            Precision::Bf16 => "bfloat16",
            Precision::F16 => "float16",
        }
    }

    /// An error naming `train.precision` if `device` cannot compute in this type (WGSL, on the
    /// `wgpu` backend, has no bf16), instead of a panic in the first kernel that uses it.
    pub fn check(self, device: &burn::tensor::Device) -> crate::Result<()> {
        if self == Precision::F32 || device.supports_dtype(self.dtype()) {
            return Ok(());
        }
        Err(crate::Error::config(
            "train.precision",
            format!("{} is not supported by this device; use f32", self.name()),
        ))
    }

    /// `x` in this type (no-op for f32 input and f32 precision).
    pub fn cast<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        if self == Precision::F32 {
            x
        } else {
            x.cast(self.dtype())
        }
    }
}
/// `x` as f32.
pub fn to_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(FloatDType::F32)
    }
}

/// The convolution `c` in the type of `x` (its f32 weights cast to it when they differ).
pub fn conv_in_input_type(c: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let dtype = x.dtype();
    if dtype == DType::F32 {
        return super::kernels::conv2d(c, x);
    }
    let pads = match c.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        // The encoder's convolutions all have explicit padding.
        PaddingConfig2d::Same => unreachable!("the ResNet convolutions use explicit padding"),
    };
    let options = ConvOptions::new_with_padding(c.stride, pads, c.dilation, c.groups);
    let low: FloatDType = dtype.into();
    conv2d(
        x,
        c.weight.val().cast(low),
        c.bias.as_ref().map(|b| b.val().cast(low)),
        options,
    )
}
