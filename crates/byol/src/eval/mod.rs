//! Evaluations of a frozen encoder.

pub mod features;
pub mod knn;

pub use features::extract;
pub use knn::{KnnResult, knn_classify};
