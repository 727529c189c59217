//! The one place that chooses between the CPU kernels of `byol-kernels` and burn's own
//! operations, at run time: [`selected`] reads the environment variable [`ENV`]
//! (`BYOL_CPU_KERNELS`) once per process. With `ours` (the default) each function below tries the
//! kernel first; the kernel declines (another backend, dtype or shape) and burn's operation runs.
//! With `burn` every layer is burn's operation on every backend, from the same binary: a bug in
//! the kernels can be ruled out without rebuilding, and CI runs the tests whose numbers depend on
//! it both ways from one build. Both give the same values to f32 rounding (the kernels' tests
//! compare them with burn's); `run.json` records the choice.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::Tensor;
use serde::Serialize;
use std::sync::OnceLock;

/// The environment variable that picks the CPU kernels: `ours` (or unset, or empty) or `burn`.
pub const ENV: &str = "BYOL_CPU_KERNELS";

/// Which implementation runs the encoder's convolutions, training-mode batch norms and max-pools
/// on `flex` (GPU backends always run burn's CubeCL kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpuKernels {
    /// `crates/byol-kernels` where it applies (f32 on `flex`), burn's operations elsewhere.
    Ours,
    /// burn's own operations everywhere (another rounding, slower on the CPU).
    Burn,
}

impl CpuKernels {
    /// The choice [`ENV`] makes, or an error naming the variable and its values.
    pub fn from_env() -> crate::Result<Self> {
        Self::parse(std::env::var_os(ENV).as_deref())
    }

    /// [`Self::from_env`] on a value of the variable (`None`: unset).
    fn parse(value: Option<&std::ffi::OsStr>) -> crate::Result<Self> {
        match value.map(|v| v.to_str()) {
            None => Ok(CpuKernels::Ours),
            Some(Some("" | "ours")) => Ok(CpuKernels::Ours),
            Some(Some("burn")) => Ok(CpuKernels::Burn),
            Some(v) => Err(crate::Error::config(
                ENV,
                format!(
                    "{:?} is not a choice of CPU kernels: `ours` (crates/byol-kernels, the default) or `burn` (burn's own operations)",
                    v.unwrap_or("(not UTF-8)")
                ),
            )),
        }
    }

    /// Its name, as `run.json` records it.
    pub fn name(self) -> &'static str {
        match self {
            CpuKernels::Ours => "ours",
            CpuKernels::Burn => "burn",
        }
    }
}

/// This process's choice, read from [`ENV`] on first use. Every validated config checks the
/// variable ([`crate::ExperimentConfig::validate`]) and the binary checks it before anything runs,
/// so an invalid value is an error there; only a network run without a validated config panics,
/// naming the variable, on its first layer.
pub fn selected() -> CpuKernels {
    static CHOICE: OnceLock<CpuKernels> = OnceLock::new();
    *CHOICE.get_or_init(|| CpuKernels::from_env().unwrap_or_else(|e| panic!("{e}")))
}

/// Whether the kernels of `byol-kernels` are tried.
fn ours() -> bool {
    selected() == CpuKernels::Ours
}

/// (output, batch mean \[C\], biased batch variance \[C\]) of a training-mode batch norm.
pub type BatchNormOutput<const D: usize> = (Tensor<D>, Tensor<1>, Tensor<1>);

/// `c(x)` for f32 `x`: the kernel's convolution when `c` has its shape (square stride, symmetric
/// padding, no dilation, groups or bias), else burn's `Conv2d::forward`.
pub fn conv2d(c: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    if ours() {
        let pad = match c.padding {
            PaddingConfig2d::Explicit(top, left, bottom, right)
                if top == left && left == bottom && bottom == right =>
            {
                Some(top)
            }
            PaddingConfig2d::Valid => Some(0),
            _ => None,
        };
        if let Some(pad) = pad
            && c.stride[0] == c.stride[1]
            && c.dilation == [1, 1]
            && c.groups == 1
            && c.bias.is_none()
            && let Some(y) = byol_kernels::conv::try_conv2d(&x, &c.weight.val(), c.stride[0], pad)
        {
            return y;
        }
    }
    c.forward(x)
}

/// The fused training-mode `relu?(batch_norm(x) + residual?)` when a kernel takes it; `None`
/// sends the caller to its tensor-operation form.
pub fn fused_batch_norm_act<const D: usize>(
    x: &Tensor<D>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    epsilon: f64,
    residual: Option<&Tensor<D>>,
    relu: bool,
) -> Option<BatchNormOutput<D>> {
    if !ours() {
        return None;
    }
    byol_kernels::batch_norm::try_batch_norm_act(x, gamma, beta, epsilon, residual, relu)
}

/// `pool(x)`: the kernel's max-pool when it takes it, else burn's `MaxPool2d::forward`.
pub fn max_pool2d(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    if ours()
        && let Some(y) = byol_kernels::max_pool::try_max_pool2d(pool, &x)
    {
        return y;
    }
    pool.forward(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    /// Unset and empty are the default; `burn` picks burn's operations; anything else is an error
    /// naming the variable and both values.
    #[test]
    fn the_variable_picks_the_kernels() {
        assert_eq!(CpuKernels::parse(None).unwrap(), CpuKernels::Ours);
        assert_eq!(
            CpuKernels::parse(Some(OsStr::new(""))).unwrap(),
            CpuKernels::Ours
        );
        assert_eq!(
            CpuKernels::parse(Some(OsStr::new("ours"))).unwrap(),
            CpuKernels::Ours
        );
        assert_eq!(
            CpuKernels::parse(Some(OsStr::new("burn"))).unwrap(),
            CpuKernels::Burn
        );
        let e = CpuKernels::parse(Some(OsStr::new("Burn")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(ENV)
                && e.contains("\"Burn\"")
                && e.contains("`ours`")
                && e.contains("`burn`"),
            "{e}"
        );
    }
}
