//! The experiment configuration: a TOML file composed of one section per component. Each
//! section's type lives next to the code it configures (`model::ModelConfig`, `ema::TargetConfig`,
//! `train::TrainConfig`, …, re-exported here); this module composes them, loads presets and files,
//! applies overrides and checks the consistency between sections.
//!
//! Every struct denies unknown fields, so a misspelt key is an error naming it. Values are
//! checked by [`ExperimentConfig::validate`] before any work starts, with messages naming the
//! field and its allowed range. Defaults are the paper's (Grill et al. 2020, Appendix B/C) unless
//! a comment says otherwise; the small CPU presets in `configs/` say where and why they deviate.

pub use crate::augment::AugmentConfig;
pub use crate::backend::BackendKind;
pub use crate::data::DataConfig;
pub use crate::ema::{TargetConfig, TargetInit, TargetMode, TauSchedule};
pub use crate::eval::{EvalConfig, KnnConfig};
pub use crate::loss::{ObjectiveConfig, ObjectiveKind};
pub use crate::model::ModelConfig;
pub use crate::optim::OptimConfig;
pub use crate::train::config::{OnNonFinite, TrainConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
    /// The dense transfer tasks (`byol transfer …`).
    #[serde(default)]
    pub transfer: crate::transfer::TransferConfig,
    /// Distillation with unlabelled images (`byol distill`).
    #[serde(default)]
    pub distill: crate::distill::config::DistillConfig,
}

/// The presets shipped in `configs/`, embedded in the binary.
pub const PRESETS: &[(&str, &str)] = &[
    ("small-cpu", include_str!("../../../configs/small-cpu.toml")),
    (
        "cifar10-cpu",
        include_str!("../../../configs/cifar10-cpu.toml"),
    ),
    (
        "vit-cifar10-cpu",
        include_str!("../../../configs/vit-cifar10-cpu.toml"),
    ),
    (
        "cifar10-resnet18",
        include_str!("../../../configs/cifar10-resnet18.toml"),
    ),
    (
        "imagenet-resnet50-1000ep",
        include_str!("../../../configs/imagenet-resnet50-1000ep.toml"),
    ),
    (
        "imagenet-vit-small-300ep",
        include_str!("../../../configs/imagenet-vit-small-300ep.toml"),
    ),
    (
        "simclr-cifar10-cpu",
        include_str!("../../../configs/simclr-cifar10-cpu.toml"),
    ),
    (
        "mocov2-cifar10-cpu",
        include_str!("../../../configs/mocov2-cifar10-cpu.toml"),
    ),
];

