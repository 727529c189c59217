//! Pre-training: the state, the pure step, checkpoints and the loop around them.

pub mod checkpoint;
pub mod config;
mod evaluate;
mod feed;
mod follower;
mod monitor;
mod options;
mod parallel;
mod pretrain;
pub mod queue;
mod report;
pub mod run_dir;
mod state;
mod step;

pub use config::{OnNonFinite, TrainConfig};
pub use evaluate::{
    features_of, finetune_of_encoder, finetune_of_network, indexed_features_of, knn_of_encoder,
    linear_of_encoder, random_init_encoder, random_init_knn, random_init_online,
};
pub use follower::follow;
pub use options::RunOptions;
pub use parallel::Replicas;
pub use pretrain::{pretrain, pretrain_in};
pub use queue::Queue;
pub use report::{EvalReport, Observer, PretrainReport, ProbeReport, StepLog};
pub use run_dir::RunDir;
pub use state::TrainState;
pub use step::{
    Forward, Outcome, StepMetrics, StepRule, forward, forward_accumulated, guarded_step, train_step,
};
