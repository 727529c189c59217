//! Datasets: an ImageFolder reader, tar shards in the WebDataset layout (streamed during
//! training), the CIFAR binary format (with an optional download), and a procedurally generated
//! dataset that needs nothing on disk. All produce labelled train/test [`ImageSet`]s; labels are
//! used only by the evaluations.

pub mod cifar;
mod config;
pub mod decode;
pub mod download;
pub mod imagefolder;
pub mod shards;
mod source;
pub mod synthetic;

pub use config::{DataConfig, MAX_IMAGE_PIXELS};
pub use source::{DataSource, SOURCE_FIELDS, Source, SyntheticConfig};

use crate::image::Rgb8;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where an image's pixels are.
#[derive(Debug, Clone)]
pub enum Pixels {
    /// Decoded and kept in memory.
    Memory(Rgb8),
    /// Decoded from this file when needed.
    File(PathBuf),
    /// A member of a tar shard: its data's byte offset and length.
    Member {
        shard: std::sync::Arc<shards::ShardFile>,
        offset: u64,
        len: u64,
    },
}

/// A labelled set of images.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub images: Vec<Pixels>,
    /// Where each image came from (file path, or `file#record`, or `synthetic/split/index`).
    pub names: Vec<String>,
    pub labels: Vec<usize>,
    pub classes: Vec<String>,
    /// Files that could not be read, with the reason (skipped).
    pub skipped: Vec<(PathBuf, String)>,
    /// Images that a shard manifest records but the shards no longer hold (a truncated or
    /// replaced shard): lost without a file of their own to name in `skipped`.
    pub lost: usize,
}

