//! A transfer run's checkpoints, its stop and its resume: the session the dense protocols' loop
//! runs in. A checkpoint (`checkpoint-<step>.safetensors` in the run directory, the two newest
//! kept) holds the network being fine-tuned (encoder and head), the optimizer's state, every
//! step's loss so far, and in its metadata the step, the config and the encoder it started from;
//! resuming rebuilds the run from it alone.

use crate::config::ExperimentConfig;
use crate::io::{FileKind, TensorFile};
use crate::model::params::{collect, load, named_from, values};
use crate::optim::Optimizer;
use crate::supervised::{Hooks, Resumed, Session, StepDone};
use crate::train::{RunDir, checkpoint};
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::Device;
use std::path::Path;

/// How to run a transfer task: resume, a step limit, an interrupt.
pub type TransferOptions = crate::supervised::Control;

/// How a transfer run ended.
pub type TransferOutcome<R> = crate::supervised::Ended<R>;

/// What a segmentation checkpoint's metadata says it is.
pub const SEGMENT_CHECKPOINT: FileKind<'static> = FileKind {
    format: "byol-segment-checkpoint",
    version: "1",
    kind: "byol segmentation checkpoint",
};
/// What a depth checkpoint's metadata says it is.
pub const DEPTH_CHECKPOINT: FileKind<'static> = FileKind {
    format: "byol-depth-checkpoint",
    version: "1",
    kind: "byol depth checkpoint",
};
/// Checkpoints kept in the run directory.
const KEEP: usize = 2;

/// What a transfer checkpoint records besides its tensors.
pub struct Recorded {
    pub config: ExperimentConfig,
    /// The encoder the run started from ("BYOL-trained encoder", …) and its checkpoint's step.
    pub encoder: String,
    pub encoder_step: u64,
}

/// What the newest checkpoint of `kind` in `dir` records.
pub fn recorded(dir: &Path, kind: FileKind<'static>) -> Result<Recorded> {
    let (file, path) = checkpoint::newest(dir, |p| TensorFile::read(p, kind))?;
    let meta = |k: &str| {
        file.meta
            .get(k)
            .ok_or_else(|| Error::checkpoint(&path, format!("no {k} in its metadata")))
    };
    let number = |k: &str| -> Result<u64> {
        meta(k)?
            .parse()
            .map_err(|_| Error::checkpoint(&path, format!("its {k} is not a number")))
    };
    Ok(Recorded {
        config: ExperimentConfig::from_recorded_toml(meta("config")?, &path)?,
        encoder: meta("encoder")?.clone(),
        encoder_step: number("encoder-step")?,
    })
}

/// The session of one transfer run in its directory.
pub(super) struct Checkpoints<'a> {
    pub run: &'a RunDir,
    pub kind: FileKind<'static>,
    pub opts: &'a TransferOptions,
    pub every: u64,
    /// The config and the starting encoder, for each checkpoint's metadata.
    pub config: &'a ExperimentConfig,
    pub encoder: (&'a str, u64),
    /// The autodiff device the network trains on.
    pub device: Device,
    /// Every step's loss so far.
    pub losses: Vec<f32>,
}

impl Checkpoints<'_> {
    fn save<M: Module>(&self, model: &M, optimizer: &Optimizer, step: u64) -> Result<()> {
        let mut file = TensorFile::default();
        for (path, named) in collect(&model.valid()) {
            file.tensors
                .insert(format!("model/{path}"), (named.shape, values(&named.flat)?));
        }
        optimizer.save_state(&mut file.tensors)?;
        file.tensors.insert(
            "losses".into(),
            (vec![self.losses.len()], self.losses.clone()),
        );
        file.meta.insert("step".into(), step.to_string());
        file.meta.insert("config".into(), self.config.to_toml());
        file.meta
            .insert("encoder".into(), self.encoder.0.to_string());
        file.meta
            .insert("encoder-step".into(), self.encoder.1.to_string());
        file.write(&checkpoint::path_for(self.run.path(), step), self.kind)?;
        checkpoint::prune(self.run.path(), KEEP);
        Ok(())
    }
}

impl<M: Module> Hooks<M> for Checkpoints<'_> {
    fn stop_before(&mut self, step: u64) -> bool {
        self.opts.stop_before(step)
    }

    fn after_step(&mut self, model: &M, optimizer: &Optimizer, done: &StepDone) -> Result<()> {
        self.losses.push(done.loss);
        if done.step.is_multiple_of(self.every) {
            self.save(model, optimizer, done.step)?;
        }
        Ok(())
    }

    fn stopped(&mut self, model: &M, optimizer: &Optimizer, step: u64) -> Result<()> {
        self.save(model, optimizer, step)
    }
}

impl<M: Module> Session<M> for Checkpoints<'_> {
    fn start(&mut self, fresh: M, mut optimizer: Optimizer) -> Result<Resumed<M>> {
        if !self.opts.resume {
            return Ok(Resumed {
                model: fresh,
                optimizer,
                step: 0,
                losses: Vec::new(),
            });
        }
        let (file, path) = checkpoint::newest(self.run.path(), |p| TensorFile::read(p, self.kind))?;
        let step: u64 = file
            .meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::checkpoint(&path, "no step in its metadata"))?;
        let (model, missing) = load(fresh, &named_from(&file.tensors, "model/", &self.device));
        if !missing.is_empty() {
            return Err(Error::checkpoint(
                &path,
                format!("network tensors missing: {missing:?}"),
            ));
        }
        optimizer.load_state(&file.tensors, &self.device)?;
        let losses = file
            .tensors
            .get("losses")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if losses.len() as u64 != step {
            return Err(Error::checkpoint(
                &path,
                format!("it records {} losses for {step} steps", losses.len()),
            ));
        }
        self.losses = losses.clone();
        Ok(Resumed {
            model,
            optimizer,
            step,
            losses,
        })
    }
}
