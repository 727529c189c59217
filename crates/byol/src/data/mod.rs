//! Datasets: an ImageFolder reader, tar shards in the WebDataset layout (streamed during
//! training), the CIFAR binary format (with an optional download), and a procedurally generated
//! dataset that needs nothing on disk. All produce labelled train/test [`ImageSet`]s; labels are
//! used only by the evaluations.

pub mod cifar;
pub mod decode;
pub mod download;
pub mod imagefolder;
pub mod shards;
pub mod synthetic;

use crate::image::Rgb8;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which source `data.source` names: the tag of [`Source`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DataSource {
    Synthetic,
    Folder,
    Cifar10,
    Cifar100,
    Shards,
}

impl DataSource {
    /// The name in a config (`data.source = "…"`).
    pub fn name(self) -> &'static str {
        match self {
            DataSource::Synthetic => "synthetic",
            DataSource::Folder => "folder",
            DataSource::Cifar10 => "cifar10",
            DataSource::Cifar100 => "cifar100",
            DataSource::Shards => "shards",
        }
    }

    /// The `[data]` fields only this source reads (of [`SOURCE_FIELDS`]).
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            DataSource::Synthetic => &["synthetic"],
            DataSource::Folder => &["path", "holdout-fraction"],
            DataSource::Cifar10 | DataSource::Cifar100 => &["path", "download"],
            DataSource::Shards => &["path", "test-path", "shuffle-buffer"],
        }
    }
}

/// The `[data]` fields that belong to one source or another ([`DataSource::fields`]): a config
/// that sets one its source does not read is refused, and `--set data.source=…` drops those of
/// the source it replaces.
pub const SOURCE_FIELDS: &[&str] = &["path", "holdout-fraction", "download", "test-path", "shuffle-buffer", "synthetic"];

/// Where the images come from, with the settings only that source has. In TOML these stay flat
/// in `[data]` beside `source = "…"`.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Built-in procedurally generated shapes and textures (no files needed).
    Synthetic(SyntheticConfig),
    /// `path/<class>/<image>` (or `path/train/<class>/…` and `path/test/<class>/…`).
    Folder {
        path: PathBuf,
        /// Without `train/` and `test/`: fraction of each class held out as the labelled test
        /// split of the evaluations (`holdout-fraction`, default 0.1).
        holdout_fraction: f64,
    },
    /// CIFAR-10 binary format in `path` (downloaded there with `download = true`).
    Cifar10 { path: PathBuf, download: bool },
    /// CIFAR-100 binary format in `path` (fine labels).
    Cifar100 { path: PathBuf, download: bool },
    /// Tar shards in the WebDataset layout (`<key>.jpg` + `<key>.cls`, as `byol shard` writes
    /// them): `path` is a folder holding `train/` and `test/` shard folders, or a folder or
    /// pattern (`train-{000000..001023}.tar`, `*.tar`) of training shards with `test_path`.
    /// Training streams them (shard order and a shuffle buffer drawn from seed and epoch).
    Shards {
        path: PathBuf,
        /// The test split's shards (folder or pattern), when `path` is not a folder with
        /// `train/` and `test/` (`test-path`).
        test_path: Option<PathBuf>,
        /// Samples in the shuffle buffer (WebDataset's `shuffle(n)`), held as encoded bytes:
        /// about 110 kB each for ImageNet JPEGs, so 4096 is about 450 MB (`shuffle-buffer`).
        shuffle_buffer: usize,
    },
}

impl Source {
    pub fn kind(&self) -> DataSource {
        match self {
            Source::Synthetic(_) => DataSource::Synthetic,
            Source::Folder { .. } => DataSource::Folder,
            Source::Cifar10 { .. } => DataSource::Cifar10,
            Source::Cifar100 { .. } => DataSource::Cifar100,
            Source::Shards { .. } => DataSource::Shards,
        }
    }

