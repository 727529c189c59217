//! The target update (paper Section 3.1): after each optimizer step, ξ ← τ·ξ + (1 − τ)·θ, with the
//! cosine schedule τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2 (paper Section 3.2).
//! The average applies to parameters only; the target's BatchNorm running statistics are its own
//! (spec, "Networks": "EMA applies to parameters; BN running statistics of the target are its own").

use crate::model::params::{MapNamed, collect, is_buffer, load};
use crate::model::{Online, Target};
use crate::{Error, Result};
use burn::module::Module;
use serde::{Deserialize, Serialize};

/// How the target network is built and updated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TargetConfig {
    /// τ_base of the cosine schedule τ_k = 1 − (1 − τ_base)(cos(πk/K) + 1)/2. Paper: 0.996 for
    /// 1000 epochs, 0.99 for 300 epochs.
    #[serde(default = "d_tau")]
    pub tau_base: f64,
    /// `independent`: initialise the target from its own seed (what the official code does);
    /// `copy`: start it as a deep copy of the online network.
    #[serde(default)]
    pub init: TargetInit,
    /// `ema`: a target network ξ updated by moving average (BYOL, MoCo's key encoder);
    /// `none`: no target network, the online projections of the other view are the targets,
    /// with gradient (SimCLR).
    #[serde(default)]
    pub mode: TargetMode,
    /// `cosine`: τ rises from τ_base to 1 (paper Section 3.2); `constant`: τ = τ_base throughout
    /// (τ = 1: a constant random target; τ = 0: a stop-gradient copy of the online network;
    /// MoCo: 0.999).
    #[serde(default)]
    pub tau_schedule: TauSchedule,
}

/// Whether there is a target network.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TargetMode {
    #[default]
    Ema,
    None,
}

/// How τ moves over the run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TauSchedule {
    #[default]
    Cosine,
    Constant,
}

/// How the target is initialised.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TargetInit {
    #[default]
    Independent,
    Copy,
}

fn d_tau() -> f64 {
    0.996
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self {
            tau_base: d_tau(),
            init: TargetInit::Independent,
            mode: TargetMode::Ema,
            tau_schedule: TauSchedule::Cosine,
        }
    }
}

impl TargetConfig {
    /// Check the section's values.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.tau_base) {
            return Err(Error::config(
                "target.tau-base",
                format!("{} is outside [0, 1]", self.tau_base),
            ));
        }
        Ok(())
    }
}

/// τ at step `k` of `total` steps.
pub fn tau(tau_base: f64, k: u64, total: u64) -> f64 {
    let progress = if total == 0 {
        1.0
    } else {
        (k.min(total) as f64) / (total as f64)
    };
    1.0 - (1.0 - tau_base) * ((std::f64::consts::PI * progress).cos() + 1.0) / 2.0
}

/// τ at step `k` of `total` under the target's schedule.
pub fn tau_at(cfg: &TargetConfig, k: u64, total: u64) -> f64 {
    match cfg.tau_schedule {
        TauSchedule::Cosine => tau(cfg.tau_base, k, total),
        TauSchedule::Constant => cfg.tau_base,
    }
}

/// ξ ← τ·ξ + (1 − τ)·θ for every parameter of the target (buffers untouched).
pub fn update(target: Target, online: &Online, tau: f64) -> Target {
    let theta = collect(online);
    MapNamed::new(|path, _, xi| {
        if is_buffer(path) {
            return xi;
        }
        let theta = theta[path].flat.clone().to_device(&xi.device());
        xi.mul_scalar(tau) + theta.mul_scalar(1.0 - tau)
    })
    .apply(target)
}

/// A target that is a deep copy of `online`'s encoder and projector: its own tensors and its own
/// BatchNorm state. (burn's `Module::clone` shares BatchNorm running statistics between the
/// clone and the original, so it cannot be used here.) `fresh` is a newly initialised target
/// whose values are overwritten.
pub fn copy_into(fresh: Target, online: &Online) -> Target {
    let values = collect(&online.valid());
    let (target, missing) = load(fresh, &values);
    debug_assert!(missing.is_empty(), "online lacks target paths: {missing:?}");
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tau_schedule_table() {
        // (k, K, τ_base, expected τ)
        let table = [
            (0, 100, 0.996, 0.996),
            (100, 100, 0.996, 1.0),
            (50, 100, 0.996, 0.998),
            (
                25,
                100,
                0.99,
                1.0 - 0.01 * (1.0 + (std::f64::consts::FRAC_PI_4).cos()) / 2.0,
            ),
            (0, 10, 1.0, 1.0),
            (
                7,
                10,
                0.0,
                1.0 - ((std::f64::consts::PI * 0.7).cos() + 1.0) / 2.0,
            ),
        ];
        for (k, total, base, expect) in table {
            let got = tau(base, k, total);
            assert!((got - expect).abs() < 1e-12, "k={k}: {got} vs {expect}");
        }
    }
}