impl ExperimentConfig {
    /// Parse a TOML document, apply `key.path=value` overrides, and validate.
    pub fn from_toml_with_overrides(
        text: &str,
        origin: &Path,
        overrides: &[String],
    ) -> Result<Self> {
        let parse_err = |message: String| Error::ConfigParse {
            path: origin.to_path_buf(),
            message,
        };
        let mut value: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        if let Some(base) = value.remove("extends") {
            let name = base
                .as_str()
                .ok_or_else(|| parse_err("`extends` must name a preset, as a string".into()))?;
            let (_, base_text) = PRESETS
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| parse_err(format!("`extends = \"{name}\"` is not a preset")))?;
            let mut merged: toml::Table = base_text
                .parse()
                .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
            merged.remove("extends");
            merge(&mut merged, value);
            value = merged;
        }
        for ov in overrides {
            apply_override(&mut value, ov)?;
        }
        complete_view2(&mut value);
        complete_transfer_data(&mut value);
        let cfg: ExperimentConfig = toml::Value::Table(value)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read the config a checkpoint records. Checkpoints written before the data source became
    /// one typed value record every `[data]` field, whatever the source; the fields their source
    /// does not read are dropped here (a config a user writes keeps the strict check).
    pub fn from_recorded_toml(text: &str, origin: &Path) -> Result<Self> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| Error::ConfigParse {
                    path: origin.to_path_buf(),
                    message: e.to_string(),
                })?;
        if let Some(data) = table.get_mut("data").and_then(toml::Value::as_table_mut)
            && let Some(kind) = data
                .get("source")
                .cloned()
                .and_then(|v| v.try_into::<crate::data::DataSource>().ok())
        {
            kind.keep_own_fields(data);
        }
        Self::from_toml_with_overrides(
            &toml::to_string(&table).expect("a table serialises"),
            origin,
            &[],
        )
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
                    message: format!(
                        "no such file, and not a preset (presets: {})",
                        names.join(", ")
                    ),
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
    /// is read ([`crate::data::DataConfig::with_location_of`]; the files must be the same),
    /// logging, checkpointing and monitoring ([`crate::train::TrainConfig::with_run_settings_of`]),
    /// and the evaluation, transfer and distillation sections.
    pub fn resume_differences(&self, recorded: &ExperimentConfig) -> Vec<ConfigDifference> {
        let comparable = ExperimentConfig {
            backend: self.backend,
            data: recorded.data.clone().with_location_of(&self.data),
            train: recorded.train.clone().with_run_settings_of(&self.train),
            eval: self.eval.clone(),
            transfer: self.transfer.clone(),
            distill: self.distill.clone(),
            ..recorded.clone()
        };
        differences(self, &comparable)
    }

    /// The resolved config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// Check every value's range and the consistency between sections.
    pub fn validate(&self) -> Result<()> {
        if let Some(field) =
            too_large_for_toml(&serde_json::to_value(self).expect("a config is JSON"), "")
        {
            return Err(Error::config(
                field,
                format!(
                    "is above {}, the largest integer a TOML config holds",
                    i64::MAX
                ),
            ));
        }
        self.model.validate()?;
        self.check_vit()?;
        self.optim.validate()?;
        self.data.validate()?;
        self.transfer.segment.validate()?;
        self.transfer.depth.validate()?;
        self.distill.validate()?;
        self.augment.validate()?;
        self.target.validate()?;
        self.objective.validate()?;
        if self.objective.kind == ObjectiveKind::Moco && self.target.mode != TargetMode::Ema {
            return Err(Error::config(
                "target.mode",
                "objective.kind = \"moco\" needs a target (key) network: use \"ema\"",
            ));
        }
        self.train.validate()?;
        self.check_devices()?;
        self.eval.validate()?;
        // The run's one setting from the environment (`BYOL_CPU_KERNELS`), checked with the rest
        // so that a library user's bad value is an error here, not a panic on the first layer.
        crate::model::kernels::CpuKernels::from_env()?;
        Ok(())
    }

    /// A ViT encoder against the image size (whole patches).
    fn check_vit(&self) -> Result<()> {
        match &self.model.encoder {
            crate::model::EncoderConfig::Vit(vit) => vit.check_image_size(self.data.image_size),
            crate::model::EncoderConfig::ResNet(_) => Ok(()),
        }
    }

    /// `train.devices` against the backend and the objective: every device of the run's backend;
    /// several only where a collective links them (`flex`, `cuda`) and for an objective whose
    /// loss has no term across images (BYOL with β = 0: NT-Xent, MoCo and β > 0 would need the
    /// other replicas' projections as negatives, which are not gathered).
    fn check_devices(&self) -> Result<()> {
        let devices = &self.train.devices;
        if let Some(d) = devices.iter().find(|d| d.backend != self.backend) {
            return Err(Error::config(
                "train.devices",
                format!(
                    "`{}` devices with backend = \"{}\": list devices of the run's backend",
                    d.backend.name(),
                    self.backend.name()
                ),
            ));
        }
        if devices.len() < 2 {
            return Ok(());
        }
        if self.backend == crate::backend::BackendKind::Wgpu {
            return Err(Error::config(
                "train.devices",
                "several `wgpu` devices have no collective to link them (burn's run on `cuda`, ours on `flex`)",
            ));
        }
        if self.objective.kind != ObjectiveKind::Byol || self.objective.beta != 0.0 {
            return Err(Error::config(
                "objective.kind",
                "several devices train BYOL's objective with beta = 0 only: NT-Xent, MoCo and beta > 0 take negatives across the batch, which would need the other replicas' projections",
            ));
        }
        Ok(())
    }
}

