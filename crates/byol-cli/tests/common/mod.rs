//! What the binary's test files share.

#![allow(dead_code, reason = "each test file uses some of these helpers")]

use std::path::Path;
use std::process::Command;

/// Run the `byol` binary: (success, stdout, stderr).
pub fn byol(args: &[&str]) -> (bool, String, String) {
    byol_in(Path::new("."), args)
}

/// Run the `byol` binary in the working directory `cwd`: (success, stdout, stderr).
pub fn byol_in(cwd: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_byol"))
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("run byol");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tiny model on the built-in dataset: 80 training and 40 test images, 5 steps of batch 16
/// per epoch, 2 epochs.
pub const TINY: &[&str] = &[
    "--set",
    "model.encoder.base-width=4",
    "--set",
    "model.projector.hidden=32",
    "--set",
    "model.predictor.hidden=32",
    "--set",
    "data.image-size=16",
    "--set",
    "data.synthetic.train-per-class=8",
    "--set",
    "data.synthetic.test-per-class=4",
    "--set",
    "eval.knn.k=5",
    "--batch-size",
    "16",
    "--epochs",
    "2",
];

/// `TINY`'s network and image size, its `--set` values on `model.` and `data.image-size`: what a
/// command that builds the network without the built-in dataset (`bench step`) takes from it.
pub fn tiny_model() -> Vec<&'static str> {
    TINY.windows(2)
        .filter(|w| w[0] == "--set")
        .map(|w| w[1])
        .filter(|s| s.starts_with("model.") || s.starts_with("data.image-size="))
        .collect()
}
