//! The experiment configuration: a TOML file composed of one section per component.
//!
//! Every struct denies unknown fields, so a misspelt key is an error naming it. Values are
//! checked by [`ExperimentConfig::validate`] before any work starts, with messages naming the
//! field and its allowed range. Defaults are the paper's (Grill et al. 2020, Appendix B/C) unless
//! a comment says otherwise; the small CPU presets in `configs/` say where and why they deviate.

use crate::augment::AugmentConfig;
use crate::backend::BackendKind;
use crate::data::DataConfig;
use crate::model::ModelConfig;
use crate::optim::OptimConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

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

/// See [`TrainConfig::on_non_finite`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnNonFinite {
    #[default]
    Stop,
    Skip,
}

/// The training objective.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ObjectiveConfig {
    /// `byol`: the regression loss plus β times the contrastive term of the paper's unified
    /// objective (BYOL↔SimCLR appendix; β = 0 is BYOL); `nt-xent`: SimCLR's loss over the 2N−2
    /// in-batch negatives; `moco`: MoCo v2's InfoNCE against a queue of past target keys.
    #[serde(default)]
    pub kind: ObjectiveKind,
    /// β, the weight of the negative pairs in the unified objective (kind `byol` only).
    #[serde(default)]
    pub beta: f64,
    /// Temperature α of the contrastive terms (SimCLR: 0.1–0.5; MoCo v2: 0.2).
    #[serde(default = "d_temperature")]
    pub temperature: f64,
    /// Negative keys kept by MoCo's queue (MoCo v2: 65,536).
    #[serde(default = "d_queue")]
    pub queue_size: usize,
}

/// See [`ObjectiveConfig::kind`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectiveKind {
    #[default]
    Byol,
    NtXent,
    Moco,
}

fn d_temperature() -> f64 {
    0.1
}
fn d_queue() -> usize {
    65_536
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        Self { kind: ObjectiveKind::Byol, beta: 0.0, temperature: d_temperature(), queue_size: d_queue() }
    }
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
        Self { tau_base: d_tau(), init: TargetInit::Independent, mode: TargetMode::Ema, tau_schedule: TauSchedule::Cosine }
    }
}

/// The training schedule and loop settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TrainConfig {
    /// Number of passes over the training set. Paper: 1000 (also 300 for the ablations).
    pub epochs: u64,
    /// Images per step (each gives two views). Paper: 4096.
    pub batch_size: usize,
    /// Write a checkpoint every this many steps (and always at the end). 0: only at the end.
    #[serde(default = "d_ckpt")]
    pub checkpoint_every: u64,
    /// How many of the newest checkpoints to keep (older ones are deleted).
    #[serde(default = "d_keep")]
    pub keep_checkpoints: usize,
    /// Append a metrics line to `metrics.jsonl` every this many steps.
    #[serde(default = "d_one")]
    pub log_every: u64,
    /// Run the kNN monitor every this many epochs (0: only at the end).
    #[serde(default)]
    pub knn_every_epochs: u64,
    /// Warn when the collapse signal (std of the L2-normalised projections) stays below this
    /// fraction of its healthy value 1/√P for `collapse-patience` logged steps in a row.
    #[serde(default = "d_collapse")]
    pub collapse_fraction: f64,
    /// Logged steps below the threshold before the collapse warning.
    #[serde(default = "d_patience")]
    pub collapse_patience: u64,
    /// A non-finite loss: `stop` the run (default; checked at logged steps, no host
    /// synchronisation otherwise) or `skip` the step (checked every step, which synchronises
    /// with the device once per step): no update, a record in `skipped-steps.jsonl`, and a stop
    /// after 10 consecutive skips.
    #[serde(default)]
    pub on_non_finite: OnNonFinite,
    /// Compute type of the encoder: `f32`, or `bf16` / `f16` mixed precision (f32 weights,
    /// batch-norm statistics, heads, loss, optimizer and EMA; see `model::precision`). On `flex`
    /// the low-precision convolutions are emulated (slower than f32): use them on `cuda`.
    #[serde(default)]
    pub precision: crate::model::precision::Precision,
}

