//! The distillation loop in a run directory: `checkpoint-<step>.safetensors` (the student, the
//! optimiser state, the step, the config and the teacher's checksum) every
//! `distill.checkpoint-every` steps and at the end, `metrics.jsonl` (a line per step), then
//! `student.safetensors` (a classifier file, as the teacher's) and `distill.json` (the teacher's
//! and the student's test accuracy). The order of the images and the views are pure functions of
//! (seed, epoch, image), so a resumed run continues the sequence an uninterrupted one takes.

use super::{DistillConfig, distillation_loss, soft_labels};
use crate::augment::{AugmentConfig, ViewConfig};
use crate::config::ExperimentConfig;
use crate::data::{ImageSet, balanced_subset};
use crate::eval::classifier::{self, ClassifierInfo, Saved};
use crate::eval::linear::Accuracy;
use crate::eval::{Finetuned, training_view, view_pixels};
use crate::io::{FileKind, TensorFile};
use crate::model::ResNetConfig;
use crate::model::params::{
    Named, collect, count_trainable, load, named_from, reinit, require_grad, values,
};
use crate::optim::{OptimConfig, Optimizer};
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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a distillation checkpoint's metadata says it is.
pub const CHECKPOINT_KIND: FileKind<'static> = FileKind {
    format: "byol-distill-checkpoint",
    version: "1",
    kind: "byol distillation checkpoint",
};
/// Checkpoints kept in the run directory.
const KEEP: usize = 2;

/// What a distillation needs: the teacher read back, the config (seed, data, views' image size
/// and normalisation, `[distill]`), the two splits and the device.
pub struct Distillation<'a> {
    pub teacher: &'a Saved,
    pub config: &'a ExperimentConfig,
    pub train: &'a ImageSet,
    pub test: &'a ImageSet,
    pub device: Device,
}