    /// The dataset's folder (or shard pattern); none for the built-in data.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::Synthetic(_) => None,
            Source::Folder { path, .. } | Source::Cifar10 { path, .. } | Source::Cifar100 { path, .. } | Source::Shards { path, .. } => Some(path),
        }
    }

    /// A front end's shorthand (`--data`): `synthetic`, `cifar10` or `cifar100` (binary format
    /// under `./data`, downloaded there when missing), `shards:PATH` (a folder with `train/` and
    /// `test/` shard folders), or else the path of an ImageFolder. Settings not named take their
    /// defaults; [`Source::keeping_settings_of`] carries a config's over.
    pub fn parse_shorthand(s: &str) -> Self {
        match s {
            "synthetic" => Source::Synthetic(SyntheticConfig::default()),
            "cifar10" => Source::Cifar10 { path: "data".into(), download: true },
            "cifar100" => Source::Cifar100 { path: "data".into(), download: true },
            _ => match s.strip_prefix("shards:") {
                Some(path) => Source::Shards { path: path.into(), test_path: None, shuffle_buffer: d_buffer() },
                None => Source::Folder { path: s.into(), holdout_fraction: d_holdout() },
            },
        }
    }

    /// The source as [`Source::parse_shorthand`] reads it.
    pub fn shorthand(&self) -> String {
        match self {
            Source::Synthetic(_) | Source::Cifar10 { .. } | Source::Cifar100 { .. } => self.kind().name().into(),
            Source::Folder { path, .. } => path.display().to_string(),
            Source::Shards { path, .. } => format!("shards:{}", path.display()),
        }
    }

    /// This source with the settings of `before` where it is the same kind of source (the
    /// holdout fraction of a folder, the shuffle buffer of shards, the built-in data's size): a
    /// front end's `--data` changes where the data is, not how the preset reads it.
    pub fn keeping_settings_of(self, before: &Source) -> Source {
        match (self, before) {
            (Source::Synthetic(_), Source::Synthetic(c)) => Source::Synthetic(c.clone()),
            (Source::Folder { path, .. }, Source::Folder { holdout_fraction, .. }) => Source::Folder { path, holdout_fraction: *holdout_fraction },
            (Source::Shards { path, test_path, .. }, Source::Shards { shuffle_buffer, .. }) => {
                Source::Shards { path, test_path, shuffle_buffer: *shuffle_buffer }
            }
            (s, _) => s,
        }
    }
}

/// The built-in dataset's size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SyntheticConfig {
    /// Training images per class.
    #[serde(default = "d_train_pc")]
    pub train_per_class: usize,
    /// Test images per class.
    #[serde(default = "d_test_pc")]
    pub test_per_class: usize,
}

fn d_train_pc() -> usize {
    400
}
fn d_test_pc() -> usize {
    100
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self { train_per_class: d_train_pc(), test_per_class: d_test_pc() }
    }
}

/// Data settings: the source (with its own settings) and how images are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "DataToml", into = "DataToml")]
pub struct DataConfig {
    /// `source` and the fields only it reads.
    pub source: Source,
    /// Training resolution (side of the square views). Paper: 224.
    pub image_size: usize,
    /// Decode every image once and keep it in memory (for datasets that fit). Shards are always
    /// streamed.
    pub cache: bool,
    /// The most memory the cache may take, in MB (estimated from the image headers before any
    /// decoding; a folder over it is refused with what to do instead). Unset: half the memory
    /// the OS says is available when loading.
    pub cache_max_mb: Option<u64>,
    /// Use at most this many training images (a class-balanced, seeded subset). 0: all.
    pub max_train: usize,
    /// Use at most this many test images (class-balanced, seeded). 0: all.
    pub max_test: usize,
    /// Threads that decode and augment images. 0: one per core of the machine.
    pub workers: usize,
    /// Batches of views made ahead of the training step (the loader's queue depth); the shard
    /// reader also holds this many batches of encoded samples ahead of the decoders.
    pub prefetch_batches: usize,
    /// Images whose header announces more pixels than this are skipped (and counted) without
    /// being decoded: a 20,000 × 20,000 file would need 1.2 GB.
    pub max_image_pixels: u64,
}

/// `[data]` as written in TOML: [`DataConfig`] with the source's fields beside `source`, each
/// optional here and checked against the source in the conversion.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DataToml {
    source: DataSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
    image_size: usize,
    #[serde(default = "d_true")]
    cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_max_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    download: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holdout_fraction: Option<f64>,
    #[serde(default)]
    max_train: usize,
    #[serde(default)]
    max_test: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    test_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shuffle_buffer: Option<usize>,
    #[serde(default)]
    workers: usize,
    #[serde(default = "d_prefetch")]
    prefetch_batches: usize,
    #[serde(default = "d_max_pixels")]
    max_image_pixels: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    synthetic: Option<SyntheticConfig>,
}

impl TryFrom<DataToml> for DataConfig {
    type Error = String;

