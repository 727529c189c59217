//! The projector and predictor MLP of the paper (Section 3.3): "a multi-layer perceptron (MLP)
//! consisting in a linear layer with output size 4096 followed by batch normalization,
//! rectified linear units (ReLU), and a final linear layer with output dimension 256".
//! The output is not batch-normalised.

use super::bn::batch_norm_relu;
use crate::{Error, Result};
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Shape of a projector or predictor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MlpConfig {
    /// Hidden width. Paper: 4096.
    #[serde(default = "d_hidden")]
    pub hidden: usize,
    /// Output width. Paper: 256.
    #[serde(default = "d_out")]
    pub output: usize,
}

fn d_hidden() -> usize {
    4096
}
fn d_out() -> usize {
    256
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self { hidden: d_hidden(), output: d_out() }
    }
}

impl MlpConfig {
    pub fn validate(&self, field: &str) -> Result<()> {
        if self.hidden == 0 {
            return Err(Error::config(format!("{field}.hidden"), "must be at least 1"));
        }
        if self.output == 0 {
            return Err(Error::config(format!("{field}.output"), "must be at least 1"));
        }
        Ok(())
    }

    pub fn init(&self, input: usize, device: &Device) -> Mlp {
        Mlp {
            fc1: LinearConfig::new(input, self.hidden).with_bias(true).init(device),
            // BN decay 0.9 in the official code is momentum 0.1 in burn's convention.
            bn: BatchNormConfig::new(self.hidden).with_epsilon(1e-5).with_momentum(0.1).init(device),
            fc2: LinearConfig::new(self.hidden, self.output).with_bias(true).init(device),
        }
    }
}

/// Linear → BatchNorm → ReLU → Linear.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub bn: BatchNorm,
    pub fc2: Linear,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self.fc1.forward(x); // [B, hidden]
        let x = batch_norm_relu(&self.bn, x, None); // [B, hidden]
        self.fc2.forward(x) // [B, output]
    }
}