fn d_ckpt() -> u64 {
    500
}
fn d_keep() -> usize {
    3
}
fn d_one() -> u64 {
    1
}
fn d_collapse() -> f64 {
    0.1
}
fn d_patience() -> u64 {
    20
}

/// The kNN monitor (not in the paper; the protocol common in SSL libraries).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KnnConfig {
    /// Number of neighbours.
    #[serde(default = "d_k")]
    pub k: usize,
    /// Temperature T of the vote weights exp(sim/T).
    #[serde(default = "d_t")]
    pub temperature: f64,
    /// Images per forward pass when extracting features.
    #[serde(default = "d_feat_batch")]
    pub batch_size: usize,
}

fn d_k() -> usize {
    200
}
fn d_t() -> f64 {
    0.1
}
fn d_feat_batch() -> usize {
    256
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self { k: d_k(), temperature: d_t(), batch_size: d_feat_batch() }
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EvalConfig {
    #[serde(default)]
    pub knn: KnnConfig,
    #[serde(default)]
    pub linear: crate::eval::LinearEvalConfig,
    #[serde(default)]
    pub finetune: crate::eval::FinetuneConfig,
}

/// A whole experiment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExperimentConfig {
    /// Master seed: initialisation, shuffling and augmentation all derive from it.
    #[serde(default)]
    pub seed: u64,
    /// Compute backend.
    #[serde(default)]
    pub backend: BackendKind,
    pub model: ModelConfig,
    #[serde(default)]
    pub target: TargetConfig,
    #[serde(default)]
    pub objective: ObjectiveConfig,
    pub optim: OptimConfig,
    pub data: DataConfig,
    #[serde(default)]
    pub augment: AugmentConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
}

/// The presets shipped in `configs/`, embedded in the binary.
pub const PRESETS: &[(&str, &str)] = &[
    ("small-cpu", include_str!("../../../configs/small-cpu.toml")),
    ("cifar10-cpu", include_str!("../../../configs/cifar10-cpu.toml")),
    ("cifar10-resnet18", include_str!("../../../configs/cifar10-resnet18.toml")),
    ("imagenet-resnet50-1000ep", include_str!("../../../configs/imagenet-resnet50-1000ep.toml")),
    ("simclr-cifar10-cpu", include_str!("../../../configs/simclr-cifar10-cpu.toml")),
    ("mocov2-cifar10-cpu", include_str!("../../../configs/mocov2-cifar10-cpu.toml")),
];

