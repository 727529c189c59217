//! The online and target networks (paper Section 3.1, Figure 2).

use super::{Encoder, Mlp, ModelConfig};
use burn::module::Module;
use burn::tensor::{Device, Tensor};

/// Online network θ: encoder f_θ, projector g_θ and predictor q_θ (absent when
/// `model.use-predictor = false`).
#[derive(Module, Debug)]
pub struct Online {
    pub encoder: Encoder,
    pub projector: Mlp,
    pub predictor: Option<Mlp>,
}

/// What the online network computes for one view.
pub struct OnlineOutput {
    /// Representation y = f(x): [B, D].
    pub representation: Tensor<2>,
    /// Projection z: [B, P].
    pub projection: Tensor<2>,
    /// Prediction p = q(z), or z itself without a predictor: [B, P].
    pub prediction: Tensor<2>,
}

impl Online {
    /// The online network for `image_size` × `image_size` images ([`super::EncoderConfig::init`]).
    pub fn new(cfg: &ModelConfig, image_size: usize, device: &Device) -> Self {
        let d = cfg.encoder.output_dim();
        Online {
            encoder: cfg.encoder.init(image_size, device),
            projector: cfg.projector.init(d, device),
            predictor: cfg
                .use_predictor
                .then(|| cfg.predictor.init(cfg.projector.output, device)),
        }
    }

    /// `x`: [B, 3, H, W] → projection and prediction.
    pub fn forward(&self, x: Tensor<4>) -> OnlineOutput {
        let y = self.encoder.forward(x); // [B, D]
        let projection = self.projector.forward(y.clone()); // [B, P]
        let prediction = match &self.predictor {
            Some(q) => q.forward(projection.clone()), // [B, P]
            None => projection.clone(),
        };
        OnlineOutput {
            representation: y,
            projection,
            prediction,
        }
    }
}

/// Target network ξ: encoder f_ξ and projector g_ξ, no predictor.
#[derive(Module, Debug)]
pub struct Target {
    pub encoder: Encoder,
    pub projector: Mlp,
}

impl Target {
    /// The target network for `image_size` × `image_size` images ([`super::EncoderConfig::init`]).
    pub fn new(cfg: &ModelConfig, image_size: usize, device: &Device) -> Self {
        Target {
            encoder: cfg.encoder.init(image_size, device),
            projector: cfg.projector.init(cfg.encoder.output_dim(), device),
        }
    }

    /// `x`: [B, 3, H, W] → projection z': [B, P].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.projector.forward(self.encoder.forward(x))
    }
}
