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
    /// Any GPU through burn's wgpu runtime (cargo feature `wgpu`): the same CubeCL kernels as
    /// `cuda`, compiled to WGSL, on the API the machine offers (Vulkan, Metal, DirectX 12): AMD,
    /// Intel and Apple GPUs, and Mesa's `lavapipe`, a Vulkan device on the CPU, on which CI runs
    /// the GPU code path.
    Wgpu,
}

impl BackendKind {
    /// The plain (non-autodiff) device of this backend.
    pub fn device(self) -> Result<Device> {
        match self {
            BackendKind::Flex => Ok(Device::flex()),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => cuda_device(0),
            #[cfg(not(feature = "cuda"))]
            BackendKind::Cuda => Err(self.not_built()),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => wgpu_device(),
            #[cfg(not(feature = "wgpu"))]
            BackendKind::Wgpu => Err(self.not_built()),
        }
    }

    /// Device `index` of this backend (an entry of `train.devices`). On `flex` every index is the
    /// one CPU device: CPU replicas are threads sharing the cores.
    pub fn device_at(self, index: usize) -> Result<Device> {
        match self {
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => cuda_device(index),
            BackendKind::Flex => self.device(),
            _ if index == 0 => self.device(),
            _ => {
                self.device()?;
                Err(Error::Backend {
                    name: self.name().into(),
                    message: format!("device {index}: `{}` takes the device it ranks first (device 0) only", self.name()),
                })
            }
        }
    }

    /// The error for a backend whose cargo feature (named as the backend) this build lacks.
    #[cfg(any(not(feature = "cuda"), not(feature = "wgpu")))]
    fn not_built(self) -> Error {
        let name = self.name();
        Error::Backend {
            name: name.into(),
            message: format!("this binary was built without the `{name}` feature; rebuild with `cargo build --release -p byol-cli --features {name}`"),
        }
    }

    /// Name as written in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Cuda => "cuda",
            BackendKind::Wgpu => "wgpu",
        }
    }
}

/// CUDA device `index`, checked by a one-element allocation.
#[cfg(feature = "cuda")]
fn cuda_device(index: usize) -> Result<Device> {
    probe("cuda", move || Device::cuda(index), "it needs an NVIDIA GPU (of that index) and driver (libcuda), libnvrtc on \
         LD_LIBRARY_PATH and the CUDA headers under CUDA_PATH/include")
}

/// The device wgpu ranks first (a discrete GPU before an integrated one before a CPU device
/// such as lavapipe; `CUBECL_WGPU_DEFAULT_DEVICE=Cpu` picks lavapipe where both exist), checked
/// by a one-element allocation.
#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device> {
    probe("wgpu", || Device::wgpu(burn::tensor::DeviceKind::DefaultDevice), "it needs a GPU driver for \
         Vulkan, Metal or DirectX 12 (on Linux: libvulkan1 and the vendor's driver, or Mesa's \
         lavapipe on the CPU, Debian/Ubuntu package mesa-vulkan-drivers)")
}

/// Create a device and allocate one element on it. Without a usable driver the CubeCL runtimes
/// panic on their device thread; that becomes an error naming what is needed instead of a crash
/// (the runtime's own log line above it says which library is missing).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn probe(name: &str, make: impl FnOnce() -> Device + std::panic::UnwindSafe, needs: &str) -> Result<Device> {
    use burn::tensor::Tensor;
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| {
        let device = make();
        let _ = Tensor::<1>::zeros([1], &device).into_data();
        device
    });
    std::panic::set_hook(hook);
    probe.map_err(|panic| {
        let what = crate::error::panic_message(panic.as_ref());
        Error::Backend { name: name.into(), message: format!("no usable {name} device ({what}); {needs}") }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend this build lacks is an error naming the feature and the command that adds it.
    #[test]
    #[cfg(not(feature = "wgpu"))]
    fn a_backend_not_built_in_is_a_clear_error() {
        let e = BackendKind::Wgpu.device().err().expect("not built in").to_string();
        assert!(e.contains("`wgpu` feature") && e.contains("--features wgpu"), "{e}");
    }
}
