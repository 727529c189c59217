//! What the library's test files share: a tiny model on a tiny built-in dataset, an observer
//! that prints nothing, fresh temporary folders. (Each test file uses part of it.)
#![allow(dead_code)]

use byol::ExperimentConfig;
use byol::train::Observer;
use std::path::PathBuf;

pub struct Quiet;
impl Observer for Quiet {}

/// A tiny model on a tiny built-in dataset: 80 training and 40 test images, 5 steps of batch 16
/// per epoch, 2 epochs, no checkpoint before the end.
pub const TINY: &[&str] = &[
    "model.encoder.base-width=4",
    "model.projector.hidden=32",
    "model.projector.output=16",
    "model.predictor.hidden=32",
    "model.predictor.output=16",
    "data.image-size=16",
    "data.synthetic.train-per-class=8",
    "data.synthetic.test-per-class=4",
    "train.batch-size=16",
    "train.epochs=2",
    "train.checkpoint-every=0",
    "eval.knn.k=5",
];

pub fn tiny_overrides(extra: &[&str]) -> Vec<String> {
    TINY.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// The `small-cpu` preset with [`TINY`] and `extra` on top.
pub fn tiny(extra: &[&str]) -> ExperimentConfig {
    ExperimentConfig::load("small-cpu", &tiny_overrides(extra)).unwrap()
}

/// A path in the temporary folder for this test process, removed if it exists.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("byol-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}