impl ImageSet {
    /// A set with no images yet, of these classes.
    pub fn empty(classes: Vec<String>) -> Self {
        ImageSet {
            images: Vec::new(),
            names: Vec::new(),
            labels: Vec::new(),
            classes,
            skipped: Vec::new(),
            lost: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The pixels of image `i` (decoding it if it is not cached).
    pub fn rgb(&self, i: usize) -> Result<std::borrow::Cow<'_, Rgb8>> {
        match &self.images[i] {
            Pixels::Memory(img) => Ok(std::borrow::Cow::Borrowed(img)),
            Pixels::File(p) => decode::decode(p).map(std::borrow::Cow::Owned),
            Pixels::Member { shard, offset, len } => {
                let bytes = shard.read(*offset, *len)?;
                shards::decode_member(&bytes, &self.names[i], shard.max_pixels)
                    .map(std::borrow::Cow::Owned)
            }
        }
    }

    /// The images `indices` of this set (the pixels of images in memory copied), in that order.
    pub fn select(&self, indices: &[usize]) -> Self {
        ImageSet {
            images: indices.iter().map(|&i| self.images[i].clone()).collect(),
            names: indices.iter().map(|&i| self.names[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
            skipped: Vec::new(),
            lost: 0,
        }
    }

    /// Keep a class-balanced subset of at most `n` images chosen with `seed` (0 keeps all).
    pub fn subset(self, n: usize, seed: u64) -> Self {
        if n == 0 || n >= self.len() {
            return self;
        }
        let keep = balanced_subset(&self.labels, self.classes.len(), n, seed);
        let mut images = Vec::with_capacity(keep.len());
        let mut labels = Vec::with_capacity(keep.len());
        let mut names = Vec::with_capacity(keep.len());
        let mut all: Vec<Option<Pixels>> = self.images.into_iter().map(Some).collect();
        for i in keep {
            images.push(all[i].take().expect("unique index"));
            labels.push(self.labels[i]);
            names.push(self.names[i].clone());
        }
        ImageSet {
            images,
            names,
            labels,
            classes: self.classes,
            skipped: self.skipped,
            lost: self.lost,
        }
    }
}

/// Indices of a class-balanced subset of about `n` items (⌊n/C⌋ per class, the remainder to the
/// first classes), the same for the same seed; sorted.
pub fn balanced_subset(labels: &[usize], num_classes: usize, n: usize, seed: u64) -> Vec<usize> {
    use rand::seq::SliceRandom;
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    let mut r = crate::rng::rng(seed, crate::rng::Stream::Split, &[n as u64]);
    let mut out = Vec::with_capacity(n);
    for (c, idx) in by_class.iter_mut().enumerate() {
        idx.shuffle(&mut r);
        let want = n / num_classes + usize::from(c < n % num_classes);
        out.extend(idx.iter().take(want));
    }
    out.sort_unstable();
    out
}

/// Train and test splits.
pub struct Splits {
    pub train: ImageSet,
    pub test: ImageSet,
}

/// Load the dataset a config names.
pub fn load(cfg: &DataConfig, seed: u64) -> Result<Splits> {
    let splits = match &cfg.source {
        Source::Synthetic(s) => synthetic::generate(s, cfg.image_size, seed),
        Source::Folder {
            path,
            holdout_fraction,
        } => imagefolder::load_splits(path, cfg, *holdout_fraction, seed)?,
        Source::Cifar10 { path, download } => cifar::load(path, false, *download)?,
        Source::Cifar100 { path, download } => cifar::load(path, true, *download)?,
        Source::Shards {
            path, test_path, ..
        } => {
            if !path.exists() && test_path.is_none() {
                return Err(Error::data(path, "the shards folder does not exist"));
            }
            let (train, test) = match test_path {
                Some(t) => (path.clone(), t.clone()),
                None if path.join("train").is_dir() && path.join("test").is_dir() => {
                    (path.join("train"), path.join("test"))
                }
                None => {
                    return Err(Error::config(
                        "data.test-path",
                        format!(
                            "{} has no train/ and test/ folders: give the test split's shards in data.test-path",
                            path.display()
                        ),
                    ));
                }
            };
            let train = shards::load_set(&train, None, cfg.max_image_pixels)?;
            let test = shards::load_set(&test, Some(&train.classes), cfg.max_image_pixels)?;
            Splits { train, test }
        }
    };
    Ok(Splits {
        train: splits.train.subset(cfg.max_train, seed),
        test: splits.test.subset(cfg.max_test, seed ^ 1),
    })
}

/// What identifies a training set, recorded in every checkpoint: `--resume` refuses data that
/// differs (another count changes the schedule; other images or classes, the run). The names
/// are the images' paths (or `shard:member`, or synthetic indices) relative to the data's root,
/// with their labels and the split's classes, so an added, removed, renamed or relabelled image
/// or class shows, and the same data moved to another folder does not; the pixels are not read
/// (a file rewritten in place under its name does not show either).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub images: usize,
    pub classes: Vec<String>,
    /// SHA-256 of the names and labels in the set's order.
    pub names_sha256: String,
}

impl Fingerprint {
    /// The fingerprint of `set`, loaded from `root` (`data.path`; none for the built-in data).
    pub fn of(set: &ImageSet, root: Option<&std::path::Path>) -> Self {
        use sha2::Digest;
        let root = root.map(|r| r.to_string_lossy().into_owned());
        let mut h = sha2::Sha256::new();
        for (name, label) in set.names.iter().zip(&set.labels) {
            let name = root
                .as_deref()
                .and_then(|r| name.strip_prefix(r))
                .unwrap_or(name);
            h.update(name.as_bytes());
            h.update(b"\0");
            h.update((*label as u64).to_le_bytes());
        }
        Fingerprint {
            images: set.len(),
            classes: set.classes.clone(),
            names_sha256: format!("{:x}", h.finalize()),
        }
    }

    /// What differs from `before`, in words (empty when nothing does).
    pub fn differences(&self, before: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        if self.images != before.images {
            out.push(format!(
                "{} training images, {} now",
                before.images, self.images
            ));
        }
        if self.classes != before.classes {
            let added: Vec<&String> = self
                .classes
                .iter()
                .filter(|c| !before.classes.contains(c))
                .collect();
            let removed: Vec<&String> = before
                .classes
                .iter()
                .filter(|c| !self.classes.contains(c))
                .collect();
            out.push(format!("classes added {added:?}, removed {removed:?}"));
        }
        if out.is_empty() && self.names_sha256 != before.names_sha256 {
            out.push("the same number of images, but other files or labels".into());
        }
        out
    }
}

/// The memory the OS says is available (Linux: `MemAvailable` of `/proc/meminfo`).
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprint tells a relabelled image and a renamed file from the recorded data (same
    /// count, same classes), and takes the same files under another root as the same data.
    #[test]
    fn the_fingerprint_sees_labels_and_names_and_not_the_root() {
        let set = |root: &str, names: [&str; 3], labels: [usize; 3]| ImageSet {
            images: names
                .iter()
                .map(|n| Pixels::File(PathBuf::from(format!("{root}/{n}"))))
                .collect(),
            names: names.iter().map(|n| format!("{root}/{n}")).collect(),
            labels: labels.to_vec(),
            ..ImageSet::empty(vec!["cat".into(), "dog".into()])
        };
        let of = |root: &str, names, labels| {
            Fingerprint::of(&set(root, names, labels), Some(std::path::Path::new(root)))
        };
        let recorded = of(
            "/data/a",
            ["cat/1.jpg", "cat/2.jpg", "dog/3.jpg"],
            [0, 0, 1],
        );
        let relabelled = of(
            "/data/a",
            ["cat/1.jpg", "cat/2.jpg", "dog/3.jpg"],
            [0, 1, 1],
        );
        assert_eq!(
            relabelled.differences(&recorded),
            ["the same number of images, but other files or labels"]
        );
        let renamed = of(
            "/data/a",
            ["cat/1.jpg", "cat/9.jpg", "dog/3.jpg"],
            [0, 0, 1],
        );
        assert_eq!(
            renamed.differences(&recorded),
            ["the same number of images, but other files or labels"]
        );
        let moved = of(
            "/elsewhere/b",
            ["cat/1.jpg", "cat/2.jpg", "dog/3.jpg"],
            [0, 0, 1],
        );
        assert!(
            moved.differences(&recorded).is_empty(),
            "{:?}",
            moved.differences(&recorded)
        );
    }

    #[test]
    fn balanced_subset_has_exact_counts_and_is_seeded() {
        let labels: Vec<usize> = (0..1000).map(|i| i % 10).collect();
        let a = balanced_subset(&labels, 10, 100, 5);
        assert_eq!(a.len(), 100);
        for c in 0..10 {
            assert_eq!(a.iter().filter(|&&i| labels[i] == c).count(), 10);
        }
        assert_eq!(a, balanced_subset(&labels, 10, 100, 5));
        assert_ne!(a, balanced_subset(&labels, 10, 100, 6));
    }
}
