//! The ranks after the first of a run on several processes (an MPI world, feature `mpi`): each
//! builds the state rank 0 builds (the same seed, or the same checkpoint), draws the same global
//! batches, and steps on its share of each in step with rank 0 ([`super::Replicas`] in MPI mode),
//! until rank 0 says the run stops. They write nothing: rank 0 alone holds the run directory,
//! logs, evaluates and checkpoints.

use super::feed::{Feed, Schedules};
use super::pretrain::devices_of;
use super::{Outcome, TrainState, checkpoint};
use crate::config::ExperimentConfig;
use crate::{Error, Result, data};
use std::path::Path;
use std::sync::Arc;

/// Follow rank 0's run of `cfg`; with `resume`, from the newest checkpoint in `run_dir` (which
/// every rank must see: a shared file system, or a copy). Returns the step it stopped at.
pub fn follow(cfg: &ExperimentConfig, run_dir: Option<&Path>, resume: bool) -> Result<u64> {
    let cfg = &ExperimentConfig {
        data: cfg.data.clone().with_absolute_paths(),
        ..cfg.clone()
    };
    let device = devices_of(cfg)?.remove(0);
    cfg.train.precision.check(&device)?;
    let state = match (resume, run_dir) {
        (true, Some(dir)) => checkpoint::read_latest(dir)?.0.state(&device)?,
        (true, None) => {
            return Err(Error::config(
                "resume",
                "a rank resumes from the run directory's checkpoint: give the run directory",
            ));
        }
        (false, _) => TrainState::init(cfg, &device),
    };
    let splits = data::load(&cfg.data, cfg.seed)?;
    let train = Arc::new(splits.train);
    let schedules = Schedules::new(cfg, train.len())?;
    if state.step >= schedules.total_steps {
        return Ok(state.step); // a finished run: rank 0 reports it without a step
    }
    let mut replicas = super::parallel::mpi_replicas(cfg, &device, &state)?
        .ok_or_else(|| Error::config("train.world", "this process is not one of several"))?;
    let mut feed = Feed::new(cfg, &train, &device, state.step, schedules);
    let mut state = state;
    while replicas.agree_continue(true) {
        state = match feed.step(state, Some(&mut replicas))?.outcome {
            Outcome::Applied(next, _) | Outcome::Skipped { state: next, .. } => next,
        };
    }
    Ok(state.step)
}
