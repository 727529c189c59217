//! What a caller asks of a pre-training run besides its config.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// How to run [`super::pretrain`].
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the run directory's checkpoint. The config passed in must equal the
    /// checkpoint's in every field that changes the trajectory
    /// ([`ExperimentConfig::resume_differences`]); start from the checkpoint's recorded config
    /// (`checkpoint::read_latest_config`).
    pub resume: bool,
    /// Also evaluate the random-init encoder of the same architecture.
    pub compare_random: bool,
    /// Stop (with a checkpoint) once this many steps are done in total, before the end of the
    /// schedule; a later `resume` continues the same schedule. No final evaluation then.
    pub max_steps: Option<u64>,
    /// Stop (with a checkpoint) once training has run this many seconds (counted from the first
    /// step, after the data is loaded), then evaluate the encoder as it is: time to accuracy,
    /// the schedule planned for the full run and cut short, as the PyTorch reference's
    /// `--minutes` does.
    pub time_budget_s: Option<f64>,
    /// Set (by a signal handler, another thread) to stop after the step in progress, with a
    /// checkpoint of it; a later `resume` continues as if nothing happened.
    pub interrupt: Option<Arc<AtomicBool>>,
}