/// How to run it.
#[derive(Default)]
pub struct DistillOptions {
    /// Continue from the run directory's newest checkpoint (same teacher, same settings).
    pub resume: bool,
    /// Stop (with a checkpoint) once this many steps are done in total.
    pub max_steps: Option<u64>,
    /// Set (by a signal handler) to stop after the step in progress, with a checkpoint.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// How a run ended.
pub enum DistillOutcome {
    /// Stopped early (`max_steps`, an interrupt) with a checkpoint at this step.
    Stopped {
        step: u64,
    },
    Finished(Box<DistillResult>),
}

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
fn student_encoder(teacher: &ResNetConfig, cfg: &DistillConfig) -> ResNetConfig {
    let s = &cfg.student;
    ResNetConfig {
        arch: s.arch.unwrap_or(teacher.arch),
        base_width: s.base_width.unwrap_or(teacher.base_width),
        width_multiplier: s.width_multiplier.unwrap_or(teacher.width_multiplier),
        ..teacher.clone()
    }
}

/// The fields of a config that change a distillation's trajectory (everything of `[distill]`
/// but how often it saves, the seed, the data but where it is, the views' settings).
fn trajectory_differences(now: &ExperimentConfig, recorded: &ExperimentConfig) -> Vec<String> {
    const FREE: &[&str] = &[
        "data.path",
        "data.test-path",
        "data.cache",
        "data.cache-max-mb",
        "data.workers",
        "data.prefetch-batches",
        "distill.checkpoint-every",
    ];
    now.differences(recorded, FREE)
        .into_iter()
        .filter(|d| {
            ["seed", "data.", "augment.", "distill."]
                .iter()
                .any(|p| d.field == *p || d.field.starts_with(p))
        })
        .map(|d| d.to_string())
        .collect()
}

fn optimizer(cfg: &DistillConfig) -> Optimizer {
    OptimConfig::sgd(cfg.learning_rate, cfg.weight_decay, true).init()
}

fn save_checkpoint(
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
fn resume(
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
        setup.student.init(&run.device),
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
        let student = student_encoder(&info.encoder, dc);
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
        self.opts.max_steps.is_some_and(|m| step >= m)
            || self
                .opts
                .interrupt
                .as_ref()
                .is_some_and(|i| i.load(Ordering::SeqCst))
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
        encoder: setup.student.clone(),
        stem_width: None,
        labelled: None,
        ..info.clone()
    };
    classifier::save(&student, &student_info, &lock.file(STUDENT))?;
    let result = DistillResult {
        steps: setup.epochs.total(),
        unlabelled_images: run.train.len(),
        labelled_images: setup.labelled.len(),
        teacher_encoder: info.encoder.clone(),
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
mod tests {
    use super::*;
    use crate::eval::classifier::Labelled;

    fn tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
        TensorFile::read(path, classifier::KIND).unwrap().tensors
    }

    /// A width-4 ResNet on 80 synthetic 16-pixel images of 10 classes (40 to test), with
    /// `dc` as its `[distill]`.
    fn small(dc: DistillConfig) -> (ExperimentConfig, crate::data::Splits) {
        let set = [
            "model.encoder.base-width=4",
            "data.image-size=16",
            "data.synthetic.train-per-class=8",
            "data.synthetic.test-per-class=4",
        ];
        let mut cfg = ExperimentConfig::load("small-cpu", &set.map(String::from)).unwrap();
        cfg.distill = dc;
        let splits = crate::data::load(&cfg.data, cfg.seed).unwrap();
        (cfg, splits)
    }

    /// The student a distillation with `cfg` from a teacher described by `info` starts from.
    fn fresh_student(cfg: &ExperimentConfig, info: &ClassifierInfo, device: &Device) -> Finetuned {
        let encoder = reinit(
            info.encoder.init(device),
            key(cfg.seed, Stream::DistillStudent, &[]),
        );
        Finetuned::new(
            encoder,
            None,
            info.encoder.output_dim(),
            info.classes.len(),
            cfg.seed,
            device,
        )
    }

    /// A teacher: `cfg`'s encoder fine-tuned on `fraction` of the training labels for `epochs`.
    fn fine_tuned(
        cfg: &ExperimentConfig,
        splits: &crate::data::Splits,
        fraction: f64,
        epochs: usize,
        device: &Device,
    ) -> Finetuned {
        let enc = &cfg.model.encoder;
        let tune = crate::eval::FinetuneConfig {
            label_fraction: fraction,
            epochs,
            batch_size: 8,
            ..Default::default()
        };
        let init = |d: &Device| Ok((reinit(enc.init(d), 11), None));
        crate::eval::finetune(
            &init,
            enc.output_dim(),
            &splits.train,
            &splits.test,
            &cfg.augment,
            16,
            &tune,
            5,
            device,
        )
        .unwrap()
        .1
    }

    /// A distillation stopped at step 7 (between checkpoints) and resumed ends with the student,
    /// bit for bit, of one run through its 10 steps; the teacher (BatchNorm statistics included)
    /// is unchanged by either; resuming against another teacher or with another temperature is
    /// refused by name.
    #[test]
    fn an_interrupted_distillation_resumes_to_the_uninterrupted_student_and_leaves_the_teacher_alone()
     {
        let device = Device::flex();
        let (cfg, splits) = small(DistillConfig {
            epochs: 2,
            batch_size: 16,
            checkpoint_every: 3,
            labelled_weight: 0.5,
            ..Default::default()
        });
        let (n, classes) = (splits.train.len(), splits.train.classes.clone());
        assert_eq!((n, classes.len()), (80, 10));
        let enc = cfg.model.encoder.clone();
        // A teacher fine-tuned for an epoch: BatchNorm statistics no fresh network has.
        let teacher = fine_tuned(&cfg, &splits, 0.25, 1, &device);
        let info = ClassifierInfo {
            encoder: enc,
            stem_width: None,
            classes,
            image_size: 16,
            mean: cfg.augment.mean,
            std: cfg.augment.std,
            labelled: Some(Labelled {
                fraction: 0.25,
                seed: 5,
                of_images: n,
                images: 20,
            }),
        };
        let root = std::env::temp_dir().join(format!("byol-distill-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        classifier::save(&teacher, &info, &root.join("teacher.safetensors")).unwrap();
        let saved = classifier::read(&root.join("teacher.safetensors"), &device).unwrap();
        let before = tensors(&root.join("teacher.safetensors"));
        let run = Distillation {
            teacher: &saved,
            config: &cfg,
            train: &splits.train,
            test: &splits.test,
            device: device.clone(),
        };
        let whole = distill(&run, &root.join("a"), &DistillOptions::default(), &mut ()).unwrap();
        let DistillOutcome::Finished(a) = whole else {
            panic!("stopped")
        };
        assert_eq!(
            (a.steps, a.labelled_images, a.epoch_losses.len()),
            (10, 20, 2)
        );
        let b = root.join("b");
        let stopped = distill(
            &run,
            &b,
            &DistillOptions {
                max_steps: Some(7),
                ..Default::default()
            },
            &mut (),
        )
        .unwrap();
        assert!(matches!(stopped, DistillOutcome::Stopped { step: 7 }));
        // A fresh run into a directory that holds checkpoints is refused.
        let e = distill(&run, &b, &DistillOptions::default(), &mut ())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("resume"), "{e}");
        let hotter = ExperimentConfig {
            distill: DistillConfig {
                temperature: 2.0,
                ..cfg.distill.clone()
            },
            ..cfg.clone()
        };
        let e = distill(
            &Distillation {
                config: &hotter,
                device: device.clone(),
                ..run
            },
            &b,
            &DistillOptions {
                resume: true,
                ..Default::default()
            },
            &mut (),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("distill.temperature"), "{e}");
        let other = classifier::Saved {
            sha256: "0".repeat(64),
            network: saved.network.clone(),
            info: saved.info.clone(),
            path: saved.path.clone(),
        };
        let e = distill(
            &Distillation {
                teacher: &other,
                device: device.clone(),
                ..run
            },
            &b,
            &DistillOptions {
                resume: true,
                ..Default::default()
            },
            &mut (),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("another teacher"), "{e}");
        // As if killed after logging step 8 without its checkpoint: that line is logged again.
        let mut log = std::fs::read_to_string(b.join(METRICS)).unwrap();
        log.push_str("{\"step\":8,\"loss\":9.0,\"lr\":0.0}\n");
        std::fs::write(b.join(METRICS), log).unwrap();
        let DistillOutcome::Finished(r) = distill(
            &run,
            &b,
            &DistillOptions {
                resume: true,
                ..Default::default()
            },
            &mut (),
        )
        .unwrap() else {
            panic!("stopped")
        };
        // The log of the interrupted run is the uninterrupted one's: steps 1 to 10, once each.
        let log = std::fs::read_to_string(b.join(METRICS)).unwrap();
        let steps: Vec<u64> = log
            .lines()
            .map(|l| serde_json::from_str::<StepLine>(l).unwrap().step)
            .collect();
        assert_eq!(steps, (1..=10).collect::<Vec<_>>());
        assert_eq!(
            log,
            std::fs::read_to_string(root.join("a").join(METRICS)).unwrap()
        );
        let (sa, sb) = (
            tensors(&root.join("a").join(STUDENT)),
            tensors(&b.join(STUDENT)),
        );
        assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
        for (k, v) in &sa {
            assert_eq!(v, &sb[k], "{k}");
        }
        assert_eq!(
            (r.student, r.epoch_losses.clone()),
            (a.student, a.epoch_losses.clone())
        );
        // The student moved from its initialisation, and the teacher did not move at all.
        let fresh = collect(&fresh_student(&cfg, &info, &device));
        let w = |m: &BTreeMap<String, Named>, k: &str| values(&m[k].flat).unwrap();
        assert_ne!(sa["head.weight"].1, w(&fresh, "head.weight"));
        assert_eq!(tensors(&root.join("teacher.safetensors")), before);
        let now = collect(&saved.network);
        for (k, (_, v)) in &before {
            assert_eq!(&w(&now, k), v, "{k}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// With the labelled weight at 0 the student learns from the teacher's soft labels alone:
    /// its top-1 on the unlabelled images agrees with the teacher's far more often than the
    /// teacher's most frequent class (the best a student that ignores the input could do) or the
    /// student at its initialisation. (The run test above would pass with uniform targets: its
    /// labelled term moves the student anyway.)
    #[test]
    fn at_labelled_weight_zero_the_student_learns_the_teachers_predictions() {
        let device = Device::flex();
        let (cfg, splits) = small(DistillConfig {
            epochs: 20,
            batch_size: 16,
            labelled_weight: 0.0,
            ..Default::default()
        });
        let enc = cfg.model.encoder.clone();
        let classes = splits.train.classes.clone();
        // A teacher fine-tuned on every label, so that its predictions spread over the classes.
        let teacher = fine_tuned(&cfg, &splits, 1.0, 5, &device);
        let info = ClassifierInfo {
            encoder: enc,
            stem_width: None,
            classes,
            image_size: 16,
            mean: cfg.augment.mean,
            std: cfg.augment.std,
            labelled: None,
        };
        let root = std::env::temp_dir().join(format!("byol-distill-zero-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        classifier::save(&teacher, &info, &root.join("teacher.safetensors")).unwrap();
        let saved = classifier::read(&root.join("teacher.safetensors"), &device).unwrap();
        let run = Distillation {
            teacher: &saved,
            config: &cfg,
            train: &splits.train,
            test: &splits.test,
            device: device.clone(),
        };
        assert!(matches!(
            distill(&run, &root.join("run"), &DistillOptions::default(), &mut ()).unwrap(),
            DistillOutcome::Finished(_)
        ));
        let top1 = |net: &Finetuned| -> Vec<usize> {
            let x = crate::eval::features::eval_batch(
                &splits.train,
                0..splits.train.len(),
                16,
                &cfg.augment,
                &device,
            )
            .unwrap();
            let logits: Vec<f32> = net.forward(x).into_data().try_into_vec().unwrap();
            logits
                .chunks(10)
                .map(|r| (0..10).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
                .collect()
        };
        let wanted = top1(&saved.network);
        let agreement = |net: &Finetuned| {
            top1(net)
                .iter()
                .zip(&wanted)
                .filter(|(a, b)| a == b)
                .count() as f64
                / wanted.len() as f64
        };
        let student = agreement(
            &classifier::read(&root.join("run").join(STUDENT), &device)
                .unwrap()
                .network,
        );
        let at_init = agreement(&fresh_student(&cfg, &info, &device).valid());
        let majority = (0..10)
            .map(|c| wanted.iter().filter(|&&w| w == c).count())
            .max()
            .unwrap() as f64
            / wanted.len() as f64;
        // Measured: 0.625 against 0.275 and 0.0125; with uniform targets (checked) 0.1.
        assert!(
            student >= majority + 0.2 && student >= at_init + 0.2,
            "student {student}, at init {at_init}, most frequent class {majority}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