impl ExperimentConfig {
    /// Parse a TOML document, apply `key.path=value` overrides, and validate.
    pub fn from_toml_with_overrides(text: &str, origin: &Path, overrides: &[String]) -> Result<Self> {
        let parse_err = |message: String| Error::ConfigParse { path: origin.to_path_buf(), message };
        let mut value: toml::Table = text.parse().map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        if let Some(base) = value.remove("extends") {
            let name = base.as_str().ok_or_else(|| parse_err("`extends` must name a preset, as a string".into()))?;
            let (_, base_text) = PRESETS
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| parse_err(format!("`extends = \"{name}\"` is not a preset")))?;
            let mut merged: toml::Table = base_text.parse().map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
            merged.remove("extends");
            merge(&mut merged, value);
            value = merged;
        }
        for ov in overrides {
            apply_override(&mut value, ov)?;
        }
        complete_view2(&mut value);
        let cfg: ExperimentConfig =
            toml::Value::Table(value).try_into().map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Load a preset by name (see [`PRESETS`]) or a TOML file by path.
    pub fn load(name_or_path: &str, overrides: &[String]) -> Result<Self> {
        if let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == name_or_path) {
            return Self::from_toml_with_overrides(text, Path::new(name_or_path), overrides);
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                let names: Vec<_> = PRESETS.iter().map(|(n, _)| *n).collect();
                Error::ConfigParse {
                    path: path.to_path_buf(),
                    message: format!("no such file, and not a preset (presets: {})", names.join(", ")),
                }
            } else {
                Error::io(path, e)
            }
        })?;
        Self::from_toml_with_overrides(&text, path, overrides)
    }

    /// The fields in which `self` differs from `recorded` (the config a checkpoint was written
    /// with) that change the training trajectory, as `field: recorded → new`. A run may resume
    /// with other values only for fields that do not: the backend, where the data is and how it
    /// is read (`data.path`, `data.cache`, `data.workers`; the files must be the same), logging,
    /// checkpointing, monitoring and evaluation settings.
    pub fn resume_differences(&self, recorded: &ExperimentConfig) -> Vec<ConfigDifference> {
        const FREE: &[&str] = &[
            "backend",
            "data.path",
            "data.cache",
            "data.workers",
            "train.checkpoint-every",
            "train.keep-checkpoints",
            "train.log-every",
            "train.knn-every-epochs",
            "train.collapse-fraction",
            "train.collapse-patience",
            "train.on-non-finite",
            "eval",
        ];
        let (mut new, mut old) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
        flatten("", &toml::Value::try_from(self).expect("config serialises"), &mut new);
        flatten("", &toml::Value::try_from(recorded).expect("config serialises"), &mut old);
        let keys: std::collections::BTreeSet<&String> = new.keys().chain(old.keys()).collect();
        keys.into_iter()
            .filter(|k| !FREE.iter().any(|f| k.as_str() == *f || k.starts_with(&format!("{f}."))))
            .filter(|k| new.get(*k) != old.get(*k))
            .map(|k| ConfigDifference { field: k.clone(), recorded: old.get(k).cloned(), new: new.get(k).cloned() })
            .collect()
    }

    /// The resolved config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// Check every value's range and the consistency between sections.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.optim.validate()?;
        self.data.validate()?;
        self.augment.validate()?;
        if !(0.0..=1.0).contains(&self.target.tau_base) {
            return Err(Error::config("target.tau-base", format!("{} is outside [0, 1]", self.target.tau_base)));
        }
        let o = &self.objective;
        if !(o.temperature > 0.0 && o.temperature.is_finite()) {
            return Err(Error::config("objective.temperature", format!("{} must be a positive number", o.temperature)));
        }
        if !(o.beta >= 0.0 && o.beta.is_finite()) {
            return Err(Error::config("objective.beta", format!("{} must be a number ≥ 0", o.beta)));
        }
        if o.beta > 0.0 && o.kind != ObjectiveKind::Byol {
            return Err(Error::config("objective.beta", "applies to objective.kind = \"byol\" only"));
        }
        if o.kind == ObjectiveKind::Moco {
            if self.target.mode != TargetMode::Ema {
                return Err(Error::config("target.mode", "objective.kind = \"moco\" needs a target (key) network: use \"ema\""));
            }
            if o.queue_size == 0 {
                return Err(Error::config("objective.queue-size", "must be at least 1"));
            }
        }
        let t = &self.train;
        if t.epochs == 0 {
            return Err(Error::config("train.epochs", "must be at least 1"));
        }
        if t.batch_size < 2 {
            return Err(Error::config(
                "train.batch-size",
                format!("{} is too small: batch normalisation needs at least 2 images per batch", t.batch_size),
            ));
        }
        if t.keep_checkpoints == 0 {
            return Err(Error::config("train.keep-checkpoints", "must be at least 1"));
        }
        if t.log_every == 0 {
            return Err(Error::config("train.log-every", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&t.collapse_fraction) {
            return Err(Error::config("train.collapse-fraction", format!("{} is outside [0, 1)", t.collapse_fraction)));
        }
        let k = &self.eval.knn;
        if k.k == 0 {
            return Err(Error::config("eval.knn.k", "must be at least 1"));
        }
        if !(k.temperature > 0.0 && k.temperature.is_finite()) {
            return Err(Error::config("eval.knn.temperature", "must be a positive number"));
        }
        if k.batch_size == 0 {
            return Err(Error::config("eval.knn.batch-size", "must be at least 1"));
        }
        self.eval.linear.validate()?;
        self.eval.finetune.validate()?;
        Ok(())
    }
}

