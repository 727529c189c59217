//! The optimisation both dense protocols share: SGD with momentum 0.9, the learning rate ×0.1 at
//! 70 % and 90 % of training (MoCo's segmentation protocol), over seeded shuffles of the training
//! images, in the supervised protocols' one loop ([`crate::supervised`]).

use crate::optim::Optimizer;
use crate::rng::Stream;
use crate::supervised::{Decay, Epochs, Tuning};
use crate::{Error, Result};

/// The optimisation settings of a dense protocol; `section` names its config section
/// (`transfer.segment`, `transfer.depth`).
pub struct Training {
    pub section: &'static str,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
}

impl Training {
    pub fn validate(&self) -> Result<()> {
        let field = |f: &str| format!("{}.{f}", self.section);
        if self.epochs == 0 {
            return Err(Error::config(field("epochs"), "must be ≥ 1"));
        }
        if self.batch_size < 2 {
            return Err(Error::config(
                field("batch-size"),
                "must be ≥ 2 (BatchNorm needs two samples)",
            ));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(Error::config(
                field("learning-rate"),
                "must be a positive number",
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::config(field("weight-decay"), "must be ≥ 0"));
        }
        Ok(())
    }

    /// The epochs over `n` training images, each a shuffle drawn from (`seed`, `stream`, epoch).
    pub fn epochs(&self, n: usize, seed: u64, stream: Stream) -> Result<Epochs> {
        Epochs::new(
            (0..n).collect(),
            self.batch_size,
            self.epochs,
            (seed, stream),
            self.section,
        )
    }

    /// The optimisation over `epochs`, at the step-down schedule.
    pub fn tuning<'a>(&'a self, epochs: &'a Epochs) -> Tuning<'a> {
        Tuning {
            section: self.section,
            epochs,
            learning_rate: self.learning_rate,
            decay: Decay::StepDown,
        }
    }

    /// SGD with momentum 0.9 (no Nesterov).
    pub fn optimizer(&self) -> Optimizer {
        crate::optim::OptimConfig::sgd(self.learning_rate, self.weight_decay, false).init()
    }
}

// The defaults both protocols share (see their configs).
pub(super) fn d_epochs() -> usize {
    10
}
pub(super) fn d_batch() -> usize {
    16
}
pub(super) fn d_lr() -> f64 {
    0.01
}
pub(super) fn d_wd() -> f64 {
    1e-4
}
pub(super) fn d_pictures() -> usize {
    6
}

/// A small-cpu encoder at base width 4, drawn from a fixed seed (burn's own initialisers draw
/// from a generator that tests running beside each other share), and its output width, for the
/// tests of the protocols.
#[cfg(test)]
pub(super) fn small_encoder() -> (crate::model::ResNet, usize) {
    let cfg =
        crate::config::ExperimentConfig::load("small-cpu", &["model.encoder.base-width=4".into()])
            .unwrap();
    (
        crate::model::params::reinit(cfg.model.encoder.init(&burn::tensor::Device::flex()), 3),
        cfg.model.encoder.output_dim(),
    )
}
