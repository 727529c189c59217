//! A distillation's checkpoints: `checkpoint-<step>.safetensors` in its run directory, holding
//! the student, the optimiser state, the step, the config and the teacher's checksum and path;
//! and what resuming from one checks (the same teacher, no setting that changes the run).

use super::DistillConfig;
use crate::config::ExperimentConfig;
use crate::eval::Finetuned;
use crate::eval::classifier::Saved;
use crate::io::{FileKind, TensorFile};
use crate::model::params::{Named, collect, load, named_from, values};
use crate::optim::{OptimConfig, Optimizer};
use crate::train::checkpoint;
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::Device;
use std::path::Path;

/// What a distillation checkpoint's metadata says it is.
pub const CHECKPOINT_KIND: FileKind<'static> = FileKind {
    format: "byol-distill-checkpoint",
    version: "1",
    kind: "byol distillation checkpoint",
};
/// Checkpoints kept in the run directory.
const KEEP: usize = 2;

/// The fields of a config that change a distillation's trajectory: the seed, the data but
/// where it is and how much of it is cached ([`crate::data::DataConfig::with_location_of`]), the
/// views, and everything of `[distill]` but how often it saves.
fn trajectory_differences(now: &ExperimentConfig, recorded: &ExperimentConfig) -> Vec<String> {
    /// What a distillation's trajectory reads of its config.
    #[derive(serde::Serialize)]
    struct Trajectory<'a> {
        seed: u64,
        data: &'a crate::data::DataConfig,
        augment: &'a crate::augment::AugmentConfig,
        distill: &'a DistillConfig,
    }
    let data = crate::data::DataConfig {
        cache_max_mb: now.data.cache_max_mb,
        ..recorded.data.clone().with_location_of(&now.data)
    };
    let distill = DistillConfig {
        checkpoint_every: now.distill.checkpoint_every,
        ..recorded.distill.clone()
    };
    let ours = Trajectory {
        seed: now.seed,
        data: &now.data,
        augment: &now.augment,
        distill: &now.distill,
    };
    let theirs = Trajectory {
        seed: recorded.seed,
        data: &data,
        augment: &recorded.augment,
        distill: &distill,
    };
    crate::config::differences(&ours, &theirs)
        .into_iter()
        .map(|d| d.to_string())
        .collect()
}

/// The optimiser of a distillation: SGD with Nesterov momentum 0.9.
pub(super) fn optimizer(cfg: &DistillConfig) -> Optimizer {
    OptimConfig::sgd(cfg.learning_rate, cfg.weight_decay, true).init()
}

/// Write the checkpoint of `step` into `dir` and keep the newest [`KEEP`].
pub(super) fn save_checkpoint(
    dir: &Path,
    student: &Finetuned,
    optim: &Optimizer,
    step: u64,
    cfg: &ExperimentConfig,
    teacher: &Saved,
) -> Result<()> {
    let mut file = TensorFile::default();
    for (path, Named { flat, shape }) in collect(&student.valid()) {
        file.tensors
            .insert(format!("student/{path}"), (shape, values(&flat)?));
    }
    optim.save_state(&mut file.tensors)?;
    file.meta.insert("step".into(), step.to_string());
    file.meta.insert("config".into(), cfg.to_toml());
    file.meta.insert("teacher".into(), teacher.sha256.clone());
    file.meta
        .insert("teacher-path".into(), teacher.path.display().to_string());
    file.write(&checkpoint::path_for(dir, step), CHECKPOINT_KIND)?;
    checkpoint::prune(dir, KEEP);
    Ok(())
}

/// The student and optimiser of the newest usable checkpoint in `dir`, after checking that it
/// distils the same teacher with the same settings.
pub(super) fn resume(
    dir: &Path,
    fresh: Finetuned,
    cfg: &ExperimentConfig,
    teacher_sha256: &str,
    device: &Device,
) -> Result<(Finetuned, Optimizer, u64)> {
    let (file, path) = checkpoint::newest(dir, |p| TensorFile::read(p, CHECKPOINT_KIND))?;
    let err = |m: String| Error::checkpoint(&path, m);
    if file.meta.get("teacher").map(String::as_str) != Some(teacher_sha256) {
        return Err(err(format!(
            "this run distils another teacher (checksum {:?}, the one given has {teacher_sha256})",
            file.meta.get("teacher")
        )));
    }
    let recorded = ExperimentConfig::from_recorded_toml(
        file.meta
            .get("config")
            .ok_or_else(|| err("no config in its metadata".into()))?,
        &path,
    )?;
    let changed = trajectory_differences(cfg, &recorded);
    if !changed.is_empty() {
        return Err(err(format!(
            "resuming with other settings would change the run: {}",
            changed.join("; ")
        )));
    }
    let step: u64 = file
        .meta
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err("no step in its metadata".into()))?;
    let (student, missing) = load(fresh, &named_from(&file.tensors, "student/", device));
    if !missing.is_empty() {
        return Err(err(format!("student tensors missing: {missing:?}")));
    }
    let mut optim = optimizer(&cfg.distill);
    optim.load_state(&file.tensors, device)?;
    Ok((student, optim, step))
}

/// The config recorded in the newest usable checkpoint of the distillation in `dir`, and the
/// teacher file it distils (as given when it started).
pub fn recorded(dir: &Path) -> Result<(ExperimentConfig, std::path::PathBuf)> {
    let (file, path) = checkpoint::newest(dir, |p| TensorFile::read(p, CHECKPOINT_KIND))?;
    let err = |m: &str| Error::checkpoint(&path, m);
    let config = ExperimentConfig::from_recorded_toml(
        file.meta
            .get("config")
            .ok_or_else(|| err("no config in its metadata"))?,
        &path,
    )?;
    let teacher = file
        .meta
        .get("teacher-path")
        .ok_or_else(|| err("no teacher path in its metadata"))?;
    Ok((config, teacher.into()))
}