/// One field in which two configs differ ([`ExperimentConfig::resume_differences`]); shown as
/// `field: recorded → new`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigDifference {
    /// Dotted path of the field, e.g. `optim.base-lr`.
    pub field: String,
    /// Its value in the recorded config, as TOML (absent: not set there).
    pub recorded: Option<String>,
    /// Its value in the new config, as TOML.
    pub new: Option<String>,
}

impl std::fmt::Display for ConfigDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
        write!(f, "{}: {} → {}", self.field, show(&self.recorded), show(&self.new))
    }
}

/// Every leaf of `value` as `dotted.key → value`.
fn flatten(prefix: &str, value: &toml::Value, out: &mut std::collections::BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out);
            }
        }
        v => {
            out.insert(prefix.to_string(), v.to_string());
        }
    }
}

/// A partial `[augment.view2]` table (or `--set augment.view2.…`) keeps the paper's view t'
/// values for the keys it does not give. The struct's field defaults are view t's, so without
/// this a table giving only `blur-prob` would silently drop view t''s solarisation.
fn complete_view2(value: &mut toml::Table) {
    let Some(toml::Value::Table(augment)) = value.get_mut("augment") else { return };
    let Some(toml::Value::Table(view2)) = augment.get_mut("view2") else { return };
    let Ok(toml::Value::Table(mut full)) = toml::Value::try_from(crate::augment::ViewConfig::paper_view2()) else {
        unreachable!("a view config serialises to a table")
    };
    merge(&mut full, std::mem::take(view2));
    *view2 = full;
}

