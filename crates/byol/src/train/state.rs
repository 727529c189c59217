//! Everything a run needs to continue: online and target networks, optimizer state, MoCo's
//! queue and the step.

use super::Queue;
use crate::config::{ExperimentConfig, ObjectiveKind, TargetInit, TargetMode};
use crate::ema;
use crate::model::params::reinit;
use crate::model::{Online, Target};
use crate::optim::Optimizer;
use burn::tensor::Device;

/// The training state. The online network lives on the autodiff device; the target gets no
/// gradient and lives on the plain device.
pub struct TrainState {
    pub online: Online,
    /// Absent with `target.mode = none` (SimCLR).
    pub target: Option<Target>,
    pub optim: Optimizer,
    /// MoCo's negative keys (`objective.kind = moco` only).
    pub queue: Option<Queue>,
    /// Optimizer steps taken so far.
    pub step: u64,
    /// The online linear probe (`eval.online-probe`), made when the data is known.
    pub probe: Option<crate::eval::OnlineProbe>,
}

impl TrainState {
    /// A fresh state, initialised from the run's seed (the target from a second seed when
    /// `target.init = independent`, as the official code does).
    pub fn init(cfg: &ExperimentConfig, device: &Device) -> Self {
        let ad = device.clone().autodiff();
        let online = reinit(
            Online::new(&cfg.model, cfg.data.image_size, &ad),
            online_seed(cfg.seed),
        );
        let fresh = reinit(
            Target::new(&cfg.model, cfg.data.image_size, device),
            crate::rng::key(cfg.seed, crate::rng::Stream::TargetInit, &[]),
        );
        let target = match (cfg.target.mode, cfg.target.init) {
            (TargetMode::None, _) => None,
            (TargetMode::Ema, TargetInit::Independent) => Some(fresh),
            (TargetMode::Ema, TargetInit::Copy) => Some(ema::copy_into(fresh, &online)),
        };
        let queue = (cfg.objective.kind == ObjectiveKind::Moco).then(|| {
            Queue::new(
                cfg.objective.queue_size,
                cfg.model.projector.output,
                cfg.seed,
                device,
            )
        });
        TrainState {
            online,
            target,
            optim: cfg.optim.init().with_frozen(cfg.model.frozen_paths()),
            queue,
            step: 0,
            probe: None,
        }
    }
}

/// The seed of the online network's initialisation (also that of the random-init baseline).
pub fn online_seed(seed: u64) -> u64 {
    crate::rng::key(seed, crate::rng::Stream::OnlineInit, &[])
}
