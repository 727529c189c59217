//! The `[data]` section: where the images come from ([`Source`], in `source.rs`, with each
//! source's own settings) and how they are read. In TOML the source's fields stay flat beside `source = "…"`
//! (the layout of every config so far); the conversion from that layout refuses a field the
//! source does not read.

use super::source::{DataSource, Source, SyntheticConfig, d_buffer, d_holdout};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
        if let Some((field, _)) = given
            .iter()
            .find(|(f, set)| *set && !kind.fields().contains(f))
        {
            let readers: Vec<&str> = [
                DataSource::Folder,
                DataSource::Cifar10,
                DataSource::Cifar100,
                DataSource::Shards,
                DataSource::Synthetic,
            ]
            .into_iter()
            .filter(|s| s.fields().contains(field))
            .map(DataSource::name)
            .collect();
            return Err(format!(
                "data.{field} is not read with source = \"{}\" (only with {}): remove it",
                kind.name(),
                readers.join(", ")
            ));
        }
        let path = || {
            t.path
                .clone()
                .ok_or_else(|| format!("data.path is required with source = \"{}\"", kind.name()))
        };
        let source = match kind {
            DataSource::Synthetic => Source::Synthetic(t.synthetic.clone().unwrap_or_default()),
            DataSource::Folder => Source::Folder {
                path: path()?,
                holdout_fraction: t.holdout_fraction.unwrap_or_else(d_holdout),
            },
            DataSource::Cifar10 => Source::Cifar10 {
                path: path()?,
                download: t.download.unwrap_or(false),
            },
            DataSource::Cifar100 => Source::Cifar100 {
                path: path()?,
                download: t.download.unwrap_or(false),
            },
            DataSource::Shards => Source::Shards {
                path: path()?,
                test_path: t.test_path.clone(),
                shuffle_buffer: t.shuffle_buffer.unwrap_or_else(d_buffer),
            },
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
            Source::Folder {
                holdout_fraction, ..
            } => t.holdout_fraction = Some(holdout_fraction),
            Source::Cifar10 { download, .. } | Source::Cifar100 { download, .. } => {
                t.download = Some(download)
            }
            Source::Shards {
                test_path,
                shuffle_buffer,
                ..
            } => {
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
fn d_prefetch() -> usize {
    2
}
/// The default of `data.max-image-pixels`: an image whose header announces more pixels is
/// skipped before it is decoded (also the limit of the commands that read images without a
/// config: `byol shard`, `byol bench decode`).
pub const MAX_IMAGE_PIXELS: u64 = 100_000_000;

fn d_max_pixels() -> u64 {
    MAX_IMAGE_PIXELS
}

impl DataConfig {
    /// The decoding threads: `workers`, or one per core when it is 0.
    pub fn worker_threads(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }

    /// The source's path and test path made absolute against the working directory (without
    /// following links), as a run records them: its config then names the same data from any
    /// folder (`byol eval --checkpoint` run elsewhere, `--resume` from another directory).
    pub fn with_absolute_paths(self) -> Self {
        self.with_paths_mapped(|p| std::path::absolute(p).ok())
    }

    /// The source's paths resolved to where they lead (`..` and links followed), where they
    /// exist: two configs that name the same folder in other words then compare equal
    /// (`../data/x` from one folder, `/srv/data/x` from another).
    pub fn with_canonical_paths(self) -> Self {
        self.with_paths_mapped(|p| std::fs::canonicalize(p).ok())
    }

    /// `self` read from where `other` reads: `other`'s paths (where both name the same kind of
    /// source), cache, workers and queue depth, the settings that leave the images and their
    /// order unchanged. What stays is what a resumed run must keep.
    pub fn with_location_of(mut self, other: &DataConfig) -> Self {
        match (&mut self.source, &other.source) {
            (Source::Folder { path, .. }, Source::Folder { path: p, .. })
            | (Source::Cifar10 { path, .. }, Source::Cifar10 { path: p, .. })
            | (Source::Cifar100 { path, .. }, Source::Cifar100 { path: p, .. }) => {
                path.clone_from(p)
            }
            (
                Source::Shards {
                    path, test_path, ..
                },
                Source::Shards {
                    path: p,
                    test_path: t,
                    ..
                },
            ) => {
                path.clone_from(p);
                test_path.clone_from(t);
            }
            _ => {}
        }
        self.cache = other.cache;
        self.workers = other.workers;
        self.prefetch_batches = other.prefetch_batches;
        self
    }

    /// The source's path and test path replaced by `f`'s, where it gives one.
    fn with_paths_mapped(mut self, f: impl Fn(&std::path::Path) -> Option<PathBuf>) -> Self {
        let map = |p: &mut PathBuf| {
            if let Some(q) = f(p) {
                *p = q;
            }
        };
        match &mut self.source {
            Source::Synthetic(_) => {}
            Source::Folder { path, .. }
            | Source::Cifar10 { path, .. }
            | Source::Cifar100 { path, .. } => map(path),
            Source::Shards {
                path, test_path, ..
            } => {
                map(path);
                test_path.iter_mut().for_each(map);
            }
        }
        self
    }

    pub fn validate(&self) -> Result<()> {
        if self.image_size < 8 || self.image_size > 1024 {
            return Err(Error::config(
                "data.image-size",
                format!("{} is outside 8..=1024", self.image_size),
            ));
        }
        if self.workers > 1024 {
            return Err(Error::config(
                "data.workers",
                format!("{} threads is more than 1024", self.workers),
            ));
        }
        if self.prefetch_batches == 0 {
            return Err(Error::config("data.prefetch-batches", "must be at least 1"));
        }
        if self.cache_max_mb == Some(0) {
            return Err(Error::config(
                "data.cache-max-mb",
                "must be at least 1 (data.cache = false turns the cache off)",
            ));
        }
        if self.max_image_pixels == 0 {
            return Err(Error::config("data.max-image-pixels", "must be at least 1"));
        }
        match &self.source {
            Source::Folder {
                holdout_fraction, ..
            } if !(0.0..1.0).contains(holdout_fraction) => Err(Error::config(
                "data.holdout-fraction",
                format!("{holdout_fraction} is outside [0, 1)"),
            )),
            Source::Shards {
                shuffle_buffer: 0, ..
            } => Err(Error::config(
                "data.shuffle-buffer",
                "must be at least 1 (1: no shuffling within shards)",
            )),
            Source::Synthetic(s) if s.train_per_class == 0 || s.test_per_class == 0 => {
                Err(Error::config(
                    "data.synthetic",
                    "train-per-class and test-per-class must be at least 1",
                ))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a/b/../b` and `a/b` are one folder: canonical paths compare equal, while the absolute
    /// paths a run records (links and `..` kept) do not.
    #[test]
    fn canonical_paths_name_one_folder_in_one_way() {
        let root = std::env::temp_dir().join(format!("byol-canonical-{}", std::process::id()));
        std::fs::create_dir_all(root.join("b")).unwrap();
        let at = |p: PathBuf| -> DataConfig {
            toml::from_str(&format!(
                "source = \"folder\"\npath = {:?}\nimage-size = 32",
                p.display().to_string()
            ))
            .unwrap()
        };
        let (typed, plain) = (at(root.join("b/../b")), at(root.join("b")));
        assert_ne!(
            typed.clone().with_absolute_paths(),
            plain.clone().with_absolute_paths()
        );
        assert_eq!(typed.with_canonical_paths(), plain.with_canonical_paths());
        // A path that does not exist stays as it was typed.
        let missing = at(root.join("nowhere/../b"));
        assert_eq!(missing.clone().with_canonical_paths(), missing);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
