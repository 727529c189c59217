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
                    message: format!(
                        "device {index}: `{}` takes the device it ranks first (device 0) only",
                        self.name()
                    ),
                })
            }
        }
    }

    /// The device of the process of local rank `local_rank` on its machine, one of several
    /// processes of a run (an MPI world): `cuda:<local rank>`, or `cuda:0` when the process sees
    /// one GPU (`CUDA_VISIBLE_DEVICES` set per rank, as Slurm's `--gpus-per-task=1` does); on
    /// `wgpu` the device wgpu ranks first; on `flex` the CPU (each process's share of the cores
    /// is its launcher's binding, see the README).
    pub fn process_device(self, local_rank: usize) -> Result<Device> {
        #[cfg(any(feature = "cuda", feature = "wgpu"))]
        use_gpu_cache(Some(local_rank));
        match self {
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => {
                let visible = Device::enumerate(burn::tensor::DeviceType::Cuda).len();
                cuda_device(if visible == 1 { 0 } else { local_rank })
            }
            _ => {
                let _ = local_rank;
                self.device()
            }
        }
    }

    /// The error for a backend whose cargo feature (named as the backend) this build lacks.
    #[cfg(any(not(feature = "cuda"), not(feature = "wgpu")))]
    fn not_built(self) -> Error {
        let name = self.name();
        Error::Backend {
            name: name.into(),
            message: format!(
                "this binary was built without the `{name}` feature; rebuild with `cargo build --release -p byol-cli --features {name}`"
            ),
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

    /// Every backend, in the order of the documentation.
    pub const ALL: [BackendKind; 3] = [BackendKind::Flex, BackendKind::Cuda, BackendKind::Wgpu];
}

/// One device of a backend, as `train.devices` and `--devices` write it: `cuda:0`, `flex:1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId {
    pub backend: BackendKind,
    pub index: usize,
}

impl DeviceId {
    /// The device, checked as [`BackendKind::device_at`] checks it.
    pub fn device(self) -> Result<Device> {
        self.backend.device_at(self.index)
    }
}

impl std::str::FromStr for DeviceId {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let names: Vec<&str> = BackendKind::ALL.iter().map(|b| b.name()).collect();
        let (name, index) = s.split_once(':').ok_or_else(|| {
            format!("`{s}` is not a device: write backend:index, as cuda:0 or flex:1")
        })?;
        let backend = BackendKind::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| format!("`{s}`: `{name}` is not a backend ({})", names.join(", ")))?;
        let index = index.parse().map_err(|_| format!("`{s}`: the device index `{index}` is not a whole number ≥ 0 (backend:index, as cuda:0)"))?;
        Ok(DeviceId { backend, index })
    }
}

impl TryFrom<String> for DeviceId {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<DeviceId> for String {
    fn from(d: DeviceId) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.backend.name(), self.index)
    }
}

/// CUDA device `index`, checked by a one-element allocation.
#[cfg(feature = "cuda")]
fn cuda_device(index: usize) -> Result<Device> {
    probe(
        "cuda",
        move || Device::cuda(index),
        "it needs an NVIDIA GPU (of that index) and driver (libcuda), libnvrtc on \
         LD_LIBRARY_PATH and the CUDA headers under CUDA_PATH/include",
    )
}

/// The device wgpu ranks first (a discrete GPU before an integrated one before a CPU device
/// such as lavapipe; `CUBECL_WGPU_DEFAULT_DEVICE=Cpu` picks lavapipe where both exist), checked
/// by a one-element allocation.
#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device> {
    probe(
        "wgpu",
        || Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        "it needs a GPU driver for \
         Vulkan, Metal or DirectX 12 (on Linux: libvulkan1 and the vendor's driver, or Mesa's \
         lavapipe on the CPU, Debian/Ubuntu package mesa-vulkan-drivers)",
    )
}

/// Create a device and allocate one element on it. Without a usable driver the CubeCL runtimes
/// panic on their device thread; that becomes an error naming what is needed instead of a crash
/// (the runtime's own log line above it says which library is missing).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn probe(
    name: &str,
    make: impl FnOnce() -> Device + std::panic::UnwindSafe,
    needs: &str,
) -> Result<Device> {
    use burn::tensor::Tensor;
    use_gpu_cache(None);
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
        Error::Backend {
            name: name.into(),
            message: format!("no usable {name} device ({what}); {needs}"),
        }
    })
}

/// What this binary's GPU backends were built with (`byol bench step` and `run.json` record it,
/// `bench/gpu.sh` prints it above its table). `autotune` and `fusion` come with the `cuda` and
/// `wgpu` features (`gpu-fast-path` in crates/byol/Cargo.toml); `.ci/run` checks with
/// `cargo tree` that burn's CubeCL backend really receives them (bench/check-gpu-features.sh).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuBuild {
    /// The GPU backends compiled in (`cuda`, `wgpu`), empty for a CPU-only build.
    pub backends: Vec<&'static str>,
    /// burn's `autotune`: each convolution and matmul times its kernel variants on the device
    /// once per shape and keeps the fastest (without it every convolution runs the direct kernel).
    pub autotune: bool,
    /// burn's `fusion`: element-wise chains (BatchNorm, ReLU, residual add) fused into one kernel.
    pub fusion: bool,
    /// Where the tuned choices and compiled kernels are kept between processes, if anywhere.
    pub cache: Option<std::path::PathBuf>,
}

