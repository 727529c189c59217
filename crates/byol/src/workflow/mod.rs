//! What the `byol` commands do, as functions any program can call: a config from a preset or a
//! file with a front end's typed settings on top, the name of a new run directory, the config a
//! run resumes with, an evaluation set up from a checkpoint, and the embedding of both splits.
//! The binary only parses flags into these types and prints.

use crate::backend::BackendKind;
use crate::config::ExperimentConfig;
use crate::data::{Source, Splits};
use crate::eval::Features;
use crate::eval::embed::{Row, write_embeddings};
use crate::model::{Encoder, Mlp};
use crate::train::{checkpoint, indexed_features_of, random_init_online};
use crate::{Error, Result};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

mod distill;
mod transfer;
pub use distill::{DistillSetup, classifier_info};
pub use transfer::{
    DEPTH_CHECKPOINT, DepthRun, SEGMENT_CHECKPOINT, SegmentRun, TransferOptions, TransferOutcome,
    TransferRun, depth, segment, write_mosaics, write_scenes,
};

/// A front end's settings on top of a config: `set` (`key.path=value` for any field, applied
/// first, in order), then each typed setting given, which wins over a `set` of the same field.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub set: Vec<String>,
    /// The data (`--data`): where it is; how it is read stays the config's where the source
    /// is of the same kind ([`Source::keeping_settings_of`]).
    pub data: Option<Source>,
    pub backend: Option<BackendKind>,
    pub epochs: Option<u64>,
    pub batch_size: Option<usize>,
    /// `train.accumulate`: micro-batches per update.
    pub accumulate: Option<usize>,
    pub seed: Option<u64>,
    /// `train.devices`: one replica per device (data parallel).
    pub devices: Option<Vec<crate::backend::DeviceId>>,
}

impl Settings {
    /// The preset or file `base` with these settings, validated.
    pub fn resolve(&self, base: &str) -> Result<ExperimentConfig> {
        let mut cfg = ExperimentConfig::load(base, &self.set)?;
        self.apply_typed(&mut cfg)?;
        Ok(cfg)
    }

    /// `config` (a resolved config, e.g. a checkpoint's) with these settings, validated.
    pub fn apply_to(&self, config: &ExperimentConfig, origin: &Path) -> Result<ExperimentConfig> {
        let mut cfg = if self.set.is_empty() {
            config.clone()
        } else {
            ExperimentConfig::from_toml_with_overrides(&config.to_toml(), origin, &self.set)?
        };
        self.apply_typed(&mut cfg)?;
        Ok(cfg)
    }

    fn apply_typed(&self, cfg: &mut ExperimentConfig) -> Result<()> {
        if let Some(d) = &self.data {
            cfg.data.source = d.clone().keeping_settings_of(&cfg.data.source);
        }
        if let Some(b) = self.backend {
            cfg.backend = b;
        }
        if let Some(e) = self.epochs {
            cfg.train.epochs = e;
        }
        if let Some(b) = self.batch_size {
            cfg.train.batch_size = b;
        }
        if let Some(n) = self.accumulate {
            cfg.train.accumulate = n;
        }
        if let Some(s) = self.seed {
            cfg.seed = s;
        }
        if let Some(d) = &self.devices {
            cfg.train.devices = d.clone();
        }
        cfg.validate()
    }

    /// The settings as `field = value` lines, for a report (not for parsing).
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self.set.clone();
        if let Some(d) = &self.data {
            out.push(format!("data = {}", d.shorthand()));
        }
        if let Some(b) = self.backend {
            out.push(format!("backend = {}", b.name()));
        }
        if let Some(e) = self.epochs {
            out.push(format!("train.epochs = {e}"));
        }
        if let Some(b) = self.batch_size {
            out.push(format!("train.batch-size = {b}"));
        }
        if let Some(n) = self.accumulate {
            out.push(format!("train.accumulate = {n}"));
        }
        if let Some(s) = self.seed {
            out.push(format!("seed = {s}"));
        }
        if let Some(d) = &self.devices {
            let list: Vec<String> = d.iter().map(ToString::to_string).collect();
            out.push(format!("train.devices = {list:?}"));
        }
        out
    }
}