    fn try_from(t: DataToml) -> std::result::Result<Self, String> {
        let kind = t.source;
        let given = [
            ("path", t.path.is_some()),
            ("holdout-fraction", t.holdout_fraction.is_some()),
            ("download", t.download.is_some()),
            ("test-path", t.test_path.is_some()),
            ("shuffle-buffer", t.shuffle_buffer.is_some()),
            ("synthetic", t.synthetic.is_some()),
        ];
        if let Some((field, _)) = given.iter().find(|(f, set)| *set && !kind.fields().contains(f)) {
            let readers: Vec<&str> = [DataSource::Folder, DataSource::Cifar10, DataSource::Cifar100, DataSource::Shards, DataSource::Synthetic]
                .into_iter()
                .filter(|s| s.fields().contains(field))
                .map(DataSource::name)
                .collect();
            return Err(format!("data.{field} is not read with source = \"{}\" (only with {}): remove it", kind.name(), readers.join(", ")));
        }
        let path = || t.path.clone().ok_or_else(|| format!("data.path is required with source = \"{}\"", kind.name()));
        let source = match kind {
            DataSource::Synthetic => Source::Synthetic(t.synthetic.clone().unwrap_or_default()),
            DataSource::Folder => Source::Folder { path: path()?, holdout_fraction: t.holdout_fraction.unwrap_or_else(d_holdout) },
            DataSource::Cifar10 => Source::Cifar10 { path: path()?, download: t.download.unwrap_or(false) },
            DataSource::Cifar100 => Source::Cifar100 { path: path()?, download: t.download.unwrap_or(false) },
            DataSource::Shards => Source::Shards { path: path()?, test_path: t.test_path.clone(), shuffle_buffer: t.shuffle_buffer.unwrap_or_else(d_buffer) },
        };
        Ok(DataConfig {
            source,
            image_size: t.image_size,
            cache: t.cache,
            cache_max_mb: t.cache_max_mb,
            max_train: t.max_train,
            max_test: t.max_test,
            workers: t.workers,
            prefetch_batches: t.prefetch_batches,
            max_image_pixels: t.max_image_pixels,
        })
    }
}

impl From<DataConfig> for DataToml {
    fn from(c: DataConfig) -> Self {
        let mut t = DataToml {
            source: c.source.kind(),
            path: c.source.path().map(Path::to_path_buf),
            image_size: c.image_size,
            cache: c.cache,
            cache_max_mb: c.cache_max_mb,
            download: None,
            holdout_fraction: None,
            max_train: c.max_train,
            max_test: c.max_test,
            test_path: None,
            shuffle_buffer: None,
            workers: c.workers,
            prefetch_batches: c.prefetch_batches,
            max_image_pixels: c.max_image_pixels,
            synthetic: None,
        };
        match c.source {
            Source::Synthetic(s) => t.synthetic = Some(s),
            Source::Folder { holdout_fraction, .. } => t.holdout_fraction = Some(holdout_fraction),
            Source::Cifar10 { download, .. } | Source::Cifar100 { download, .. } => t.download = Some(download),
            Source::Shards { test_path, shuffle_buffer, .. } => {
                t.test_path = test_path;
                t.shuffle_buffer = Some(shuffle_buffer);
            }
        }
        t
    }
}

fn d_true() -> bool {
    true
}
fn d_holdout() -> f64 {
    0.1
}
fn d_buffer() -> usize {
    4096
}
fn d_prefetch() -> usize {
    2
}
fn d_max_pixels() -> u64 {
    100_000_000
}

impl DataConfig {
    /// The decoding threads: `workers`, or one per core when it is 0.
    pub fn worker_threads(&self) -> usize {
        if self.workers > 0 { self.workers } else { std::thread::available_parallelism().map_or(2, |n| n.get()) }
    }

    /// The source's path and test path made absolute against the working directory (without
    /// following links), as a run records them: its config then names the same data from any
    /// folder (`byol eval --checkpoint` run elsewhere, `--resume` from another directory).
    pub fn with_absolute_paths(mut self) -> Self {
        let absolute = |p: &mut PathBuf| {
            if let Ok(abs) = std::path::absolute(&*p) {
                *p = abs;
            }
        };
        match &mut self.source {
            Source::Synthetic(_) => {}
            Source::Folder { path, .. } | Source::Cifar10 { path, .. } | Source::Cifar100 { path, .. } => absolute(path),
            Source::Shards { path, test_path, .. } => {
                absolute(path);
                if let Some(t) = test_path {
                    absolute(t);
                }
            }
        }
        self
    }

