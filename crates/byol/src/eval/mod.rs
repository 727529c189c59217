//! Evaluations of a frozen encoder.

pub mod embed;
pub mod features;
pub mod finetune;
pub mod knn;
pub mod linear;

pub use features::extract;
pub use knn::{KnnResult, knn_classify};
pub use linear::{Features, LinearEvalConfig, LinearResult, linear_eval};
pub use finetune::{FinetuneConfig, FinetuneResult, finetune};
