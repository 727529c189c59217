//! Where the images come from: [`Source`], one variant per kind of data with only that kind's
//! settings, and [`DataSource`], the tag `data.source` names.

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

impl DataSource {
    /// Drop from a `[data]` table the fields of other sources ([`SOURCE_FIELDS`] this source does
    /// not read), keeping every field common to all sources.
    pub fn keep_own_fields(self, data: &mut toml::Table) {
        data.retain(|k, _| !SOURCE_FIELDS.contains(&k) || self.fields().contains(&k));
    }
}

/// The `[data]` fields that belong to one source or another ([`DataSource::fields`]): a config
/// that sets one its source does not read is refused, and `--set data.source=…` drops those of
/// the source it replaces.
pub const SOURCE_FIELDS: &[&str] = &[
    "path",
    "holdout-fraction",
    "download",
    "test-path",
    "shuffle-buffer",
    "synthetic",
];

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
            Source::Folder { path, .. }
            | Source::Cifar10 { path, .. }
            | Source::Cifar100 { path, .. }
            | Source::Shards { path, .. } => Some(path),
        }
    }

    /// A front end's shorthand (`--data`): `synthetic`, `cifar10` or `cifar100` (binary format
    /// under `./data`, downloaded there when missing), `shards:PATH` (a folder with `train/` and
    /// `test/` shard folders), or else the path of an ImageFolder. Settings not named take their
    /// defaults; [`Source::keeping_settings_of`] carries a config's over.
    pub fn parse_shorthand(s: &str) -> Self {
        match s {
            "synthetic" => Source::Synthetic(SyntheticConfig::default()),
            "cifar10" => Source::Cifar10 {
                path: "data".into(),
                download: true,
            },
            "cifar100" => Source::Cifar100 {
                path: "data".into(),
                download: true,
            },
            _ => match s.strip_prefix("shards:") {
                Some(path) => Source::Shards {
                    path: path.into(),
                    test_path: None,
                    shuffle_buffer: d_buffer(),
                },
                None => Source::Folder {
                    path: s.into(),
                    holdout_fraction: d_holdout(),
                },
            },
        }
    }

    /// The source as [`Source::parse_shorthand`] reads it.
    pub fn shorthand(&self) -> String {
        match self {
            Source::Synthetic(_) | Source::Cifar10 { .. } | Source::Cifar100 { .. } => {
                self.kind().name().into()
            }
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
            (
                Source::Folder { path, .. },
                Source::Folder {
                    holdout_fraction, ..
                },
            ) => Source::Folder {
                path,
                holdout_fraction: *holdout_fraction,
            },
            (
                Source::Shards {
                    path, test_path, ..
                },
                Source::Shards { shuffle_buffer, .. },
            ) => Source::Shards {
                path,
                test_path,
                shuffle_buffer: *shuffle_buffer,
            },
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
        Self {
            train_per_class: d_train_pc(),
            test_per_class: d_test_pc(),
        }
    }
}

/// The default of a shards source's `shuffle-buffer`.
pub(super) fn d_buffer() -> usize {
    4096
}

/// The default of a CIFAR source's `holdout-fraction`.
pub(super) fn d_holdout() -> f64 {
    0.1
}
