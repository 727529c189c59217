//! ImageFolder: `root/<class>/<image>` with JPEG or PNG files. If `root/train` and `root/test`
//! both exist, they are the two splits (the layout of `../shared/data/cifar10`); otherwise a
//! seeded, class-balanced fraction of each class is held out as the test split.
//! Unreadable images are skipped, counted and reported, never fatal.

use super::decode::{check_file_pixels, decode};
use super::{DataConfig, ImageSet, Pixels, Splits};
use crate::{Error, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("jpg" | "jpeg" | "png")
    )
}

/// Class folders (sorted) and their image files (sorted), and what the scan leaves out, each with
/// the reason: images directly in `root` (not in a class folder), class folders without images
/// (not a class: a label nothing would carry), other files in the class folders.
fn scan(root: &Path) -> Result<Scan> {
    if !root.exists() {
        let tried = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let hint = if tried != root {
            format!(" (looked for {})", tried.display())
        } else {
            String::new()
        };
        return Err(Error::data(root, format!("folder does not exist{hint}")));
    }
    if !root.is_dir() {
        return Err(Error::data(root, "not a folder"));
    }
    let mut classes = Vec::new();
    let mut left_out = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let path = entry.map_err(|e| Error::io(root, e))?.path();
        if !path.is_dir() {
            if is_image(&path) {
                left_out.push((
                    path,
                    "an image outside the class folders (root/<class>/<image>): left out"
                        .to_string(),
                ));
            }
            continue;
        }
        let (mut files, others): (Vec<PathBuf>, Vec<PathBuf>) = std::fs::read_dir(&path)
            .map_err(|e| Error::io(&path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .partition(|p| is_image(p));
        if !others.is_empty() {
            let why = format!(
                "{} file(s) that are not .jpg/.jpeg/.png (e.g. {}): left out",
                others.len(),
                others[0].display()
            );
            left_out.push((path.clone(), why));
        }
        files.sort();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        classes.push((name, files));
    }
    classes.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, _) in classes.iter().filter(|(_, f)| f.is_empty()) {
        left_out.push((
            root.join(name),
            "a class folder without .jpg/.jpeg/.png images: not a class".to_string(),
        ));
    }
    classes.retain(|(_, f)| !f.is_empty());
    if classes.is_empty() {
        return Err(Error::data(
            root,
            "no images found: expected class sub-folders holding .jpg/.jpeg/.png files (root/<class>/<image>)",
        ));
    }
    left_out.sort();
    for (path, why) in &left_out {
        tracing::warn!("{}: {why}", path.display());
    }
    Ok(Scan { classes, left_out })
}

/// What [`scan`] finds.
struct Scan {
    /// Class name and its image files.
    classes: Vec<(String, Vec<PathBuf>)>,
    /// What is not read, with the reason.
    left_out: Vec<(PathBuf, String)>,
}

/// Whether [`load_folder`] decodes the images once and keeps them in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// Keep only the paths; decode an image each time it is used.
    Off,
    /// Decode every image and keep its pixels, unless their total (estimated from the headers
    /// before decoding: width × height × 3 bytes) is over `limit_bytes`: then an error says so.
    InMemory { limit_bytes: u64 },
}

impl Cache {
    /// The cache `data.cache` and `data.cache-max-mb` ask for.
    pub fn of(cfg: &DataConfig) -> Self {
        if !cfg.cache {
            return Cache::Off;
        }
        let limit_bytes = match cfg.cache_max_mb {
            Some(mb) => mb.saturating_mul(1 << 20),
            None => super::available_memory().map_or(u64::MAX, |b| b / 2),
        };
        Cache::InMemory { limit_bytes }
    }
}

/// Build an [`ImageSet`] from (label, file) pairs: the headers first (images over `max_pixels`
/// are skipped), then, with the cache, the pixels, decoded in parallel once their total is known
/// to fit (`root` names the folder in that error).
fn build(
    root: &Path,
    items: Vec<(usize, PathBuf)>,
    classes: Vec<String>,
    cache: Cache,
    max_pixels: u64,
) -> Result<ImageSet> {
    let headers: Vec<Result<(u32, u32)>> = items
        .par_iter()
        .map(|(_, path)| check_file_pixels(path, max_pixels))
        .collect();
    if let Cache::InMemory { limit_bytes } = cache {
        let bytes: u64 = headers
            .iter()
            .flatten()
            .map(|&(w, h)| u64::from(w) * u64::from(h) * 3)
            .sum();
        if bytes > limit_bytes {
            let limit = if limit_bytes == u64::MAX {
                String::new()
            } else {
                format!(" ({} MB)", limit_bytes >> 20)
            };
            return Err(Error::data(
                root,
                format!(
                    "keeping these {} images decoded in memory would take {} MB, more than data.cache-max-mb allows{limit} \
                     (by default half the memory available): set data.cache = false to decode them as training reads them, \
                     raise data.cache-max-mb, or write them smaller with `byol shard --resize-shorter`",
                    items.len(),
                    bytes >> 20
                ),
            ));
        }
    }
    let results: Vec<(usize, PathBuf, Result<Pixels>)> = items
        .into_par_iter()
        .zip(headers)
        .map(|((label, path), header)| {
            let px = header.and_then(|_| {
                if cache == Cache::Off {
                    Ok(Pixels::File(path.clone()))
                } else {
                    decode(&path).map(Pixels::Memory)
                }
            });
            (label, path, px)
        })
        .collect();
    let mut set = ImageSet::empty(classes);
    for (label, path, px) in results {
        match px {
            Ok(px) => {
                set.images.push(px);
                set.names.push(path.to_string_lossy().into_owned());
                set.labels.push(label);
            }
            Err(e) => {
                tracing::warn!("skipping unreadable image {}: {e}", path.display());
                set.skipped.push((path, e.to_string()));
            }
        }
    }
    if set.is_empty() {
        return Err(Error::data(
            root,
            format!("all {} images are unreadable", set.skipped.len()),
        ));
    }
    Ok(set)
}