/// `runs/<stem of the config's name>-<seconds since the epoch>`, a new run's directory.
pub fn new_run_dir(config: &str, now: std::time::SystemTime) -> PathBuf {
    let name = Path::new(config)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("run");
    let stamp = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from(format!("runs/{name}-{stamp}"))
}

/// The config to continue the run in `dir` with: the one recorded in its newest checkpoint's
/// header, with `settings` on top (the training loop then refuses a change that would alter the
/// trajectory; see [`ExperimentConfig::resume_differences`]).
pub fn resume_config(dir: &Path, settings: &Settings) -> Result<ExperimentConfig> {
    let (recorded, file) = checkpoint::read_latest_config(dir)?;
    settings.apply_to(&recorded, &file)
}

/// What an evaluation of a checkpoint needs.
pub struct Evaluation {
    /// The checkpoint's config with the evaluation's settings.
    pub config: ExperimentConfig,
    pub device: Device,
    /// The checkpoint's online encoder, or the random-init one of its architecture and seed.
    pub encoder: Encoder,
    /// The online projector of the same network (for `eval.finetune.from = "projector:1"`).
    pub projector: Mlp,
    /// The config's data, read on first use ([`Evaluation::splits`]): a task that brings its
    /// own data (depth estimation) never reads it.
    splits: std::sync::OnceLock<Splits>,
    /// What the encoder is, for a report ("BYOL-trained encoder", "random-init encoder").
    pub label: String,
    /// The checkpoint's step.
    pub step: u64,
    /// The run directory the checkpoint is in (a folder with the run's `config.toml`), where
    /// [`Evaluation::record`] writes the result.
    pub run_dir: Option<PathBuf>,
}

/// What an evaluation found, by protocol: a record's `protocol` (`knn`, `linear`, `finetune`)
/// and `result`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "protocol", content = "result", rename_all = "lowercase")]
pub enum EvaluationResult {
    Knn(crate::eval::KnnResult),
    Linear(crate::eval::LinearResult),
    Finetune(crate::eval::FinetuneResult),
}

/// One line of a run's `evaluations.jsonl`: an evaluation of one of its checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvaluationRecord {
    #[serde(flatten)]
    pub evaluation: EvaluationResult,
    /// The checkpoint's step.
    pub step: u64,
    /// "BYOL-trained encoder", "random-init encoder", …
    pub encoder: String,
    /// The data evaluated on (`data.path`, or the source's name).
    pub data: String,
    pub test_images: usize,
    /// The evaluation's settings (the config's `eval` section as resolved).
    pub settings: crate::eval::EvalConfig,
    /// Seconds since the Unix epoch when the result was written.
    pub unix_time: u64,
}

impl Evaluation {
    /// An encoder that `byol export` (or torchvision, by name) wrote to `path`, with the config
    /// `base` and `settings`, then `edit`, for the rest: the architecture is the one the file
    /// records, else the config's. Its projector is the config's random one.
    pub fn from_exported(
        path: &Path,
        base: &str,
        settings: &Settings,
        edit: impl FnOnce(&mut ExperimentConfig),
    ) -> Result<Self> {
        let mut config = settings.resolve(base)?;
        if let Some(recorded) = crate::model::export::recorded_encoder_config(path)? {
            config.model.encoder = recorded;
        }
        edit(&mut config);
        config.validate()?;
        let device = config.backend.device()?;
        let encoder = crate::model::export::import_encoder(&config.model.encoder, path, &device)?;
        encoder.check_image_size(config.data.image_size)?;
        let projector = random_init_online(&config, &device).projector;
        Ok(Evaluation {
            config,
            device,
            encoder,
            projector,
            splits: Default::default(),
            label: "imported encoder".into(),
            step: 0,
            run_dir: None,
        })
    }

