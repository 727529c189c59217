//! Evaluations of a frozen encoder.

pub mod classifier;
pub mod embed;
pub mod features;
pub mod finetune;
pub mod knn;
pub mod linear;
pub mod probe;

pub use features::extract;
pub use finetune::{
    FinetuneConfig, FinetuneFrom, FinetuneResult, Finetuned, ProjectorLayer, finetune,
    training_view, view_pixels,
};
pub use knn::{KnnConfig, KnnResult, knn_classify};
pub use linear::{Features, LinearEvalConfig, LinearResult, linear_eval};
pub use probe::{OnlineProbe, OnlineProbeConfig};

use serde::{Deserialize, Serialize};

/// Evaluation settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EvalConfig {
    #[serde(default)]
    pub knn: KnnConfig,
    #[serde(default)]
    pub linear: LinearEvalConfig,
    #[serde(default)]
    pub finetune: FinetuneConfig,
    #[serde(default)]
    pub online_probe: OnlineProbeConfig,
}

impl EvalConfig {
    /// Check the section's values.
    pub fn validate(&self) -> crate::Result<()> {
        self.knn.validate()?;
        self.linear.validate()?;
        self.finetune.validate()?;
        self.online_probe.validate()
    }
}
