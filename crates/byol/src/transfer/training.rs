//! The optimisation both dense protocols share: SGD with momentum 0.9, the learning rate ×0.1 at
//! 70 % and 90 % of training (MoCo's segmentation protocol), over seeded shuffles of the training
//! images, in the supervised protocols' one loop ([`crate::supervised`]).

use crate::augment::AugmentConfig;
use crate::optim::Optimizer;
use crate::rng::Stream;
use crate::supervised::{Decay, Epochs, Hooks, Progress, Session, Tuning};
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor};

/// What a dense protocol's run is given besides its network and data: the views'
/// normalisation, the seed, the device, its progress, and its session (a stop, checkpoints, and
/// the state it starts from: new, or a checkpoint's).
pub struct Run<'a, M> {
    pub aug: &'a AugmentConfig,
    pub seed: u64,
    pub device: &'a Device,
    pub progress: &'a mut dyn Progress,
    pub session: &'a mut dyn Session<M>,
}

/// The optimisation settings of a dense protocol; `section` names its config section
/// (`transfer.segment`, `transfer.depth`).
pub struct Training {
    pub section: &'static str,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub checkpoint_every: u64,
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
        if self.checkpoint_every == 0 {
            return Err(Error::config(field("checkpoint-every"), "must be ≥ 1"));
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

    /// Train `fresh` over `epochs` from where `run`'s session starts it (a new run, or a
    /// checkpoint's step), `loss_of` giving a batch's loss: the network and every step's loss
    /// from step 0, or `None` when the session stopped it (with its checkpoint).
    pub fn train<M: Module>(
        &self,
        epochs: &Epochs,
        fresh: M,
        run: &mut Run<'_, M>,
        loss_of: impl FnMut(&M, &[usize], u64, u64) -> Result<Tensor<1>>,
    ) -> Result<Option<(M, Vec<f32>)>> {
        let start = run.session.start(fresh, self.optimizer())?;
        let hooks: &mut dyn Hooks<M> = &mut *run.session;
        let trained = self.tuning(epochs).run(
            (start.model, start.optimizer),
            start.step,
            &mut *run.progress,
            hooks,
            loss_of,
        )?;
        if trained.stopped {
            return Ok(None);
        }
        Ok(Some((
            trained.model,
            [start.losses, trained.losses].concat(),
        )))
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
pub(super) fn d_checkpoint_every() -> u64 {
    100
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
        crate::model::params::reinit(
            cfg.model
                .encoder
                .resnet("")
                .unwrap()
                .init(&burn::tensor::Device::flex()),
            3,
        ),
        cfg.model.encoder.output_dim(),
    )
}
