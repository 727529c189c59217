//! `[distill]`: the settings of `byol distill` (SimCLR v2's third step, Chen et al. 2020b,
//! Section 2: "distillation via unlabeled examples").

use crate::model::Arch;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Distillation settings. The optimiser is SGD with Nesterov momentum 0.9 and a cosine learning
/// rate without warm-up, as `eval finetune`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DistillConfig {
    /// The temperature T of both softmaxes in −Σ_y P_T(y|x; T) log P_S(y|x; T). SimCLR v2: 1
    /// (it found T = 1 best or on par).
    #[serde(default = "d_temperature")]
    pub temperature: f64,
    /// Weight of the cross-entropy on the teacher's labelled subset, added to the distillation
    /// loss (each step then also takes a batch of labelled images). SimCLR v2 uses the
    /// distillation loss alone "for simplicity" in most experiments: 0.
    #[serde(default)]
    pub labelled_weight: f64,
    /// Epochs over the unlabelled images (the whole training split, labels ignored).
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Batch size (unlabelled images per step; as many labelled ones with `labelled-weight`).
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Peak learning rate of the cosine schedule.
    #[serde(default = "d_lr")]
    pub learning_rate: f64,
    /// L2 weight decay on weights (not on biases and BatchNorm parameters). Ours: 5e-4, the
    /// usual value for training a CIFAR ResNet from scratch, which the student is.
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    /// The student: the teacher's encoder with these changes (none: self-distillation). Its
    /// classifier is a linear layer on the encoder, as the fine-tuned model from the encoder; it
    /// starts from a random initialisation drawn from the run's seed.
    #[serde(default)]
    pub student: StudentConfig,
    /// Write a checkpoint (student, optimiser state, step) every this many steps, and at the end.
    #[serde(default = "d_every")]
    pub checkpoint_every: u64,
}

/// Changes of the student's encoder from the teacher's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StudentConfig {
    /// The depth (`resnet18`, `resnet50`, …); unset: the teacher's.
    pub arch: Option<Arch>,
    /// Channels of the first stage; unset: the teacher's.
    pub base_width: Option<usize>,
    /// The width multiplier; unset: the teacher's.
    pub width_multiplier: Option<usize>,
}

fn d_temperature() -> f64 {
    1.0
}
fn d_epochs() -> usize {
    10
}
fn d_batch() -> usize {
    128
}
fn d_lr() -> f64 {
    0.1
}
fn d_wd() -> f64 {
    5e-4
}
fn d_every() -> u64 {
    100
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            temperature: d_temperature(),
            labelled_weight: 0.0,
            epochs: d_epochs(),
            batch_size: d_batch(),
            learning_rate: d_lr(),
            weight_decay: d_wd(),
            student: StudentConfig::default(),
            checkpoint_every: d_every(),
        }
    }
}

impl DistillConfig {
    /// Check the section's values.
    pub fn validate(&self) -> Result<()> {
        let positive = |field: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(Error::config(
                    format!("distill.{field}"),
                    format!("{v} must be a positive number"),
                ))
            }
        };
        positive("temperature", self.temperature)?;
        positive("learning-rate", self.learning_rate)?;
        if !(self.labelled_weight >= 0.0 && self.labelled_weight.is_finite()) {
            return Err(Error::config(
                "distill.labelled-weight",
                format!("{} must be ≥ 0", self.labelled_weight),
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::config(
                "distill.weight-decay",
                format!("{} must be ≥ 0", self.weight_decay),
            ));
        }
        if self.epochs == 0 {
            return Err(Error::config("distill.epochs", "must be ≥ 1"));
        }
        if self.batch_size < 2 {
            return Err(Error::config(
                "distill.batch-size",
                "must be ≥ 2 (BatchNorm needs two samples)",
            ));
        }
        if self.checkpoint_every == 0 {
            return Err(Error::config("distill.checkpoint-every", "must be ≥ 1"));
        }
        if self.student.base_width == Some(0) || self.student.width_multiplier == Some(0) {
            return Err(Error::config(
                "distill.student",
                "base-width and width-multiplier must be ≥ 1",
            ));
        }
        Ok(())
    }
}
