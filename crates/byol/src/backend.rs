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
            BackendKind::Cuda => cuda_device(),
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

/// The first CUDA device, checked by a one-element allocation. Without a usable driver, NVRTC or
/// device, the CUDA runtime panics on its device thread; that becomes an error naming what is
/// needed instead of a crash (the runtime's own log line above it says which library is missing).
#[cfg(feature = "cuda")]
fn cuda_device() -> Result<Device> {
    use burn::tensor::Tensor;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| {
        let device = Device::cuda(0);
        let _ = Tensor::<1>::zeros([1], &device).into_data();
        device
    });
    std::panic::set_hook(hook);
    probe.map_err(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Error::Backend {
            name: "cuda".into(),
            message: format!(
                "no usable CUDA device ({what}); it needs an NVIDIA GPU and driver (libcuda), libnvrtc on \
                 LD_LIBRARY_PATH and the CUDA headers under CUDA_PATH/include"
            ),
        }
    })
}
