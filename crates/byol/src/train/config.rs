//! The `[train]` section: schedule length, batch, checkpoints, logging and the loop's checks.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The training schedule and loop settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrainConfig {
    /// Number of passes over the training set. Paper: 1000 (also 300 for the ablations).
    pub epochs: u64,
    /// Images per step (each gives two views). Paper: 4096.
    pub batch_size: usize,
    /// Micro-batches per update: each of the `batch-size / accumulate` images of a micro-batch
    /// goes through the networks on its own (BatchNorm's statistics and SimCLR's negatives are the
    /// micro-batch's) and the gradients are averaged over them before one update of the online
    /// network and one of the target. Schedules, checkpoints and `--max-steps` count updates. The
    /// paper's protocol for its smaller batches (§5, "Batch size": "we average gradients over N
    /// consecutive steps before updating the online network when reducing the batch size by a
    /// factor N; the target network is updated once every N steps"); also a way to fit a batch
    /// in a GPU's memory. With several devices or processes, each one's share is split. 1: the
    /// whole batch at once.
    #[serde(default = "d_one_usize")]
    pub accumulate: usize,
    /// Write a checkpoint every this many steps (and always at the end). 0: only at the end.
    #[serde(default = "d_ckpt")]
    pub checkpoint_every: u64,
    /// How many of the newest checkpoints to keep (older ones are deleted).
    #[serde(default = "d_keep")]
    pub keep_checkpoints: usize,
    /// Append a metrics line to `metrics.jsonl` every this many steps.
    #[serde(default = "d_one")]
    pub log_every: u64,
    /// Run the kNN monitor every this many epochs (0: only at the end).
    #[serde(default)]
    pub knn_every_epochs: u64,
    /// Warn when the collapse signal (std of the L2-normalised projections) stays below this
    /// fraction of its healthy value 1/√P for `collapse-patience` logged steps in a row.
    #[serde(default = "d_collapse")]
    pub collapse_fraction: f64,
    /// Logged steps below the threshold before the collapse warning.
    #[serde(default = "d_patience")]
    pub collapse_patience: u64,
    /// A non-finite loss: `stop` the run (default; checked at logged steps, no host
    /// synchronisation otherwise) or `skip` the step (checked every step, which synchronises
    /// with the device once per step): no update, a record in `skipped-steps.jsonl`, and a stop
    /// after 10 consecutive skips.
    #[serde(default)]
    pub on_non_finite: OnNonFinite,
    /// Compute type of the encoder: `f32`, or `bf16` / `f16` mixed precision (f32 weights,
    /// batch-norm statistics, heads, loss, optimizer and EMA; see `model::precision`). On `flex`
    /// the low-precision convolutions are emulated (slower than f32): use them on `cuda`.
    #[serde(default)]
    pub precision: crate::model::precision::Precision,
    /// Data parallel: one replica per device, each on its slice of the `batch-size` images of a
    /// step, the gradients averaged over them. `["cuda:0", "cuda:1"]`: two GPUs of this machine;
    /// `["flex:0", "flex:1"]`: two CPU replicas (threads sharing the cores, linked by the host
    /// collective). Empty (the default): one device, the backend's first. The learning rate
    /// follows `batch-size`, the global batch.
    #[serde(default)]
    pub devices: Vec<crate::backend::DeviceId>,
    /// Processes of the run (`mpirun -np N`, `srun -n N`; a build with the `mpi` feature): one
    /// replica each, on its slice of `batch-size`. Set from the launch, not by hand: a run
    /// refuses to start when it differs from the processes MPI reports, and to resume with
    /// another number than it was started with.
    #[serde(default = "d_one_usize")]
    pub world: usize,
}

fn d_one_usize() -> usize {
    1
}

fn d_ckpt() -> u64 {
    500
}
fn d_keep() -> usize {
    3
}
fn d_one() -> u64 {
    1
}
fn d_collapse() -> f64 {
    0.1
}
fn d_patience() -> u64 {
    20
}

/// See [`TrainConfig::on_non_finite`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnNonFinite {
    #[default]
    Stop,
    Skip,
}

impl TrainConfig {
    /// `self` with `other`'s logging, checkpointing, monitoring and non-finite handling: the
    /// settings a resumed run may change without changing its trajectory.
    pub fn with_run_settings_of(self, other: &TrainConfig) -> Self {
        TrainConfig {
            checkpoint_every: other.checkpoint_every,
            keep_checkpoints: other.keep_checkpoints,
            log_every: other.log_every,
            knn_every_epochs: other.knn_every_epochs,
            collapse_fraction: other.collapse_fraction,
            collapse_patience: other.collapse_patience,
            on_non_finite: other.on_non_finite,
            ..self
        }
    }

    /// Check the section's values.
    pub fn validate(&self) -> Result<()> {
        let t = self;
        if t.epochs == 0 {
            return Err(Error::config("train.epochs", "must be at least 1"));
        }
        if t.batch_size < 2 {
            return Err(Error::config(
                "train.batch-size",
                format!(
                    "{} is too small: batch normalisation needs at least 2 images per batch",
                    t.batch_size
                ),
            ));
        }
        if t.keep_checkpoints == 0 {
            return Err(Error::config(
                "train.keep-checkpoints",
                "must be at least 1",
            ));
        }
        if t.log_every == 0 {
            return Err(Error::config("train.log-every", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&t.collapse_fraction) {
            return Err(Error::config(
                "train.collapse-fraction",
                format!("{} is outside [0, 1)", t.collapse_fraction),
            ));
        }
        t.validate_split()
    }

    /// The devices and processes, and the shares of a batch they and `train.accumulate` cut.
    fn validate_split(&self) -> Result<()> {
        let t = self;
        if let Some((i, d)) = t
            .devices
            .iter()
            .enumerate()
            .find(|(i, d)| t.devices[..*i].contains(d))
        {
            return Err(Error::config(
                "train.devices",
                format!(
                    "`{d}` is listed twice (entries {} and {})",
                    t.devices.iter().position(|x| x == d).unwrap_or(0) + 1,
                    i + 1
                ),
            ));
        }
        if t.world == 0 {
            return Err(Error::config("train.world", "must be at least 1"));
        }
        if t.world > 1 && t.devices.len() > 1 {
            return Err(Error::config(
                "train.devices",
                "a run on several processes (train.world > 1) takes one device per process, chosen by its local rank",
            ));
        }
        let n = t.devices.len().max(1) * t.world;
        if !t.batch_size.is_multiple_of(n) || t.batch_size / n < 2 {
            return Err(Error::config(
                "train.batch-size",
                format!(
                    "{} must split into {n} equal shares (one per device in train.devices, or per process) of at least 2 images",
                    t.batch_size
                ),
            ));
        }
        let share = t.batch_size / n;
        if t.accumulate == 0 || !share.is_multiple_of(t.accumulate) || share / t.accumulate < 2 {
            return Err(Error::config(
                "train.accumulate",
                format!(
                    "{} does not split {} images ({}) into equal micro-batches of at least 2 images (batch normalisation needs 2)",
                    t.accumulate,
                    share,
                    if n > 1 {
                        format!(
                            "the share of each of {n} devices or processes in a batch of {}",
                            t.batch_size
                        )
                    } else {
                        "train.batch-size".to_string()
                    }
                ),
            ));
        }
        Ok(())
    }
}
