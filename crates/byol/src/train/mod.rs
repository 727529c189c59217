//! Pre-training: the state, the pure step, checkpoints and the loop around them.

pub mod checkpoint;
pub mod config;
mod evaluate;
mod parallel;
mod pretrain;
pub mod queue;
mod state;
mod step;

pub use evaluate::{features_of, indexed_features_of, finetune_of_encoder, knn_of_encoder, linear_of_encoder, random_init_encoder, random_init_knn};
pub use pretrain::{EvalReport, Observer, PretrainReport, ProbeReport, RunOptions, StepLog, pretrain};
pub use config::{OnNonFinite, TrainConfig};
pub use queue::Queue;
pub use state::TrainState;
pub use parallel::Replicas;
pub use step::{Forward, Outcome, StepMetrics, forward, guarded_step, train_step};
