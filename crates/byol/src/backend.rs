//! Run-time backend selection. One code path serves every backend: burn 0.22 dispatches on the
//! device a tensor lives on.

use crate::{Error, Result};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// Which compute backend to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// burn's pure-Rust CPU backend (the default, and what the tests use).
    #[default]
    Flex,
    /// NVIDIA GPUs through CubeCL (cargo feature `cuda`).
    Cuda,
}

impl BackendKind {
    /// The plain (non-autodiff) device of this backend.
    pub fn device(self) -> Result<Device> {
        match self {
            BackendKind::Flex => Ok(Device::flex()),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => Ok(Device::cuda(0)),
            #[cfg(not(feature = "cuda"))]
            BackendKind::Cuda => Err(Error::Backend {
                name: "cuda".into(),
                message: "this binary was built without the `cuda` feature; rebuild with \
                          `cargo build --release -p byol-cli --features cuda`"
                    .into(),
            }),
        }
    }

    /// Name as written in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Cuda => "cuda",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "flex" => Ok(BackendKind::Flex),
            "cuda" => Ok(BackendKind::Cuda),
            other => Err(Error::config("backend", format!("unknown backend `{other}` (expected flex or cuda)"))),
        }
    }
}
