//! The distillation loop in a run directory: `checkpoint-<step>.safetensors` (the student, the
//! optimiser state, the step, the config and the teacher's checksum) every
//! `distill.checkpoint-every` steps and at the end, `metrics.jsonl` (a line per step), then
//! `student.safetensors` (a classifier file, as the teacher's) and `distill.json` (the teacher's
//! and the student's test accuracy). The order of the images and the views are pure functions of
//! (seed, epoch, image), so a resumed run continues the sequence an uninterrupted one takes.

use super::checkpoint::{optimizer, resume, save_checkpoint};
use super::{DistillConfig, distillation_loss, soft_labels};
use crate::augment::{AugmentConfig, ViewConfig};
use crate::config::ExperimentConfig;
use crate::data::{ImageSet, balanced_subset};
use crate::eval::classifier::{self, ClassifierInfo, Saved};
use crate::eval::linear::Accuracy;
use crate::eval::{Finetuned, training_view, view_pixels};
use crate::model::ResNetConfig;
use crate::model::params::{count_trainable, reinit, require_grad};
use crate::optim::Optimizer;
use crate::rng::{Stream, key, rng};
use crate::supervised::{Decay, Epochs, Hooks, Progress, StepDone, Tuning};
use crate::train::run_dir::{DISTILL, METRICS, STUDENT};
use crate::train::{RunDir, checkpoint};
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What a distillation needs: the teacher read back, the config (seed, data, views' image size
/// and normalisation, `[distill]`), the two splits and the device.
pub struct Distillation<'a> {
    pub teacher: &'a Saved,
    pub config: &'a ExperimentConfig,
    pub train: &'a ImageSet,
    pub test: &'a ImageSet,
    pub device: Device,
}

/// How to run it: resume, a step limit, an interrupt.
pub type DistillOptions = crate::supervised::Control;

/// How a run ended.
pub type DistillOutcome = crate::supervised::Ended<Box<DistillResult>>;

/// The result of a finished distillation (`distill.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistillResult {
    pub steps: u64,
    pub unlabelled_images: usize,
    /// Labelled images in the cross-entropy term (0 without `labelled-weight`).
    pub labelled_images: usize,
    pub teacher_encoder: ResNetConfig,
    pub student_encoder: ResNetConfig,
    pub teacher_parameters: usize,
    pub student_parameters: usize,
    /// Top-1 / top-5 on the test split, centre crops, eval mode.
    pub teacher: Accuracy,
    pub student: Accuracy,
    /// The mean loss of each epoch.
    pub epoch_losses: Vec<f64>,
    /// The checksum of the teacher's tensors.
    pub teacher_sha256: String,
    pub settings: DistillConfig,
}

#[derive(Serialize, Deserialize)]
struct StepLine {
    step: u64,
    loss: f64,
    lr: f64,
}

/// The student's encoder: the teacher's with `[distill.student]`'s changes.
fn student_encoder(
    teacher: &crate::model::EncoderConfig,
    cfg: &DistillConfig,
) -> Result<ResNetConfig> {
    let s = &cfg.student;
    let teacher = teacher.resnet("distillation (a student made from its teacher's layout)")?;
    Ok(ResNetConfig {
        arch: s.arch.unwrap_or(teacher.arch),
        base_width: s.base_width.unwrap_or(teacher.base_width),
        width_multiplier: s.width_multiplier.unwrap_or(teacher.width_multiplier),
        ..teacher.clone()
    })
}

