//! The projector and predictor MLP of the paper (Section 3.3): "a multi-layer perceptron (MLP)
//! consisting in a linear layer with output size 4096 followed by batch normalization,
//! rectified linear units (ReLU), and a final linear layer with output dimension 256".
//! The output is not batch-normalised. With `layers = 3`, SimCLR v2's deeper projection head
//! (Chen et al. 2020b, Section 2): a second hidden Linear → BatchNorm → ReLU before the last
//! Linear.

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
    /// Linear layers: 2 (the paper's) or 3 (SimCLR v2's projection head; the extra layer is
    /// hidden → hidden with BatchNorm and ReLU).
    #[serde(default = "d_layers")]
    pub layers: usize,
}

fn d_hidden() -> usize {
    4096
}
fn d_out() -> usize {
    256
}
fn d_layers() -> usize {
    2
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            hidden: d_hidden(),
            output: d_out(),
            layers: d_layers(),
        }
    }
}

impl MlpConfig {
    pub fn validate(&self, field: &str) -> Result<()> {
        if self.hidden == 0 {
            return Err(Error::config(
                format!("{field}.hidden"),
                "must be at least 1",
            ));
        }
        if self.output == 0 {
            return Err(Error::config(
                format!("{field}.output"),
                "must be at least 1",
            ));
        }
        if !(2..=3).contains(&self.layers) {
            return Err(Error::config(
                format!("{field}.layers"),
                format!("{} is not 2 (the paper's) or 3 (SimCLR v2's)", self.layers),
            ));
        }
        Ok(())
    }

    pub fn init(&self, input: usize, device: &Device) -> Mlp {
        // BN decay 0.9 in the official code is momentum 0.1 in burn's convention.
        let bn = || {
            BatchNormConfig::new(self.hidden)
                .with_epsilon(1e-5)
                .with_momentum(0.1)
                .init(device)
        };
        let fc1 = LinearConfig::new(input, self.hidden)
            .with_bias(true)
            .init(device);
        let bn1 = bn();
        let mid = (2..self.layers)
            .map(|_| Hidden {
                fc: LinearConfig::new(self.hidden, self.hidden)
                    .with_bias(true)
                    .init(device),
                bn: bn(),
            })
            .collect();
        Mlp {
            fc1,
            bn: bn1,
            mid,
            fc2: LinearConfig::new(self.hidden, self.output)
                .with_bias(true)
                .init(device),
        }
    }
}

/// Linear → BatchNorm → ReLU → (Linear → BatchNorm → ReLU with 3 layers) → Linear. The last
/// Linear is `fc2` whatever the depth, so that a 2-layer head keeps its parameter names.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub bn: BatchNorm,
    /// The hidden layers after the first (none with 2 layers).
    pub mid: Vec<Hidden>,
    pub fc2: Linear,
}

/// A hidden Linear and its BatchNorm (ReLU follows).
#[derive(Module, Debug)]
pub struct Hidden {
    pub fc: Linear,
    pub bn: BatchNorm,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self.fc1.forward(x); // [B, hidden]
        let mut x = batch_norm_relu(&self.bn, x, None); // [B, hidden]
        for h in &self.mid {
            x = batch_norm_relu(&h.bn, h.fc.forward(x), None); // [B, hidden]
        }
        self.fc2.forward(x) // [B, output]
    }
}
