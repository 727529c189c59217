//! Pre-training: the state, the pure step, checkpoints and the loop around them.

pub mod checkpoint;
mod pretrain;
pub mod queue;
mod state;
mod step;

pub use pretrain::{
    EvalReport, Observer, PretrainReport, RunOptions, StepLog, features_of, finetune_of_encoder, knn_of_encoder, linear_of_encoder, pretrain,
    random_init_encoder, random_init_knn,
};
pub use queue::Queue;
pub use state::TrainState;
pub use step::{Forward, StepMetrics, forward, train_step};
