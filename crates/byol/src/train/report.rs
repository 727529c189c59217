//! What a pre-training run reports: the lines of its logs, its final report, and the
//! [`Observer`] through which a front end follows it.

use crate::eval::KnnResult;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLog {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    pub tau: f64,
    /// Std of the L2-normalised online projections (≈ 1/√P healthy, → 0 on collapse).
    pub projection_std: f64,
    /// Images per second over the steps since the previous log line.
    pub images_per_sec: f64,
}

/// A kNN evaluation of the encoder during or after training.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub step: u64,
    pub epoch: u64,
    pub knn: KnnResult,
}

/// The online linear probe's accuracy at the end of an epoch (a line of `probe.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReport {
    pub step: u64,
    pub epoch: u64,
    /// Top-1 on the training batches of the epoch (augmented view 1, before each SGD step), over
    /// the steps this process ran; NaN (`null`) when it ran none of the epoch's steps.
    #[serde(deserialize_with = "null_as_nan")]
    pub train_top1: f64,
    /// Top-1 on the test split (centre crops, the encoder in eval mode).
    pub test_top1: f64,
}

/// What the loop reports to its caller (the binary draws a progress bar from it).
pub trait Observer {
    fn on_start(&mut self, _start_step: u64, _total_steps: u64) {}
    fn on_step(&mut self, _log: &StepLog) {}
    fn on_eval(&mut self, _report: &EvalReport) {}
    fn on_probe(&mut self, _report: &ProbeReport) {}
    fn on_message(&mut self, _message: &str) {}
}

/// The outcome of a pre-training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainReport {
    pub run_dir: PathBuf,
    pub steps: u64,
    pub train_images: usize,
    pub test_images: usize,
    pub skipped_images: usize,
    /// Images the shard manifests record that the shards no longer hold (truncated shards).
    #[serde(default)]
    pub lost_images: usize,
    /// NaN (written as `null`) when no step was logged.
    #[serde(deserialize_with = "null_as_nan")]
    pub final_loss: f64,
    pub knn: Option<KnnResult>,
    pub random_init_knn: Option<KnnResult>,
    pub wall_seconds: f64,
    /// Seconds spent in the training loop (from the first step to the last checkpoint).
    pub train_seconds: f64,
    /// Whether `time_budget_s` ended the run before the end of its schedule.
    pub stopped_by_time_budget: bool,
    /// The online linear probe's test top-1 at the end (when `eval.online-probe` is on).
    pub online_linear_top1: Option<f64>,
}

/// JSON has no NaN: serde_json writes it as `null`, read back here as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}