    /// Load the checkpoint at `path` (a file or a run directory), apply `settings` to its config
    /// (`--data` of another ImageFolder makes it a transfer evaluation), then `edit` (typed
    /// evaluation settings), validate, and load the encoder and the data.
    pub fn from_checkpoint(
        path: &Path,
        settings: &Settings,
        edit: impl FnOnce(&mut ExperimentConfig),
        random_init: bool,
    ) -> Result<Self> {
        if let Some(field) = settings
            .set
            .iter()
            .map(|s| s.split('=').next().unwrap_or("").trim())
            .find(|f| f.starts_with("model."))
        {
            return Err(Error::config(
                field,
                "the architecture of an evaluation comes from the checkpoint; its `model.*` settings cannot be changed here (set `eval.*`, `data.*` or `augment.*` instead)",
            ));
        }
        if path.is_file()
            && crate::io::TensorFile::format_of(path)?.as_deref()
                == Some(crate::eval::classifier::KIND.format)
        {
            return Self::from_classifier(path, settings, edit, random_init);
        }
        let loaded = checkpoint::read_path_or_dir(path)?;
        let mut config = settings.apply_to(&loaded.config, path)?;
        edit(&mut config);
        config.validate()?;
        let device = config.backend.device()?;
        let (online, label) = if random_init {
            (random_init_online(&config, &device), "random-init encoder")
        } else {
            let label = match config.objective.kind {
                crate::loss::ObjectiveKind::Byol => "BYOL-trained encoder",
                crate::loss::ObjectiveKind::NtXent => "SimCLR-trained encoder",
                crate::loss::ObjectiveKind::Moco => "MoCo-trained encoder",
            };
            (loaded.online(&device)?, label)
        };
        let (encoder, projector) = (online.encoder, online.projector);
        encoder.check_image_size(config.data.image_size)?;
        let dir = if path.is_dir() {
            Some(path)
        } else {
            path.parent()
        };
        let run_dir = dir
            .filter(|d| d.join(crate::train::run_dir::CONFIG).is_file())
            .map(Path::to_path_buf);
        Ok(Evaluation {
            config,
            device,
            encoder,
            projector,
            splits: Default::default(),
            label: label.into(),
            step: loaded.step,
            run_dir,
        })
    }

    /// The encoder of the classifier file at `path` (`eval finetune --save-model`, or a
    /// distillation's `student.safetensors`): the config of the run beside it (the
    /// `config.toml` of its folder; `small-cpu`'s without one) with `settings`, the classifier's
    /// encoder, image size and normalisation, then `edit`. Its projector is the config's random
    /// one (a classifier keeps none).
    fn from_classifier(
        path: &Path,
        settings: &Settings,
        edit: impl FnOnce(&mut ExperimentConfig),
        random_init: bool,
    ) -> Result<Self> {
        let beside = path
            .parent()
            .map(|d| d.join(crate::train::run_dir::CONFIG))
            .filter(|c| c.is_file());
        let base = match &beside {
            Some(c) => ExperimentConfig::from_recorded_toml(
                &std::fs::read_to_string(c).map_err(|e| Error::io(c, e))?,
                c,
            )?,
            None => ExperimentConfig::load("small-cpu", &[])?,
        };
        let mut config = settings.apply_to(&base, path)?;
        // `edit` sets evaluation settings only: the backend, and so the device, are known here.
        let device = config.backend.device()?;
        let (encoder, info) = crate::eval::classifier::read_encoder(path, &device)?;
        config.model.encoder = info.encoder.clone();
        config.data.image_size = info.image_size;
        config.augment = info.normalising(&config.augment);
        edit(&mut config);
        config.validate()?;
        let (encoder, label) = if random_init {
            (
                random_init_online(&config, &device).encoder,
                "random-init encoder",
            )
        } else {
            (
                encoder,
                if info.labelled.is_none() {
                    "distilled student's encoder"
                } else {
                    "fine-tuned classifier's encoder"
                },
            )
        };
        let projector = random_init_online(&config, &device).projector;
        Ok(Evaluation {
            config,
            device,
            encoder,
            projector,
            splits: Default::default(),
            label: label.into(),
            step: 0,
            run_dir: None,
        })
    }