/// Distil `run.teacher` into a student in `dir` (locked while it runs): the setup, the
/// supervised protocols' loop ([`crate::supervised`]) over [`Setup::loss`], then the student's
/// file and the result.
pub fn distill(
    run: &Distillation<'_>,
    dir: &Path,
    opts: &DistillOptions,
    progress: &mut dyn Progress,
) -> Result<DistillOutcome> {
    let (cfg, info) = (run.config, &run.teacher.info);
    cfg.distill.validate()?;
    if run.train.classes != info.classes {
        return Err(Error::config(
            "data",
            format!(
                "the data's classes {:?} are not the teacher's {:?}",
                run.train.classes, info.classes
            ),
        ));
    }
    let lock = RunDir::lock(dir)?;
    if !opts.resume && !checkpoint::list(dir).is_empty() {
        return Err(Error::checkpoint(
            dir,
            "already holds a distillation's checkpoints: resume it, or give another run directory",
        ));
    }
    crate::io::write_atomic(
        &lock.file(crate::train::run_dir::CONFIG),
        cfg.to_toml().as_bytes(),
    )?;
    let setup = Setup::new(run)?;
    let ad = run.device.clone().autodiff();
    let encoder = reinit(
        crate::model::Encoder::ResNet(setup.student.init(&run.device)),
        key(cfg.seed, Stream::DistillStudent, &[]),
    );
    let fresh = require_grad(Finetuned::new(
        encoder,
        None,
        setup.student.output_dim(),
        info.classes.len(),
        cfg.seed,
        &ad,
    ));
    let (student, optim, start) = if opts.resume {
        resume(dir, fresh, cfg, &run.teacher.sha256, &ad)?
    } else {
        (fresh, optimizer(&cfg.distill), 0)
    };
    // Lines logged after the checkpoint (a run killed between checkpoints) are logged again.
    crate::train::run_dir::trim_logs_after(dir, start)?;
    let tuning = Tuning {
        section: "distill",
        epochs: &setup.epochs,
        learning_rate: cfg.distill.learning_rate,
        decay: Decay::Cosine,
    };
    let mut hooks = Steps {
        run,
        lock: &lock,
        opts,
        total: setup.epochs.total(),
    };
    let trained = tuning.run(
        (student, optim),
        start,
        progress,
        &mut hooks,
        |student, chunk, epoch, step| setup.loss(student, chunk, epoch, step),
    )?;
    if trained.stopped {
        return Ok(DistillOutcome::Stopped { step: trained.step });
    }
    finish(&setup, trained.model.valid(), &lock).map(|r| DistillOutcome::Finished(Box::new(r)))
}

/// What a distillation works with once its settings are checked: the run, the student's
/// encoder, the views' size and normalisation, the labelled subset of the cross-entropy term
/// and the order of the images.
struct Setup<'a> {
    run: &'a Distillation<'a>,
    student: ResNetConfig,
    size: usize,
    aug: AugmentConfig,
    view: ViewConfig,
    labelled: Vec<usize>,
    epochs: Epochs,
}

impl<'a> Setup<'a> {
    fn new(run: &'a Distillation<'a>) -> Result<Self> {
        let (cfg, dc, info) = (run.config, &run.config.distill, &run.teacher.info);
        let n = run.train.len();
        let labelled = match (dc.labelled_weight > 0.0, &info.labelled) {
            (false, _) => Vec::new(),
            (true, Some(l)) if l.of_images == n => {
                balanced_subset(&run.train.labels, info.classes.len(), l.images, l.seed)
            }
            (true, Some(l)) => {
                return Err(Error::config(
                    "distill.labelled-weight",
                    format!(
                        "the teacher's labelled subset is of {} training images, this data has {n}",
                        l.of_images
                    ),
                ));
            }
            (true, None) => {
                return Err(Error::config(
                    "distill.labelled-weight",
                    "the teacher records no labelled subset (a distilled student?)",
                ));
            }
        };
        let student = student_encoder(&info.encoder, dc)?;
        student.validate()?;
        let epochs = Epochs::new(
            (0..n).collect(),
            dc.batch_size,
            dc.epochs,
            (cfg.seed, Stream::DistillOrder),
            "distill",
        )?;
        Ok(Setup {
            run,
            student,
            size: info.image_size,
            aug: info.normalising(&cfg.augment),
            view: training_view(),
            labelled,
            epochs,
        })
    }

    /// The loss of `student` on the images `chunk` at `step` of `epoch`: the cross-entropy
    /// with the teacher's tempered predictions on the same views, plus `labelled-weight` times
    /// the cross-entropy with the labels on a batch drawn from the labelled subset.
    fn loss(
        &self,
        student: &Finetuned,
        chunk: &[usize],
        epoch: u64,
        step: u64,
    ) -> Result<Tensor<1>> {
        let (run, (seed, dc)) = (self.run, (self.run.config.seed, &self.run.config.distill));
        let (b, size, ad) = (chunk.len(), self.size, student.head.weight.device());
        let pix = view_pixels(
            run.train,
            chunk,
            size,
            &self.view,
            &self.aug,
            (seed, Stream::DistillViews, epoch),
        )?;
        let teacher_logits = run.teacher.network.forward(Tensor::<4>::from_data(
            TensorData::new(pix.clone(), [b, 3, size, size]),
            &run.device,
        )); // [B, C]
        let targets =
            Tensor::<2>::from_data(soft_labels(teacher_logits, dc.temperature).into_data(), &ad); // [B, C], no gradient
        let x = Tensor::<4>::from_data(TensorData::new(pix, [b, 3, size, size]), &ad); // [B, 3, S, S]
        let loss = distillation_loss(student.forward(x), targets, dc.temperature); // [1]
        if self.labelled.is_empty() {
            return Ok(loss);
        }
        let mut pick = self.labelled.clone();
        pick.shuffle(&mut rng(seed, Stream::DistillPick, &[step]));
        pick.truncate(b);
        let m = pick.len();
        let pixels = view_pixels(
            run.train,
            &pick,
            size,
            &self.view,
            &self.aug,
            (seed, Stream::DistillPickViews, step),
        )?;
        let x = Tensor::<4>::from_data(TensorData::new(pixels, [m, 3, size, size]), &ad); // [m, 3, S, S]
        let y = Tensor::<2, Int>::from_data(
            TensorData::new(
                pick.iter()
                    .map(|&i| run.train.labels[i] as i64)
                    .collect::<Vec<_>>(),
                [m, 1],
            ),
            &ad,
        ); // [m, 1]
        let ce = log_softmax(student.forward(x), 1).gather(1, y).mean().neg(); // [1]
        Ok(loss + ce.mul_scalar(dc.labelled_weight))
    }
}