/// Deep-merge `over` into `base` (tables merge, other values replace).
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Apply one `a.b.c=value` override. The value is parsed as TOML (so `0.5`, `true`, `"x"`,
/// `[1, 2]` keep their types); a bare word that is not valid TOML is taken as a string.
fn apply_override(table: &mut toml::Table, ov: &str) -> Result<()> {
    let (key, raw) = ov
        .split_once('=')
        .ok_or_else(|| Error::config(ov, "an override must look like `section.key=value`"))?;
    let key = key.trim();
    let raw = raw.trim();
    let value: toml::Value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").expect("parsed"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        cur = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| Error::config(key, format!("`{p}` is not a section")))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_validates() {
        for (name, _) in PRESETS {
            ExperimentConfig::load(name, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn extends_merges_over_a_preset() {
        let text = "extends = \"cifar10-cpu\"\n[model]\nuse-predictor = false\n[objective]\nkind = \"nt-xent\"\n[target]\nmode = \"none\"\n";
        let cfg = ExperimentConfig::from_toml_with_overrides(text, Path::new("x.toml"), &[]).unwrap();
        let base = ExperimentConfig::load("cifar10-cpu", &[]).unwrap();
        assert_eq!(cfg.model.encoder, base.model.encoder, "tables merge");
        assert!(!cfg.model.use_predictor && cfg.objective.kind == ObjectiveKind::NtXent);
        assert_eq!(cfg.train, base.train);
        let err = ExperimentConfig::from_toml_with_overrides("extends = \"nope\"\n", Path::new("x.toml"), &[]).unwrap_err();
        assert!(err.to_string().contains("nope") && err.to_string().contains("x.toml"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = ExperimentConfig::load("small-cpu", &["optim.learning-rat=0.1".into()]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("learning-rat"), "{msg}");
    }

    #[test]
    fn wrong_type_and_range_are_rejected() {
        let err = ExperimentConfig::load("small-cpu", &["train.batch-size=\"big\"".into()]).unwrap_err();
        assert!(err.to_string().contains("batch-size"), "{err}");
        let err = ExperimentConfig::load("small-cpu", &["target.tau-base=1.5".into()]).unwrap_err();
        assert!(err.to_string().contains("target.tau-base"), "{err}");
        let err = ExperimentConfig::load("small-cpu", &["optim.base-lr=-1".into()]).unwrap_err();
        assert!(err.to_string().contains("optim.base-lr"), "{err}");
        let err = ExperimentConfig::load("small-cpu", &["train.batch-size=0".into()]).unwrap_err();
        assert!(err.to_string().contains("train.batch-size"), "{err}");
    }

    #[test]
    fn a_partial_view2_table_keeps_the_paper_view2_values() {
        // Only blur-prob given: solarisation stays at the paper's 0.2 for view t'.
        let text = "extends = \"small-cpu\"\n[augment.view2]\nblur-prob = 0.5\n";
        let cfg = ExperimentConfig::from_toml_with_overrides(text, Path::new("x.toml"), &[]).unwrap();
        let want = crate::augment::ViewConfig { blur_prob: 0.5, ..crate::augment::ViewConfig::paper_view2() };
        assert_eq!(cfg.augment.view2, want);
        // The same through --set on a config without the table.
        let text = "extends = \"small-cpu\"\n";
        let mut bare: toml::Table = PRESETS[0].1.parse().unwrap();
        if let Some(a) = bare.get_mut("augment").and_then(|a| a.as_table_mut()) {
            a.remove("view2");
        }
        let cfg = ExperimentConfig::from_toml_with_overrides(&toml::to_string(&bare).unwrap(), Path::new("x.toml"), &["augment.view2.hue=0.05".into()]).unwrap();
        assert_eq!(cfg.augment.view2, crate::augment::ViewConfig { hue: 0.05, ..crate::augment::ViewConfig::paper_view2() });
        // View t keeps view t's values.
        let cfg = ExperimentConfig::from_toml_with_overrides(text, Path::new("x.toml"), &["augment.view1.hue=0.05".into()]).unwrap();
        assert_eq!(cfg.augment.view1.solarize_prob, 0.0);
    }

    #[test]
    fn resume_differences_name_what_changes_the_trajectory() {
        let base = ExperimentConfig::load("small-cpu", &[]).unwrap();
        let same_run = ExperimentConfig::load(
            "small-cpu",
            &["train.log-every=7".into(), "data.workers=1".into(), "eval.knn.k=5".into(), "train.checkpoint-every=3".into()],
        )
        .unwrap();
        assert!(same_run.resume_differences(&base).is_empty(), "{:?}", same_run.resume_differences(&base));
        let other = ExperimentConfig::load("small-cpu", &["optim.base-lr=0.5".into(), "seed=3".into(), "augment.view2.solarize-prob=0.1".into()]).unwrap();
        let d: Vec<String> = other.resume_differences(&base).iter().map(ToString::to_string).collect();
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d.iter().any(|l| l.starts_with("optim.base-lr: 1.0 → 0.5")), "{d:?}");
        assert!(d.iter().any(|l| l.starts_with("seed: 0 → 3")), "{d:?}");
        assert!(d.iter().any(|l| l.starts_with("augment.view2.solarize-prob")), "{d:?}");
    }

    #[test]
    fn overrides_apply_and_round_trip() {
        let cfg = ExperimentConfig::load("small-cpu", &["train.epochs=3".into(), "seed=9".into()]).unwrap();
        assert_eq!(cfg.train.epochs, 3);
        assert_eq!(cfg.seed, 9);
        let again = ExperimentConfig::from_toml_with_overrides(&cfg.to_toml(), Path::new("x"), &[]).unwrap();
        assert_eq!(cfg, again);
    }

    #[test]
    fn paper_preset_has_paper_values() {
        let cfg = ExperimentConfig::load("imagenet-resnet50-1000ep", &[]).unwrap();
        assert_eq!(cfg.train.batch_size, 4096);
        assert_eq!(cfg.optim.base_lr, 0.2);
        assert_eq!(cfg.optim.weight_decay, 1.5e-6);
        assert_eq!(cfg.target.tau_base, 0.996);
        assert_eq!(cfg.model.projector.hidden, 4096);
        assert_eq!(cfg.model.projector.output, 256);
    }
}
