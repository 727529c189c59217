//! `byol distill` and what `byol eval finetune --save-model` records: a teacher file and a config
//! made into a [`Distillation`] and run.

use super::{Evaluation, Settings};
use crate::config::ExperimentConfig;
use crate::data::Splits;
use crate::distill::{DistillOptions, DistillOutcome, Distillation, distill, recorded};
use crate::eval::FinetuneResult;
use crate::eval::classifier::{self, ClassifierInfo, Labelled, Saved};
use crate::supervised::Progress;
use crate::{Device, Result};
use std::path::Path;

/// The description `eval finetune --save-model` writes beside the fine-tuned network of the
/// evaluation `e` whose result is `r`.
pub fn classifier_info(e: &Evaluation, r: &FinetuneResult) -> Result<ClassifierInfo> {
    let c = &e.config;
    let train = &e.splits()?.train;
    let from_projector = c.eval.finetune.from == crate::eval::FinetuneFrom::ProjectorLayer1;
    Ok(ClassifierInfo {
        encoder: c.model.encoder.clone(),
        stem_width: from_projector.then_some(c.model.projector.hidden),
        classes: train.classes.clone(),
        image_size: c.data.image_size,
        mean: c.augment.mean,
        std: c.augment.std,
        labelled: Some(Labelled {
            fraction: c.eval.finetune.label_fraction,
            seed: c.seed,
            of_images: train.len(),
            images: r.labelled_images,
        }),
    })
}

/// A distillation ready to run: the teacher, the config, the data.
pub struct DistillSetup {
    pub teacher: Saved,
    /// The config with the teacher's encoder as `model.encoder` and its image size as
    /// `data.image-size` (the views must be of the size it was trained on).
    pub config: ExperimentConfig,
    pub splits: Splits,
    pub device: Device,
}

impl DistillSetup {
    /// The teacher at `teacher` with the config `base` and `settings`, then `edit` (the
    /// `[distill]` flags). With `resume`, the config recorded in that run directory's newest
    /// checkpoint takes `base`'s place, and `teacher` may be left out (`None`): the one the run
    /// recorded is read.
    pub fn new(
        teacher: Option<&Path>,
        base: &str,
        settings: &Settings,
        resume: Option<&Path>,
        edit: impl FnOnce(&mut ExperimentConfig),
    ) -> Result<Self> {
        let (mut config, teacher_path) = match resume {
            Some(dir) => {
                // A run in progress is "in use", whether or not it has a checkpoint yet.
                if dir.join(crate::train::run_dir::LOCK).exists() {
                    drop(crate::train::RunDir::lock(dir)?);
                }
                let (cfg, path) = recorded(dir)?;
                (
                    settings.apply_to(&cfg, dir)?,
                    teacher.map_or(path, Path::to_path_buf),
                )
            }
            None => {
                let path = teacher.ok_or_else(|| {
                    crate::Error::config(
                        "distill",
                        "a new distillation needs its teacher (--teacher FILE)",
                    )
                })?;
                (settings.resolve(base)?, path.to_path_buf())
            }
        };
        edit(&mut config);
        let device = config.backend.device()?;
        let teacher = classifier::read(&teacher_path, &device)?;
        config.model.encoder = teacher.info.encoder.clone();
        config.data.image_size = teacher.info.image_size;
        config.validate()?;
        let splits = crate::data::load(&config.data, config.seed)?;
        Ok(DistillSetup {
            teacher,
            config,
            splits,
            device,
        })
    }

    /// Run it in `dir` (see [`distill`]).
    pub fn run(
        &self,
        dir: &Path,
        opts: &DistillOptions,
        progress: &mut dyn Progress,
    ) -> Result<DistillOutcome> {
        let run = Distillation {
            teacher: &self.teacher,
            config: &self.config,
            train: &self.splits.train,
            test: &self.splits.test,
            device: self.device.clone(),
        };
        distill(&run, dir, opts, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--resume` of a distillation another process is running says so, even before its first
    /// checkpoint (it said "no checkpoint").
    #[test]
    fn resuming_a_running_distillation_says_it_is_in_use() {
        let dir = std::env::temp_dir().join(format!("byol-distill-in-use-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let held = crate::train::RunDir::lock(&dir).unwrap();
        let e = DistillSetup::new(None, "small-cpu", &Settings::default(), Some(&dir), |_| {})
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is in use by"), "{e}");
        drop(held);
        let e = DistillSetup::new(None, "small-cpu", &Settings::default(), Some(&dir), |_| {})
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("is in use by"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