/// The CPU a process runs on, as far as it changes the numbers: its model and the SIMD level our
/// kernels and the GEMM crate take on it ([`byol_kernels::simd_level`]), which round differently
/// from one level to the next. A run continued on another machine records each in its
/// `invocations.jsonl`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct CpuInfo {
    /// `model name` of `/proc/cpuinfo`; None where there is none.
    pub model: Option<String>,
    pub simd: String,
}

/// This machine's [`CpuInfo`].
pub fn cpu() -> CpuInfo {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        });
    CpuInfo {
        model,
        simd: byol_kernels::simd_level().to_string(),
    }
}

/// The GPU side of this build (see [`GpuBuild`]).
pub fn gpu_build() -> GpuBuild {
    let gpu = cfg!(any(feature = "cuda", feature = "wgpu"));
    let mut backends = Vec::new();
    if cfg!(feature = "cuda") {
        backends.push("cuda");
    }
    if cfg!(feature = "wgpu") {
        backends.push("wgpu");
    }
    GpuBuild {
        backends,
        autotune: gpu,
        fusion: gpu,
        cache: gpu.then(gpu_cache_dir),
    }
}

/// The folder CubeCL keeps its environment in for a GPU run of `byol`: the autotune results
/// (which kernel won for each shape) and the compiled kernels, one database file, so a second run
/// on the same GPU neither tunes nor compiles again. A process that finds the file held by another
/// one running at the same time reads nothing from it and stores nothing (CubeCL warns "database
/// is readonly" per kernel and tunes again), so the processes of one run on several processes
/// each keep their own folder, `rank-<local rank>` inside this one
/// ([`BackendKind::process_device`]). `BYOL_GPU_CACHE` if set; else
/// `$XDG_CACHE_HOME/byol/cubecl`; else `~/.cache/byol/cubecl`; else a folder in the temporary
/// directory. Deleting it costs one tuning run. A `cubecl.toml` (or `[cubecl]` in `burn.toml`) in
/// the working directory or above that sets `[environment] path` to something other than CubeCL's
/// default keeps its own place.
pub fn gpu_cache_dir() -> std::path::PathBuf {
    cache_dir_from(|name| std::env::var_os(name))
}

/// [`gpu_cache_dir`] with the environment as a function, for the test.
fn cache_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> std::path::PathBuf {
    let var = |name: &str| {
        env(name)
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    };
    if let Some(dir) = var("BYOL_GPU_CACHE") {
        return dir;
    }
    var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .map(|c| c.join("byol").join("cubecl"))
        .unwrap_or_else(|| std::env::temp_dir().join("byol-cubecl"))
}

/// Point CubeCL's environment at [`gpu_cache_dir`] (its `rank-<local rank>` folder for one of
/// several processes of a run) before the first GPU device is made. CubeCL's own default is the
/// `target/` folder of whichever Cargo workspace the working directory is in, else the user
/// cache: a cache that moves with the directory a run is started from.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn use_gpu_cache(local_rank: Option<usize>) {
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        if matches!(config.environment.path, CacheConfig::Target) {
            let dir = gpu_cache_dir();
            config.environment.path = CacheConfig::Directory(match local_rank {
                Some(r) => dir.join(format!("rank-{r}")),
                None => dir,
            });
        }
        let dir = config.environment.path.root();
        if CubeClRuntimeConfig::try_set(config) {
            tracing::debug!("GPU kernel and autotune cache: {}", dir.display());
        } else {
            tracing::debug!(
                "CubeCL was configured before the first device; its cache stays where it was set"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend this build lacks is an error naming the feature and the command that adds it
    /// (CI's test build has `wgpu`, so it checks `cuda`).
    #[test]
    #[cfg(any(not(feature = "cuda"), not(feature = "wgpu")))]
    fn a_backend_not_built_in_is_a_clear_error() {
        let missing = if cfg!(feature = "wgpu") {
            BackendKind::Cuda
        } else {
            BackendKind::Wgpu
        };
        let name = missing.name();
        let e = missing.device().expect_err("not built in").to_string();
        assert!(
            e.contains(&format!("`{name}` feature")) && e.contains(&format!("--features {name}")),
            "{e}"
        );
    }

    /// `BYOL_GPU_CACHE` wins; else the user cache folder (`XDG_CACHE_HOME`, else `~/.cache`);
    /// an empty variable counts as unset.
    #[test]
    fn the_gpu_cache_follows_the_environment() {
        use std::path::Path;
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).into())
            }
        };
        let dir = |vars| cache_dir_from(env(vars));
        assert_eq!(
            dir(&[
                ("BYOL_GPU_CACHE", "/y"),
                ("XDG_CACHE_HOME", "/x"),
                ("HOME", "/h")
            ]),
            Path::new("/y")
        );
        assert_eq!(
            dir(&[
                ("BYOL_GPU_CACHE", ""),
                ("XDG_CACHE_HOME", "/x"),
                ("HOME", "/h")
            ]),
            Path::new("/x/byol/cubecl")
        );
        assert_eq!(dir(&[("HOME", "/h")]), Path::new("/h/.cache/byol/cubecl"));
        assert_eq!(dir(&[]), std::env::temp_dir().join("byol-cubecl"));
    }
}
