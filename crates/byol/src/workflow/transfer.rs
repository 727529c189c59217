//! `byol transfer …`: the dense tasks of [`crate::transfer`] run on an evaluation's encoder, with
//! their data made or read and their results written to a run directory.

use super::Evaluation;
use crate::data::ImageSet;
use crate::rng::{Stream, key};
use crate::supervised::Progress;
use crate::train::RunDir;
use crate::train::run_dir::{DEPTH, PREDICTIONS, SEGMENT};
use crate::transfer::depth::{DepthConfig, DepthData, DepthResult};
use crate::transfer::mosaic::{Mosaic, mosaics};
use crate::transfer::scenes::{DepthSample, check_depths, read_folder, scenes, write_folder};
use crate::transfer::segment::{
    SegmentData, SegmentResult, prediction_picture, segment as fine_tune,
};
use crate::transfer::voc::{
    Sample, check_labels, read_classes, read_split, write_classes, write_split,
};
use crate::transfer::{IGNORE, Split, segment::SegmentConfig};
use crate::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

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

/// Write a transfer run's files to `run`: its report (`e`'s encoder, `settings`, `result`, the
/// seconds since `started`) as JSON in `file`, the prediction picture and the config; returns
/// the report.
fn finish<S: Serialize + Clone, R: Serialize>(
    run: &RunDir,
    e: &Evaluation,
    file: &str,
    (settings, result): (&S, R),
    picture: &crate::image::Rgb8,
    started: std::time::Instant,
) -> Result<TransferRun<S, R>> {
    let wall_seconds = started.elapsed().as_secs_f64();
    let report = TransferRun {
        encoder: e.label.to_string(),
        step: e.step,
        seed: e.config.seed,
        settings: settings.clone(),
        result,
        wall_seconds,
    };
    crate::io::write_rgb_png(&run.file(PREDICTIONS), picture)?;
    run.write(file, &report)?;
    crate::io::write_atomic(
        &run.file(crate::train::run_dir::CONFIG),
        e.config.to_toml().as_bytes(),
    )?;
    Ok(report)
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

/// Fine-tune an FCN on `e`'s encoder with `e.config.transfer.segment`, writing `segment.json`,
/// `predictions.png` and `config.toml` to `out` (locked while it runs).
pub fn segment(e: &Evaluation, out: &Path, progress: &mut dyn Progress) -> Result<SegmentRun> {
    let started = std::time::Instant::now();
    let cfg = &e.config.transfer.segment;
    let run = RunDir::lock(out)?;
    // A folder of an earlier transfer run keeps its result: nothing is written over it.
    refuse_used(out, &[SEGMENT, DEPTH, PREDICTIONS])?;
    let (train, val, classes) = samples(e, &cfg.data)?;
    let dim = e.config.model.encoder.output_dim();
    let (result, model) = fine_tune(
        e.encoder.clone(),
        dim,
        &train,
        &val,
        &classes,
        cfg,
        &e.config.augment,
        e.config.seed,
        &e.device,
        progress,
    )?;
    let picture = prediction_picture(&model, &val, cfg.pictures, 3, &e.config.augment, &e.device)?;
    finish(&run, e, SEGMENT, (cfg, result), &picture, started)
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

/// Fine-tune the up-projection decoder and `e`'s encoder with `e.config.transfer.depth`, writing
/// `depth.json`, `predictions.png` and `config.toml` to `out` (locked while it runs).
pub fn depth(e: &Evaluation, out: &Path, progress: &mut dyn Progress) -> Result<DepthRun> {
    let started = std::time::Instant::now();
    let cfg = &e.config.transfer.depth;
    let run = RunDir::lock(out)?;
    // A folder of an earlier transfer run keeps its result: nothing is written over it.
    refuse_used(out, &[SEGMENT, DEPTH, PREDICTIONS])?;
    let (train, val) = depth_samples(&cfg.data, e.config.seed)?;
    let enc = &e.config.model.encoder;
    let (result, model) = crate::transfer::depth::depth(
        e.encoder.clone(),
        enc.output_dim(),
        enc.output_stride(),
        &train,
        &val,
        cfg,
        &e.config.augment,
        e.config.seed,
        &e.device,
        progress,
    )?;
    let picture = crate::transfer::depth::prediction_picture(
        &model,
        &val,
        cfg.pictures,
        3,
        &e.config.augment,
        &e.device,
    )?;
    finish(&run, e, DEPTH, (cfg, result), &picture, started)
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
mod tests {
    use super::*;

    /// Scenes or mosaics over half the available memory are refused before any is made (a
    /// `mosaic:50` grew to 23 GB and was killed; scenes of 100,000 px a side aborted).
    #[test]
    fn sets_over_the_memory_are_refused_before_they_are_made() {
        let huge = DepthData::Synthetic {
            train: 1 << 40,
            val: 1,
            size: 64,
        };
        let started = std::time::Instant::now();
        let Err(e) = depth_samples(&huge, 0) else {
            panic!("refused")
        };
        let e = e.to_string();
        assert!(
            e.contains("transfer.depth.data") && e.contains("GB in memory"),
            "{e}"
        );
        assert!(
            started.elapsed().as_secs() < 1,
            "refused before making scenes"
        );
        assert!(
            depth_samples(
                &DepthData::Synthetic {
                    train: 2,
                    val: 1,
                    size: 16
                },
                0
            )
            .is_ok()
        );
    }

    /// Single-class training labels and a validation split with nothing labelled are errors (they
    /// scored "mIoU 100 %" and "mIoU 0 %" before); two classes and one scored pixel pass.
    #[test]
    fn data_with_nothing_to_tell_apart_or_to_score_is_refused() {
        let image = crate::image::Rgb8 {
            width: 2,
            height: 1,
            data: vec![0; 6],
        };
        let s = |mask: [u8; 2]| {
            vec![Sample {
                id: "a".into(),
                image: image.clone(),
                mask: mask.to_vec(),
            }]
        };
        let classes = ["cat".to_string(), "dog".to_string()];
        let at = Path::new("data");
        let e = check_scoreable(&s([1, 1]), &s([0, 1]), &classes, at)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("only class 1 (dog)") && e.contains("at least two classes"),
            "{e}"
        );
        let e = check_scoreable(&s([IGNORE, IGNORE]), &s([0, 1]), &classes, at)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no class"), "{e}");
        let e = check_scoreable(&s([0, 1]), &s([IGNORE, IGNORE]), &classes, at)
            .unwrap_err()
            .to_string();
        assert!(e.contains("validation split has no labelled pixel"), "{e}");
        check_scoreable(&s([0, 1]), &s([IGNORE, 0]), &classes, at).unwrap();
    }

    /// Scenes written into a folder that holds an earlier set are refused (the stale scenes would
    /// be read with the new ones); into a new folder they read back, every file whole.
    #[test]
    fn scenes_are_not_written_over_an_earlier_set() {
        let out = std::env::temp_dir().join(format!("byol-scenes-used-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let data = DepthData::Synthetic {
            train: 2,
            val: 1,
            size: 16,
        };
        assert_eq!(write_scenes(&data, 0, &out).unwrap(), (2, 1));
        assert_eq!(
            (
                read_folder(&out, Split::Train).unwrap().len(),
                read_folder(&out, Split::Val).unwrap().len()
            ),
            (2, 1)
        );
        let e = write_scenes(&data, 1, &out).unwrap_err().to_string();
        assert!(
            e.contains("already holds `train`") && e.contains("new or empty folder"),
            "{e}"
        );
        std::fs::remove_dir_all(&out).unwrap();
    }
}