    /// The config's data (training and test splits), read the first time it is asked for.
    pub fn splits(&self) -> Result<&Splits> {
        if let Some(s) = self.splits.get() {
            return Ok(s);
        }
        let loaded = crate::data::load(&self.config.data, self.config.seed)?;
        Ok(self.splits.get_or_init(|| loaded))
    }

    /// Append `evaluation` to the run directory's `evaluations.jsonl`, taking the
    /// run's lock for the write (a run still training there holds it: then an error says so and
    /// nothing is written). `None` when the checkpoint is not in a run directory.
    pub fn record(&self, evaluation: EvaluationResult) -> Result<Option<PathBuf>> {
        let Some(dir) = &self.run_dir else {
            return Ok(None);
        };
        let record = EvaluationRecord {
            evaluation,
            step: self.step,
            encoder: self.label.clone(),
            data: self.config.data.source.shorthand(),
            test_images: self.splits()?.test.len(),
            settings: self.config.eval.clone(),
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let run = crate::train::RunDir::lock(dir)?;
        run.append(crate::train::run_dir::EVALUATIONS, &record)?;
        Ok(Some(run.file(crate::train::run_dir::EVALUATIONS)))
    }

    /// The representation of every image of both splits (train first), written to `out` as a
    /// safetensors file (see [`crate::eval::embed`]); returned as (train, test).
    pub fn embed(&self, out: &Path) -> Result<(Features, Features)> {
        let splits = self.splits()?;
        let (train, test) = (&splits.train, &splits.test);
        let ((tr, kept_tr), (te, kept_te)) =
            indexed_features_of(&self.encoder, &self.config, train, test, &self.device)?;
        let mut rows: Vec<Row> = kept_tr
            .iter()
            .map(|&i| Row {
                name: train.names[i].clone(),
                split: "train",
            })
            .collect();
        rows.extend(kept_te.iter().map(|&i| Row {
            name: test.names[i].clone(),
            split: "test",
        }));
        let all = Features {
            values: [tr.values.clone(), te.values.clone()].concat(),
            labels: [tr.labels.clone(), te.labels.clone()].concat(),
            dim: tr.dim,
        };
        write_embeddings(out, &rows, &train.classes, &all)?;
        Ok((tr, te))
    }

    /// A 2-D t-SNE map ([`crate::eval::embed::tsne_2d`]) of a class-balanced, seeded subset of at
    /// most `points` rows of `features`: the coordinates and the label of each point.
    pub fn tsne_map(
        &self,
        features: &Features,
        points: usize,
        perplexity: f32,
    ) -> Result<(Vec<[f32; 2]>, Vec<usize>)> {
        let classes = self.splits()?.train.classes.len();
        let keep = crate::data::balanced_subset(
            &features.labels,
            classes,
            points.min(features.len()),
            self.config.seed,
        );
        let d = features.dim;
        let values: Vec<f32> = keep
            .iter()
            .flat_map(|&i| features.values[i * d..(i + 1) * d].iter().copied())
            .collect();
        let labels = keep.iter().map(|&i| features.labels[i]).collect();
        Ok((
            crate::eval::embed::tsne_2d(&values, d, perplexity, self.config.seed)?,
            labels,
        ))
    }

    /// The class names.
    pub fn classes(&self) -> Result<&[String]> {
        Ok(&self.splits()?.train.classes)
    }
}

/// A labelled fraction as a front end writes it: `10%`, `1 %` or a number in (0, 1].
pub fn parse_fraction(s: &str) -> Result<f64> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    };
    match v {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(Error::config(
            "eval.finetune.label-fraction",
            format!(
                "{s:?}: expected a percentage in (0 %, 100 %] such as 10%, or a number in (0, 1]"
            ),
        )),
    }
}

#[cfg(test)]
mod tests;
