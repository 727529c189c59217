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

/// A ViT for [`TINY`]'s 16 px images: 1 block, 16 wide, 2 heads, 4 px patches.
pub const TINY_VIT: [&str; 5] = [
    "model.encoder.arch=\"vit-tiny\"",
    "model.encoder.patch-size=4",
    "model.encoder.depth=1",
    "model.encoder.width=16",
    "model.encoder.heads=2",
];

/// [`tiny`] with [`TINY_VIT`] under AdamW at 1e-3 (MoCo v3's optimiser for ViTs), then `extra`.
pub fn tiny_vit(extra: &[&str]) -> ExperimentConfig {
    let adamw = ["optim.kind=\"adamw\"", "optim.base-lr=1e-3"];
    tiny(&[&TINY_VIT[..], &adamw, extra].concat())
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
