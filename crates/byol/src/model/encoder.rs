//! The encoder f as a choice of kind: a ResNet ([`super::resnet`]) or a Vision Transformer
//! ([`super::vit`]). Everything past the encoder (the heads, the step, the loss, the EMA, the
//! optimiser, the evaluations) sees one [`Encoder::forward`] to [B, D] and one
//! [`EncoderConfig::output_dim`]; only the dense transfer tasks and the torchvision export, which
//! read a ResNet's feature maps or names, ask for the kind ([`Encoder::into_resnet`]).
//!
//! A third kind is a variant here and in [`Encoder`], with its config's `arch` names routed in
//! [`EncoderConfig`]'s deserialisation.

use super::{ResNet, ResNetConfig, Vit, VitConfig};
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Deserializer, Serialize};

/// `model.encoder`: the kind is read from `arch` (`resnet18` … `resnet200`, `vit-tiny`,
/// `vit-small`, `vit-base`), and the other fields are that kind's.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum EncoderConfig {
    ResNet(ResNetConfig),
    Vit(VitConfig),
}

impl<'de> Deserialize<'de> for EncoderConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = toml::Value::deserialize(deserializer)?;
        let arch = value
            .get("arch")
            .and_then(toml::Value::as_str)
            .ok_or_else(|| {
                D::Error::custom("model.encoder needs `arch` (e.g. \"resnet18\", \"vit-small\")")
            })?
            .to_string();
        if arch.starts_with("vit-") {
            VitConfig::deserialize(value).map(EncoderConfig::Vit)
        } else {
            ResNetConfig::deserialize(value).map(EncoderConfig::ResNet)
        }
        .map_err(|e| D::Error::custom(format!("model.encoder (arch \"{arch}\"): {e}")))
    }
}

impl From<ResNetConfig> for EncoderConfig {
    fn from(c: ResNetConfig) -> Self {
        EncoderConfig::ResNet(c)
    }
}

impl From<VitConfig> for EncoderConfig {
    fn from(c: VitConfig) -> Self {
        EncoderConfig::Vit(c)
    }
}

impl EncoderConfig {
    pub fn validate(&self) -> Result<()> {
        match self {
            EncoderConfig::ResNet(c) => c.validate(),
            EncoderConfig::Vit(c) => c.validate(),
        }
    }

    /// Dimension of the representation y.
    pub fn output_dim(&self) -> usize {
        match self {
            EncoderConfig::ResNet(c) => c.output_dim(),
            EncoderConfig::Vit(c) => c.output_dim(),
        }
    }

    /// The encoder for `image_size` × `image_size` images (a ViT's learned position embeddings
    /// have one row per patch; a ResNet takes any size).
    pub fn init(&self, image_size: usize, device: &Device) -> Encoder {
        match self {
            EncoderConfig::ResNet(c) => Encoder::ResNet(c.init(device)),
            EncoderConfig::Vit(c) => Encoder::Vit(c.init(image_size, device)),
        }
    }

    /// The architecture's name as configured (`resnet18`, `vit-small`, …).
    pub fn arch_name(&self) -> String {
        let value = match self {
            EncoderConfig::ResNet(c) => toml::Value::try_from(c.arch),
            EncoderConfig::Vit(c) => toml::Value::try_from(c.arch),
        };
        value
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The ResNet's config, or an error saying that `what` needs one.
    pub fn resnet(&self, what: &str) -> Result<&ResNetConfig> {
        match self {
            EncoderConfig::ResNet(c) => Ok(c),
            EncoderConfig::Vit(_) => Err(needs_resnet(what, &self.arch_name())),
        }
    }
}

fn needs_resnet(what: &str, arch: &str) -> Error {
    Error::config(
        "model.encoder.arch",
        format!(
            "{what} needs a ResNet encoder (it reads a ResNet's feature maps or layer names); \
             this one is \"{arch}\""
        ),
    )
}

/// The encoder f: image → representation y, of either kind. (burn's derive adds the variant to
/// a parameter's path; [`super::params`] leaves it out, so a ResNet's tensors keep the names
/// they had before the encoder was a choice.)
// One per network, moved rarely: the ResNet's 752 bytes of fields inline cost nothing, and a
// box would add a step to every parameter path's walk.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Encoder {
    ResNet(ResNet),
    Vit(Vit),
}

impl Encoder {
    /// `x`: [B, 3, H, W] in the compute type → the representation y: [B, D], f32.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Encoder::ResNet(r) => r.forward(x),
            Encoder::Vit(v) => v.forward(x),
        }
    }

    /// An error naming `data.image-size` unless the encoder takes `image_size` × `image_size`
    /// images (a ResNet takes any; a ViT: [`Vit::check_image_size`]).
    pub fn check_image_size(&self, image_size: usize) -> Result<()> {
        match self {
            Encoder::ResNet(_) => Ok(()),
            Encoder::Vit(v) => v.check_image_size(image_size),
        }
    }

    /// The ResNet, or an error saying that `what` needs one.
    pub fn into_resnet(self, what: &str) -> Result<ResNet> {
        match self {
            Encoder::ResNet(r) => Ok(r),
            Encoder::Vit(_) => Err(needs_resnet(what, "vit")),
        }
    }
}
