//! Networks: the encoder (a ResNet or a Vision Transformer), the projector/predictor MLPs and the
//! BYOL online/target pair.

mod bn;
mod encoder;
pub mod export;
pub mod kernels;
mod layout;
mod mlp;
mod networks;
pub mod params;
pub mod precision;
mod resnet;
pub mod timm;
mod vit;

pub use bn::{batch_norm, batch_norm_relu, batch_norm_train};
pub use encoder::{Encoder, EncoderConfig};
pub use mlp::{Mlp, MlpConfig};
pub use networks::{Online, OnlineOutput, Target};
pub use resnet::{Arch, ResNet, ResNetConfig, ResidualGamma, Stem};
pub use vit::{PosEmbed, Vit, VitArch, VitConfig, VitPool, gelu, sincos_position_embedding};

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The encoder, projector and predictor of a BYOL model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelConfig {
    /// The encoder f: a ResNet or a ViT, by `arch`.
    pub encoder: EncoderConfig,
    /// The projector g: Linear(hidden) → BN → ReLU → Linear(output). Paper: 4096 → 256.
    #[serde(default)]
    pub projector: MlpConfig,
    /// The predictor q, same shape as the projector. Paper: 4096 → 256.
    #[serde(default)]
    pub predictor: MlpConfig,
    /// Whether the online network has the predictor (off: the projection is the prediction,
    /// as in SimCLR and MoCo, and in the paper's "no predictor" ablation).
    #[serde(default = "d_true")]
    pub use_predictor: bool,
    /// With several devices (`train.devices`): BatchNorm statistics over the whole batch of a step
    /// (cross-replica BN, as the official code's), in the encoder, projector and predictor of the
    /// online network and in the target. Unset: on with several devices. Off: each replica
    /// normalises its own share (PyTorch's plain `DistributedDataParallel`). One device: no effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_bn: Option<bool>,
}

fn d_true() -> bool {
    true
}

impl ModelConfig {
    pub fn validate(&self) -> Result<()> {
        self.encoder.validate()?;
        self.projector.validate("model.projector")?;
        self.predictor.validate("model.predictor")?;
        if self.predictor.output != self.projector.output {
            return Err(Error::config(
                "model.predictor.output",
                format!(
                    "{} must equal model.projector.output ({}): the prediction regresses the target projection",
                    self.predictor.output, self.projector.output
                ),
            ));
        }
        Ok(())
    }

    /// Path prefixes of the online parameters that stay at their initial values (the optimiser
    /// leaves them: [`crate::optim::Optimizer::with_frozen`]): a ViT's patch projection under
    /// `model.encoder.freeze-patch-embedding`, else none.
    pub fn frozen_paths(&self) -> Vec<String> {
        match &self.encoder {
            EncoderConfig::Vit(v) if v.freeze_patch_embedding => {
                vec!["encoder.patch_embed.".to_string()]
            }
            _ => Vec::new(),
        }
    }
}