    pub fn validate(&self) -> Result<()> {
        if self.image_size < 8 || self.image_size > 1024 {
            return Err(Error::config("data.image-size", format!("{} is outside 8..=1024", self.image_size)));
        }
        if self.workers > 1024 {
            return Err(Error::config("data.workers", format!("{} threads is more than 1024", self.workers)));
        }
        if self.prefetch_batches == 0 {
            return Err(Error::config("data.prefetch-batches", "must be at least 1"));
        }
        if self.cache_max_mb == Some(0) {
            return Err(Error::config("data.cache-max-mb", "must be at least 1 (data.cache = false turns the cache off)"));
        }
        if self.max_image_pixels == 0 {
            return Err(Error::config("data.max-image-pixels", "must be at least 1"));
        }
        match &self.source {
            Source::Folder { holdout_fraction, .. } if !(0.0..1.0).contains(holdout_fraction) => {
                Err(Error::config("data.holdout-fraction", format!("{holdout_fraction} is outside [0, 1)")))
            }
            Source::Shards { shuffle_buffer: 0, .. } => Err(Error::config("data.shuffle-buffer", "must be at least 1 (1: no shuffling within shards)")),
            Source::Synthetic(s) if s.train_per_class == 0 || s.test_per_class == 0 => {
                Err(Error::config("data.synthetic", "train-per-class and test-per-class must be at least 1"))
            }
            _ => Ok(()),
        }
    }
}

/// Where an image's pixels are.
#[derive(Debug, Clone)]
pub enum Pixels {
    /// Decoded and kept in memory.
    Memory(Rgb8),
    /// Decoded from this file when needed.
    File(PathBuf),
    /// A member of a tar shard: its data's byte offset and length.
    Member { shard: std::sync::Arc<shards::ShardFile>, offset: u64, len: u64 },
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
        ImageSet { images: Vec::new(), names: Vec::new(), labels: Vec::new(), classes, skipped: Vec::new(), lost: 0 }
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
                shards::decode_member(&bytes, &self.names[i], shard.max_pixels).map(std::borrow::Cow::Owned)
            }
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
        ImageSet { images, names, labels, classes: self.classes, skipped: self.skipped, lost: self.lost }
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
        Source::Folder { path, holdout_fraction } => imagefolder::load_splits(path, cfg, *holdout_fraction, seed)?,
        Source::Cifar10 { path, download } => cifar::load(path, false, *download)?,
        Source::Cifar100 { path, download } => cifar::load(path, true, *download)?,
        Source::Shards { path, test_path, .. } => {
            if !path.exists() && test_path.is_none() {
                return Err(Error::data(path, "the shards folder does not exist"));
            }
            let (train, test) = match test_path {
                Some(t) => (path.clone(), t.clone()),
                None if path.join("train").is_dir() && path.join("test").is_dir() => (path.join("train"), path.join("test")),
                None => {
                    return Err(Error::config(
                        "data.test-path",
                        format!("{} has no train/ and test/ folders: give the test split's shards in data.test-path", path.display()),
                    ));
                }
            };
            let train = shards::load_set(&train, None, cfg.max_image_pixels)?;
            let test = shards::load_set(&test, Some(&train.classes), cfg.max_image_pixels)?;
            Splits { train, test }
        }
    };
    Ok(Splits { train: splits.train.subset(cfg.max_train, seed), test: splits.test.subset(cfg.max_test, seed ^ 1) })
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
            let name = root.as_deref().and_then(|r| name.strip_prefix(r)).unwrap_or(name);
            h.update(name.as_bytes());
            h.update(b"\0");
            h.update((*label as u64).to_le_bytes());
        }
        Fingerprint { images: set.len(), classes: set.classes.clone(), names_sha256: format!("{:x}", h.finalize()) }
    }

    /// What differs from `before`, in words (empty when nothing does).
    pub fn differences(&self, before: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        if self.images != before.images {
            out.push(format!("{} training images, {} now", before.images, self.images));
        }
        if self.classes != before.classes {
            let added: Vec<&String> = self.classes.iter().filter(|c| !before.classes.contains(c)).collect();
            let removed: Vec<&String> = before.classes.iter().filter(|c| !self.classes.contains(c)).collect();
            out.push(format!("classes added {added:?}, removed {removed:?}"));
        }
        if out.is_empty() && self.names_sha256 != before.names_sha256 {
            out.push("the same number of images, but other files or labels".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
