//! `byol transfer …`: the dense tasks of [`crate::transfer`] run on an evaluation's encoder, with
//! their data made or read and their results written to a run directory.

use super::Evaluation;
use crate::data::ImageSet;
use crate::rng::{Stream, key};
use crate::supervised::{Progress, Session};
use crate::train::RunDir;
use crate::train::run_dir::{DEPTH, PREDICTIONS, SEGMENT};
use crate::transfer::depth::{DepthConfig, DepthData, DepthResult};
use crate::transfer::mosaic::{Mosaic, mosaics};
use crate::transfer::scenes::{DepthSample, check_depths, read_folder, scenes, write_folder};
use crate::transfer::segment::{
    SegmentData, SegmentResult, prediction_picture, segment as fine_tune,
};
use crate::transfer::training::Run;
use crate::transfer::voc::{
    Sample, check_labels, read_classes, read_split, write_classes, write_split,
};
use crate::transfer::{IGNORE, Split, segment::SegmentConfig};
use crate::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

mod checkpoints;

use checkpoints::Checkpoints;
pub use checkpoints::{
    DEPTH_CHECKPOINT, SEGMENT_CHECKPOINT, TransferOptions, TransferOutcome, recorded,
};

/// What a transfer run's JSON file holds: the result and how it was made.
#[derive(Debug, Clone, Serialize)]
pub struct TransferRun<S, R> {
    /// "BYOL-trained encoder", "random-init encoder", "imported encoder".
    pub encoder: String,
    /// The checkpoint's step (0 for a random-init or imported encoder).
    pub step: u64,
    pub seed: u64,
    pub settings: S,
    pub result: R,
    pub wall_seconds: f64,
}

/// `segment.json`.
pub type SegmentRun = TransferRun<SegmentConfig, SegmentResult>;
/// `depth.json`.
pub type DepthRun = TransferRun<DepthConfig, DepthResult>;

/// What is told a transfer run's report as soon as it is scored.
type Announce<'a, S, R> = &'a mut dyn FnMut(&TransferRun<S, R>);