/// Load one ImageFolder as a single labelled set; with `max > 0`, only a class-balanced subset
/// of `max` files drawn with `seed` is read at all. What the scan leaves out is listed in the
/// set's `skipped` with the unreadable files.
pub fn load_folder(
    root: &Path,
    cache: Cache,
    class_names: Option<&[String]>,
    max: usize,
    seed: u64,
    max_pixels: u64,
) -> Result<ImageSet> {
    let Scan {
        classes: scanned,
        left_out,
    } = scan(root)?;
    let classes: Vec<String> = match class_names {
        Some(c) => c.to_vec(),
        None => scanned.iter().map(|(n, _)| n.clone()).collect(),
    };
    let mut items = Vec::new();
    for (name, files) in scanned {
        let Some(label) = classes.iter().position(|c| *c == name) else {
            return Err(Error::data(
                root.join(&name),
                "class not present in the training split",
            ));
        };
        items.extend(files.into_iter().map(|f| (label, f)));
    }
    if max > 0 && max < items.len() {
        let labels: Vec<usize> = items.iter().map(|(l, _)| *l).collect();
        let keep = super::balanced_subset(&labels, classes.len(), max, seed);
        let mut all: Vec<Option<(usize, PathBuf)>> = items.into_iter().map(Some).collect();
        items = keep
            .into_iter()
            .map(|i| all[i].take().expect("unique index"))
            .collect();
    }
    let mut set = build(root, items, classes, cache, max_pixels)?;
    set.skipped.extend(left_out);
    Ok(set)
}

/// Train and test splits of an ImageFolder root: `root/train` and `root/test` (or `root/val`),
/// else `root/<class>/…` with `holdout_fraction` of each class held out (`data.holdout-fraction`).
pub fn load_splits(
    root: &Path,
    cfg: &DataConfig,
    holdout_fraction: f64,
    seed: u64,
) -> Result<Splits> {
    // `val/` is the other common name of the held-out split (ImageNet's layout).
    let tr = root.join("train");
    let te = if !root.join("test").is_dir() && root.join("val").is_dir() {
        root.join("val")
    } else {
        root.join("test")
    };
    if tr.is_dir() && te.is_dir() {
        let train = load_folder(
            &tr,
            Cache::of(cfg),
            None,
            cfg.max_train,
            seed,
            cfg.max_image_pixels,
        )?;
        let test = load_folder(
            &te,
            Cache::of(cfg),
            Some(&train.classes),
            cfg.max_test,
            seed ^ 1,
            cfg.max_image_pixels,
        )?;
        return Ok(Splits { train, test });
    }
    let all = load_folder(root, Cache::of(cfg), None, 0, seed, cfg.max_image_pixels).map_err(|e| match e {
        // `train/` alone: the split layout with its test split missing, not classes.
        Error::Data { path, message } if tr.is_dir() && !root.join("test").exists() => Error::Data {
            path,
            message: format!(
                "{message}; {} holds class folders but there is no test/ (or val/) beside it: add the test split, or give --data {} (a held-out fraction of each class is then the test split, data.holdout-fraction)",
                tr.display(),
                tr.display()
            ),
        },
        e => e,
    })?;
    let n_test = ((all.len() as f64) * holdout_fraction).round() as usize;
    let test_idx = super::balanced_subset(&all.labels, all.classes.len(), n_test, seed);
    let mut is_test = vec![false; all.len()];
    for &i in &test_idx {
        is_test[i] = true;
    }
    let mut train = ImageSet {
        skipped: all.skipped,
        ..ImageSet::empty(all.classes.clone())
    };
    let mut test = ImageSet::empty(all.classes);
    for (((px, name), l), t) in all
        .images
        .into_iter()
        .zip(all.names)
        .zip(all.labels)
        .zip(is_test)
    {
        let s = if t { &mut test } else { &mut train };
        s.images.push(px);
        s.names.push(name);
        s.labels.push(l);
    }
    Ok(Splits { train, test })
}

#[cfg(test)]
mod tests;