/// Around each step: a stop at a step limit or an interrupt (with a checkpoint), a line in
/// `metrics.jsonl`, a checkpoint every `distill.checkpoint-every` steps and at the end.
struct Steps<'a> {
    run: &'a Distillation<'a>,
    lock: &'a RunDir,
    opts: &'a DistillOptions,
    total: u64,
}

impl Hooks<Finetuned> for Steps<'_> {
    fn stop_before(&mut self, step: u64) -> bool {
        self.opts.stop_before(step)
    }

    fn after_step(
        &mut self,
        student: &Finetuned,
        optim: &Optimizer,
        done: &StepDone,
    ) -> Result<()> {
        self.lock.append(
            METRICS,
            &StepLine {
                step: done.step,
                loss: f64::from(done.loss),
                lr: done.lr,
            },
        )?;
        if done
            .step
            .is_multiple_of(self.run.config.distill.checkpoint_every)
            || done.step == self.total
        {
            save_checkpoint(
                self.lock.path(),
                student,
                optim,
                done.step,
                self.run.config,
                self.run.teacher,
            )?;
        }
        Ok(())
    }

    fn stopped(&mut self, student: &Finetuned, optim: &Optimizer, step: u64) -> Result<()> {
        save_checkpoint(
            self.lock.path(),
            student,
            optim,
            step,
            self.run.config,
            self.run.teacher,
        )
    }
}

/// The student's file and `distill.json`: the teacher's and the student's test accuracy.
fn finish(setup: &Setup<'_>, student: Finetuned, lock: &RunDir) -> Result<DistillResult> {
    let (run, info) = (setup.run, &setup.run.teacher.info);
    let tested = |net: &Finetuned| net.accuracy(run.test, setup.size, &setup.aug, &run.device);
    let student_info = ClassifierInfo {
        encoder: setup.student.clone().into(),
        stem_width: None,
        labelled: None,
        ..info.clone()
    };
    classifier::save(&student, &student_info, &lock.file(STUDENT))?;
    let result = DistillResult {
        steps: setup.epochs.total(),
        unlabelled_images: run.train.len(),
        labelled_images: setup.labelled.len(),
        teacher_encoder: info.encoder.resnet("distillation")?.clone(),
        student_encoder: setup.student.clone(),
        teacher_parameters: count_trainable(&run.teacher.network),
        student_parameters: count_trainable(&student),
        teacher: tested(&run.teacher.network)?,
        student: tested(&student.to_device(&run.device))?,
        epoch_losses: epoch_losses(
            &lock.file(METRICS),
            setup.epochs.steps_per_epoch(),
            run.config.distill.epochs,
        )?,
        teacher_sha256: run.teacher.sha256.clone(),
        settings: run.config.distill.clone(),
    };
    lock.write(DISTILL, &result)?;
    Ok(result)
}

/// The mean loss of each epoch from `metrics.jsonl` (steps counted from 1, as pre-training's:
/// the step a line ends); a step logged twice counts once, with its last value.
fn epoch_losses(path: &Path, spe: u64, epochs: usize) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut by_step = BTreeMap::new();
    for line in text.lines() {
        let l: StepLine = serde_json::from_str(line)
            .map_err(|e| Error::data(path, format!("unreadable line ({e})")))?;
        by_step.insert(l.step, l.loss);
    }
    let mut sums = vec![(0.0, 0usize); epochs];
    for (s, v) in by_step {
        if let Some(e) = sums.get_mut((s.saturating_sub(1) / spe) as usize) {
            e.0 += v;
            e.1 += 1;
        }
    }
    Ok(sums.into_iter().map(|(s, c)| s / c.max(1) as f64).collect())
}

#[cfg(test)]
mod tests;