/// A transfer run's report (`e`'s encoder, `settings`, `result`, the seconds since `started`),
/// handed to `announce` before anything is written (a full disk then loses files, not the
/// score), then its files in `run`, each written atomically: the config, the report as JSON in
/// `file`, the prediction picture.
fn finish<S: Serialize + Clone, R: Serialize>(
    run: &RunDir,
    e: &Evaluation,
    file: &str,
    (settings, result): (&S, R),
    picture: &crate::image::Rgb8,
    (started, announce): (std::time::Instant, Announce<'_, S, R>),
) -> Result<TransferRun<S, R>> {
    let report = TransferRun {
        encoder: e.label.clone(),
        step: e.step,
        seed: e.config.seed,
        settings: settings.clone(),
        result,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    announce(&report);
    crate::io::write_atomic(
        &run.file(crate::train::run_dir::CONFIG),
        e.config.to_toml().as_bytes(),
    )?;
    run.write(file, &report)?;
    crate::io::write_rgb_png(&run.file(PREDICTIONS), picture)?;
    Ok(report)
}

/// The run directory `out` of a transfer task, locked. A new run refuses a folder that holds an
/// earlier run's results or checkpoints (resume those with `opts.resume`); a resumed one needs
/// a checkpoint there.
fn open_run(out: &Path, opts: &TransferOptions) -> Result<RunDir> {
    let run = RunDir::lock(out)?;
    // A folder of an earlier transfer run keeps its result: nothing is written over it.
    refuse_used(out, &[SEGMENT, DEPTH, PREDICTIONS])?;
    if !opts.resume && !crate::train::checkpoint::list(out).is_empty() {
        return Err(Error::checkpoint(
            out,
            "already holds a transfer run's checkpoints: resume it, or give another folder",
        ));
    }
    Ok(run)
}

/// The mosaics of `cfg` from `set`, as samples named `<split>-<index>`.
fn mosaic_samples(
    set: &ImageSet,
    count: usize,
    grid: usize,
    tile: usize,
    seed: u64,
    split: Split,
) -> Result<Vec<Sample>> {
    let stream = match split {
        Split::Train => Stream::MosaicTrain,
        Split::Val => Stream::MosaicVal,
    };
    Ok(mosaics(set, count, grid, tile, key(seed, stream, &[]))?
        .into_iter()
        .enumerate()
        .map(|(i, Mosaic { image, mask, .. })| Sample {
            id: format!("{split}-{i:06}"),
            image,
            mask,
        })
        .collect())
}

/// The training and validation samples of `data`, and the class names. Mosaics are made from the
/// evaluation's splits (training mosaics from its training split, validation ones from its test
/// split); a VOC-layout folder gives its `train` and `val` splits and declares its classes
/// ([`read_classes`]: VOC's 21 unless a `classes.txt` says otherwise). Data whose training labels
/// hold fewer than two classes, or whose validation labels score no pixel, is an error: a score
/// of such data would look valid and mean nothing.
fn samples(e: &Evaluation, data: &SegmentData) -> Result<(Vec<Sample>, Vec<Sample>, Vec<String>)> {
    let (train, val, classes, at) = match data {
        SegmentData::Mosaic {
            grid,
            tile,
            train,
            val,
        } => {
            // RGB bytes and a label per pixel.
            let bytes = (*train as u128 + *val as u128) * ((grid * tile) as u128).pow(2) * 4;
            crate::transfer::check_memory(
                "transfer.segment.data",
                &format!("{train} + {val} mosaics of {0} × {0} px", grid * tile),
                bytes,
            )?;
            let splits = e.splits()?;
            let (tr, te) = (&splits.train, &splits.test);
            let at = e
                .config
                .data
                .source
                .path()
                .unwrap_or_else(|| Path::new("built-in data"))
                .to_path_buf();
            let train = mosaic_samples(tr, *train, *grid, *tile, e.config.seed, Split::Train)?;
            (
                train,
                mosaic_samples(te, *val, *grid, *tile, e.config.seed, Split::Val)?,
                tr.classes.clone(),
                at,
            )
        }
        SegmentData::Voc { path } => {
            let classes = read_classes(path)?;
            let (train, val) = (
                read_split(path, Split::Train)?,
                read_split(path, Split::Val)?,
            );
            check_labels(path, &train, classes.len())?;
            check_labels(path, &val, classes.len())?;
            (train, val, classes, path.clone())
        }
    };
    check_scoreable(&train, &val, &classes, &at)?;
    Ok((train, val, classes))
}

/// An error (naming the data at `at`) when the training labels hold fewer than two of `classes`
/// or the validation labels no scored pixel.
fn check_scoreable(train: &[Sample], val: &[Sample], classes: &[String], at: &Path) -> Result<()> {
    let present = |s: &[Sample]| {
        s.iter()
            .flat_map(|s| s.mask.iter().copied())
            .filter(|&l| l != IGNORE)
            .collect::<std::collections::BTreeSet<u8>>()
    };
    let seen = present(train);
    if seen.len() < 2 {
        let which = seen.first().map_or("no class".to_string(), |&k| {
            format!("only class {k} ({})", classes[usize::from(k)])
        });
        return Err(Error::data(
            at,
            format!(
                "the training labels hold {which}: segmentation needs at least two classes to tell apart"
            ),
        ));
    }
    if present(val).is_empty() {
        return Err(Error::data(
            at,
            "the validation split has no labelled pixel (every pixel is 255, ignored): nothing to score",
        ));
    }
    Ok(())
}

/// Fine-tune an FCN on `e`'s encoder with `e.config.transfer.segment` in `out` (locked while it
/// runs; checkpoints every `checkpoint-every` steps and at a stop), then hand the report to
/// `announce` and write `config.toml`, `segment.json` and `predictions.png`.
pub fn segment(
    e: &Evaluation,
    out: &Path,
    opts: &TransferOptions,
    progress: &mut dyn Progress,
    announce: &mut dyn FnMut(&SegmentRun),
) -> Result<TransferOutcome<SegmentRun>> {
    let started = std::time::Instant::now();
    let cfg = &e.config.transfer.segment;
    let encoder = e.encoder_copy("`byol transfer segment`")?;
    let run = open_run(out, opts)?;
    let (train, val, classes) = samples(e, &cfg.data)?;
    let dim = e.config.model.encoder.output_dim();
    let mut session = e.checkpoints(&run, SEGMENT_CHECKPOINT, opts, cfg.checkpoint_every);
    let run_of = e.run_of(progress, &mut session);
    let tuned = fine_tune((encoder, dim), (&train, &val, &classes), cfg, run_of)?;
    let Some((result, model)) = tuned else {
        return Ok(TransferOutcome::Stopped {
            step: session.losses.len() as u64,
        });
    };
    let aug = &e.config.augment;
    let picture = prediction_picture(&model, &val, cfg.pictures, 3, aug, &e.device)?;
    let report = finish(
        &run,
        e,
        SEGMENT,
        (cfg, result),
        &picture,
        (started, announce),
    )?;
    Ok(TransferOutcome::Finished(report))
}

/// Write the mosaics of `data` (a `mosaic` source) from `e`'s splits in PASCAL VOC's layout under
/// `out` (splits `train` and `val`), the files that `voc:<out>` then reads.
pub fn write_mosaics(
    e: &Evaluation,
    data: &SegmentData,
    out: &Path,
) -> Result<(usize, usize, PathBuf)> {
    if !matches!(data, SegmentData::Mosaic { .. }) {
        return Err(Error::config(
            "transfer.segment.data",
            "only mosaics are written; a VOC folder is already in the layout",
        ));
    }
    refuse_used(
        out,
        &[
            "JPEGImages",
            "SegmentationClass",
            "ImageSets",
            "classes.txt",
        ],
    )?;
    let (train, val, classes) = samples(e, data)?;
    write_split(out, Split::Train, &train)?;
    write_split(out, Split::Val, &val)?;
    write_classes(out, &classes)?;
    Ok((train.len(), val.len(), out.join("ImageSets/Segmentation")))
}

/// An error when `out` already holds one of `entries`: data written over an earlier set would
/// mix with its stale files, which the next run would read.
fn refuse_used(out: &Path, entries: &[&str]) -> Result<()> {
    match entries.iter().find(|e| out.join(e).exists()) {
        Some(e) => Err(Error::data(
            out,
            format!("already holds `{e}` from an earlier set: write into a new or empty folder"),
        )),
        None => Ok(()),
    }
}

/// The training and validation samples of `data`: each split must have a measured pixel
/// ([`check_depths`]), and depths that look like another unit are warned of.
fn depth_samples(data: &DepthData, seed: u64) -> Result<(Vec<DepthSample>, Vec<DepthSample>)> {
    match data {
        DepthData::Synthetic { train, val, size } => {
            // RGB bytes and an f32 depth per pixel.
            let bytes = (*train as u128 + *val as u128) * (*size as u128).pow(2) * 7;
            crate::transfer::check_memory(
                "transfer.depth.data",
                &format!("{train} + {val} synthetic scenes of {size} × {size} px"),
                bytes,
            )?;
            Ok((
                scenes(*train, *size, seed, Split::Train),
                scenes(*val, *size, seed, Split::Val),
            ))
        }
        DepthData::Folder { path } => {
            let (train, val) = (
                read_folder(path, Split::Train)?,
                read_folder(path, Split::Val)?,
            );
            for (split, samples) in [(Split::Train, &train), (Split::Val, &val)] {
                if let Some(warning) = check_depths(path, split, samples)? {
                    tracing::warn!("{warning}");
                }
            }
            Ok((train, val))
        }
    }
}

/// Fine-tune the up-projection decoder and `e`'s encoder with `e.config.transfer.depth` in
/// `out` (locked while it runs; checkpoints every `checkpoint-every` steps and at a stop), then
/// hand the report to `announce` and write `config.toml`, `depth.json` and `predictions.png`.
pub fn depth(
    e: &Evaluation,
    out: &Path,
    opts: &TransferOptions,
    progress: &mut dyn Progress,
    announce: &mut dyn FnMut(&DepthRun),
) -> Result<TransferOutcome<DepthRun>> {
    let started = std::time::Instant::now();
    let cfg = &e.config.transfer.depth;
    let encoder = e.encoder_copy("`byol transfer depth`")?;
    let run = open_run(out, opts)?;
    let (train, val) = depth_samples(&cfg.data, e.config.seed)?;
    let enc = e.config.model.encoder.resnet("`byol transfer depth`")?;
    let mut session = e.checkpoints(&run, DEPTH_CHECKPOINT, opts, cfg.checkpoint_every);
    let run_of = e.run_of(progress, &mut session);
    let network = (encoder, enc.output_dim(), enc.output_stride());
    let tuned = crate::transfer::depth::depth(network, (&train, &val), cfg, run_of)?;
    let Some((result, model)) = tuned else {
        return Ok(TransferOutcome::Stopped {
            step: session.losses.len() as u64,
        });
    };
    let aug = &e.config.augment;
    let picture =
        crate::transfer::depth::prediction_picture(&model, &val, cfg.pictures, 3, aug, &e.device)?;
    let report = finish(&run, e, DEPTH, (cfg, result), &picture, (started, announce))?;
    Ok(TransferOutcome::Finished(report))
}

impl Evaluation {
    /// The evaluation a transfer run in `dir` started from, rebuilt from its newest checkpoint of
    /// `kind`: its config, and an encoder of its architecture, whose weights the checkpoint's
    /// then replace.
    pub fn resumed_transfer(dir: &Path, kind: crate::io::FileKind<'static>) -> Result<Self> {
        let recorded = recorded(dir, kind)?;
        let config = recorded.config;
        config.validate()?;
        let device = config.backend.device()?;
        let online = crate::train::random_init_online(&config, &device);
        Ok(Evaluation {
            config,
            device,
            encoder: online.encoder,
            projector: online.projector,
            splits: Default::default(),
            label: recorded.encoder,
            step: recorded.encoder_step,
            run_dir: None,
        })
    }

    /// A copy of the encoder with state of its own, to fine-tune: a clone would share its
    /// BatchNorm statistics, and a second run from this evaluation would start from the
    /// statistics the first left. The dense tasks read a ResNet's feature maps: for `task`, a
    /// ViT is refused here, before anything is written.
    fn encoder_copy(&self, task: &str) -> Result<crate::model::ResNet> {
        self.config.model.encoder.resnet(task)?;
        let fresh = self
            .config
            .model
            .encoder
            .init(self.config.data.image_size, &self.device);
        crate::model::params::copy_into(fresh, &self.encoder).into_resnet(task)
    }

    /// The checkpoints of a transfer run of this encoder in `run`.
    fn checkpoints<'a>(
        &'a self,
        run: &'a RunDir,
        kind: crate::io::FileKind<'static>,
        opts: &'a TransferOptions,
        every: u64,
    ) -> Checkpoints<'a> {
        Checkpoints {
            run,
            kind,
            opts,
            every,
            config: &self.config,
            encoder: (&self.label, self.step),
            device: self.device.clone().autodiff(),
            losses: Vec::new(),
        }
    }

    /// What a dense protocol's run is given: this evaluation's views, seed and device, with
    /// `progress` and `session`.
    fn run_of<'a, M>(
        &'a self,
        progress: &'a mut dyn Progress,
        session: &'a mut dyn Session<M>,
    ) -> Run<'a, M> {
        Run {
            aug: &self.config.augment,
            seed: self.config.seed,
            device: &self.device,
            progress,
            session,
        }
    }
}

/// Write the synthetic scenes of `data` in the depth folder layout under `out` (`train/` and
/// `val/`), the files that `folder:<out>` then reads.
pub fn write_scenes(data: &DepthData, seed: u64, out: &Path) -> Result<(usize, usize)> {
    if !matches!(data, DepthData::Synthetic { .. }) {
        return Err(Error::config(
            "transfer.depth.data",
            "only the synthetic scenes are written; a folder is already in the layout",
        ));
    }
    refuse_used(out, &[Split::Train.name(), Split::Val.name()])?;
    let (train, val) = depth_samples(data, seed)?;
    write_folder(out, Split::Train, &train)?;
    write_folder(out, Split::Val, &val)?;
    Ok((train.len(), val.len()))
}

#[cfg(test)]
mod tests;