/// Every field in which `new` differs from `recorded` (two configs, or two parts of configs that
/// serialise to tables), as `field: recorded → new`.
pub fn differences<T: Serialize>(new: &T, recorded: &T) -> Vec<ConfigDifference> {
    let flat = |v: &T| {
        let mut out = std::collections::BTreeMap::new();
        flatten(
            "",
            &toml::Value::try_from(v).expect("config serialises"),
            &mut out,
        );
        out
    };
    let (new, old) = (flat(new), flat(recorded));
    let keys: std::collections::BTreeSet<&String> = new.keys().chain(old.keys()).collect();
    keys.into_iter()
        .filter(|k| new.get(*k) != old.get(*k))
        .map(|k| ConfigDifference {
            field: k.clone(),
            recorded: old.get(k).cloned(),
            new: new.get(k).cloned(),
        })
        .collect()
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
        write!(
            f,
            "{}: {} → {}",
            self.field,
            show(&self.recorded),
            show(&self.new)
        )
    }
}

/// Every leaf of `value` as `dotted.key → value`.
fn flatten(
    prefix: &str,
    value: &toml::Value,
    out: &mut std::collections::BTreeMap<String, String>,
) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                flatten(
                    &if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    },
                    v,
                    out,
                );
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
/// A `[transfer.segment.data]` or `[transfer.depth.data]` table (or `--set
/// transfer.segment.data.train=…`) without `source` changes the default data's fields: the
/// default's table with the given keys on top.
fn complete_transfer_data(value: &mut toml::Table) {
    let Some(toml::Value::Table(transfer)) = value.get_mut("transfer") else {
        return;
    };
    let defaults = [
        (
            "segment",
            toml::Value::try_from(crate::transfer::segment::SegmentData::default()),
        ),
        (
            "depth",
            toml::Value::try_from(crate::transfer::depth::DepthData::default()),
        ),
    ];
    for (task, default) in defaults {
        let Some(toml::Value::Table(data)) = transfer.get_mut(task).and_then(|t| t.get_mut("data"))
        else {
            continue;
        };
        let Ok(toml::Value::Table(mut full)) = default else {
            unreachable!("a data source serialises to a table")
        };
        if data.contains_key("source") {
            continue;
        }
        merge(&mut full, std::mem::take(data));
        *data = full;
    }
}

fn complete_view2(value: &mut toml::Table) {
    let Some(toml::Value::Table(augment)) = value.get_mut("augment") else {
        return;
    };
    let Some(toml::Value::Table(view2)) = augment.get_mut("view2") else {
        return;
    };
    let Ok(toml::Value::Table(mut full)) =
        toml::Value::try_from(crate::augment::ViewConfig::paper_view2())
    else {
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
    // Another source replaces the old one with its settings (`data.path`, …): overrides after
    // this one set the new source's.
    if key == "data.source"
        && let Some(kind) = value.as_str().and_then(|s| {
            toml::Value::String(s.into())
                .try_into::<crate::data::DataSource>()
                .ok()
        })
    {
        kind.keep_own_fields(cur);
    }
    // Another kind of encoder (`model.encoder.arch` from a ResNet to a ViT or back) replaces the
    // old kind's settings: overrides after this one set the new kind's.
    if key == "model.encoder.arch" {
        let vit =
            |v: Option<&toml::Value>| v.and_then(|v| v.as_str()).map(|a| a.starts_with("vit-"));
        if vit(cur.get("arch")) != vit(Some(&value)) {
            cur.clear();
        }
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// The dotted path of the first integer of `v` above `i64::MAX` (a command-line flag can give
/// one; TOML cannot hold it), if any.
fn too_large_for_toml(v: &serde_json::Value, path: &str) -> Option<String> {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .filter(|&u| u > i64::MAX as u64)
            .map(|_| path.to_string()),
        serde_json::Value::Object(m) => m.iter().find_map(|(k, v)| too_large_for_toml(v, &join(k))),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, v)| too_large_for_toml(v, &join(&i.to_string()))),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
