//! Checkpoints: one safetensors file (readable from Python) holding the online and target
//! networks (parameters and BatchNorm statistics), the optimizer state, MoCo's queue, the step
//! and the resolved config. The data-order and augmentation RNG need no state: they are pure functions
//! of (seed, step). A format version and a SHA-256 of the tensor bytes are stored in the header;
//! the file is written to a temporary name, synced, then renamed, so a crash never leaves a
//! half-written checkpoint under the real name.
//!
//! A run directory keeps the newest `train.keep-checkpoints` files, `checkpoint-<step>.safetensors`;
//! [`read_latest`] takes the newest one that reads and verifies, falling back to older ones.

use super::{Queue, TrainState};
use crate::config::{ExperimentConfig, ObjectiveKind, TargetMode};
use crate::data::Fingerprint;
use crate::io::{FileKind, TensorFile, write_atomic};
use crate::model::params::{HostTensors, Named, collect, load, named_from, values};
use crate::model::{Online, Target};
use crate::{Error, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use std::collections::BTreeMap;
use std::path::Path;

/// Version of the checkpoint layout.
pub const FORMAT_VERSION: &str = "1";
const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".safetensors";

/// The file of the checkpoint at `step` in a run directory.
pub fn path_for(dir: &Path, step: u64) -> std::path::PathBuf {
    dir.join(format!("{PREFIX}{step:09}{SUFFIX}"))
}

/// The checkpoints of a run directory, newest first.
pub fn list(dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
    let mut found: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let step = name
                .strip_prefix(PREFIX)?
                .strip_suffix(SUFFIX)?
                .parse()
                .ok()?;
            Some((step, p))
        })
        .collect();
    found.sort_by_key(|c| std::cmp::Reverse(c.0));
    found
}

/// Save a checkpoint of `state` in `dir`, trained on the data of `data`, then delete all but the
/// newest `keep`.
pub fn save_in(
    dir: &Path,
    state: &TrainState,
    cfg: &ExperimentConfig,
    data: &Fingerprint,
    keep: usize,
) -> Result<std::path::PathBuf> {
    let path = path_for(dir, state.step);
    write_atomic(&path, &serialize_state(state, cfg, Some(data))?)?;
    prune(dir, keep);
    Ok(path)
}

/// Delete all but the newest `keep` (at least one) checkpoints of `dir`.
pub fn prune(dir: &Path, keep: usize) {
    for (_, old) in list(dir).into_iter().skip(keep.max(1)) {
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!("could not remove old checkpoint {}: {e}", old.display());
        }
    }
}

/// `read` applied to the checkpoints of `dir`, newest first, until one succeeds; each newer one
/// that fails is reported and skipped.
pub fn newest<T>(dir: &Path, read: impl Fn(&Path) -> Result<T>) -> Result<(T, std::path::PathBuf)> {
    let all = list(dir);
    if all.is_empty() {
        return Err(Error::checkpoint(
            dir,
            "no checkpoint-<step>.safetensors in this folder",
        ));
    }
    let mut problems = Vec::new();
    for (_, path) in all {
        match read(&path) {
            Ok(v) => {
                if !problems.is_empty() {
                    tracing::warn!(
                        "using {} (newer checkpoints unusable: {})",
                        path.display(),
                        problems.join("; ")
                    );
                }
                return Ok((v, path));
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    Err(Error::checkpoint(
        dir,
        format!("no usable checkpoint: {}", problems.join("; ")),
    ))
}

/// The newest checkpoint of `dir` that reads and verifies; each newer one that does not is
/// reported and skipped.
pub fn read_latest(dir: &Path) -> Result<(Loaded, std::path::PathBuf)> {
    newest(dir, read)
}

/// The config recorded in the newest checkpoint of `dir` whose header reads, from the header
/// alone (a few kilobytes, not the tensors): what `--resume` needs before [`read_latest`] loads
/// and verifies the state. Headers that do not read are reported and skipped.
pub fn read_latest_config(dir: &Path) -> Result<(ExperimentConfig, std::path::PathBuf)> {
    newest(dir, read_header_config)
}

/// What a checkpoint's metadata says it is.
pub const KIND: FileKind<'static> = FileKind {
    format: "byol-checkpoint",
    version: FORMAT_VERSION,
    kind: "byol checkpoint",
};

/// The config in a checkpoint's header: safetensors starts with the header's length (u64, little
/// endian), then the header as JSON, whose `__metadata__` holds our strings.
fn read_header_config(path: &Path) -> Result<ExperimentConfig> {
    use std::io::Read;
    let err = |m: String| Error::checkpoint(path, m);
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| err(format!("no header ({e})")))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(err(format!("header of {len} bytes: not a checkpoint")));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .map_err(|e| err(format!("truncated header ({e})")))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| err(format!("unreadable header ({e})")))?;
    let meta = &json["__metadata__"];
    KIND.check(path, meta["format"].as_str(), meta["version"].as_str())?;
    let text = meta["config"]
        .as_str()
        .ok_or_else(|| err("no config in header".into()))?;
    ExperimentConfig::from_recorded_toml(text, path)
}

/// A checkpoint file, or the newest usable one of a run directory.
pub fn read_path_or_dir(path: &Path) -> Result<Loaded> {
    if path.is_dir() {
        read_latest(path).map(|(l, _)| l)
    } else {
        read(path)
    }
}

/// Serialise a state and its config.
pub fn to_bytes_state(state: &TrainState, cfg: &ExperimentConfig) -> Result<Vec<u8>> {
    serialize_state(state, cfg, None)
}

/// A digest of a state's tensors and step: equal digests, equal states.
pub fn digest(state: &TrainState) -> Result<String> {
    let mut file = tensors_of(state)?;
    file.tensors
        .insert("step".into(), (vec![1], vec![state.step as f32]));
    Ok(file.digest())
}

/// [`to_bytes_state`], with the fingerprint of the training data when known.
fn serialize_state(
    state: &TrainState,
    cfg: &ExperimentConfig,
    data: Option<&Fingerprint>,
) -> Result<Vec<u8>> {
    let mut file = tensors_of(state)?;
    file.meta.insert("step".into(), state.step.to_string());
    file.meta.insert("config".into(), cfg.to_toml());
    if let Some(d) = data {
        file.meta
            .insert("data".into(), serde_json::to_string(d).expect("json"));
    }
    file.to_bytes(KIND)
}

/// Every tensor of a state, by name (`online/…`, `target/…`, `queue/…`, `probe/…`, `optim/…`).
fn tensors_of(state: &TrainState) -> Result<TensorFile> {
    let mut file = TensorFile::default();
    let tensors = &mut file.tensors;
    // valid() syncs burn's lazily applied BatchNorm running-statistics updates.
    let mut parts = vec![("online", collect(&state.online.valid()))];
    if let Some(target) = &state.target {
        parts.push(("target", collect(&target.valid())));
    }
    for (prefix, named) in parts {
        for (path, Named { flat, shape }) in named {
            tensors.insert(format!("{prefix}/{path}"), (shape, values(&flat)?));
        }
    }
    if let Some(q) = &state.queue {
        let flat = q
            .keys
            .clone()
            .reshape([q.keys.dims().iter().product::<usize>()]);
        tensors.insert(
            "queue/keys".into(),
            (q.keys.dims().to_vec(), values(&flat)?),
        );
        // The write position, as a one-element tensor so that the checksum covers it.
        tensors.insert("queue/ptr".into(), (vec![1], vec![q.ptr as f32]));
    }
    if let Some(p) = &state.probe {
        let flat2 = |t: &Tensor<2>| t.clone().reshape([t.dims()[0] * t.dims()[1]]);
        tensors.insert(
            "probe/w".into(),
            (p.w.dims().to_vec(), values(&flat2(&p.w))?),
        );
        tensors.insert(
            "probe/mw".into(),
            (p.mw.dims().to_vec(), values(&flat2(&p.mw))?),
        );
        tensors.insert("probe/b".into(), (p.b.dims().to_vec(), values(&p.b)?));
        tensors.insert("probe/mb".into(), (p.mb.dims().to_vec(), values(&p.mb)?));
        // The epoch's count so far: correct answers and images seen (exact in f32 below 2^24).
        let correct = values(&p.epoch_correct)?[0];
        tensors.insert(
            "probe/epoch".into(),
            (vec![2], vec![correct, p.epoch_seen as f32]),
        );
    }
    state.optim.save_state(tensors)?;
    Ok(file)
}

/// Delete the temporary files that a process killed while writing a checkpoint left behind.
pub fn remove_stale_temporaries(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!(".{PREFIX}")) && name.ends_with(".tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!("removed {name}, left by an interrupted checkpoint write"),
                Err(e) => tracing::warn!("could not remove {name}: {e}"),
            }
        }
    }
}

/// Save a state to `path`.
pub fn save(path: &Path, state: &TrainState, cfg: &ExperimentConfig) -> Result<()> {
    write_atomic(path, &to_bytes_state(state, cfg)?)
}

/// A checkpoint read back: its config, step and tensors.
pub struct Loaded {
    pub config: ExperimentConfig,
    pub step: u64,
    /// SHA-256 of the tensors (verified on reading): equal digests, bit-identical states.
    pub sha256: String,
    /// The training data the run was on (checkpoints written by `pretrain`).
    pub data: Option<Fingerprint>,
    tensors: HostTensors,
}

/// Read and verify a checkpoint file.
pub fn read(path: &Path) -> Result<Loaded> {
    let err = |m: &str| Error::checkpoint(path, m);
    let TensorFile { meta, tensors } = TensorFile::read(path, KIND)?;
    let config_text = meta
        .get("config")
        .ok_or_else(|| err("no config in header"))?;
    let config = ExperimentConfig::from_recorded_toml(config_text, path)?;
    let step = meta
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err("no step in header"))?;
    let data = meta.get("data").and_then(|d| serde_json::from_str(d).ok());
    let sha256 = meta.get("sha256").cloned().unwrap_or_default();
    Ok(Loaded {
        config,
        step,
        sha256,
        data,
        tensors,
    })
}

impl Loaded {
    fn named(&self, prefix: &str, device: &Device) -> BTreeMap<String, Named> {
        named_from(&self.tensors, &format!("{prefix}/"), device)
    }

    /// The online network only (for evaluation and export).
    pub fn online(&self, device: &Device) -> Result<Online> {
        let (online, missing) = load(
            Online::new(&self.config.model, self.config.data.image_size, device),
            &self.named("online", device),
        );
        if !missing.is_empty() {
            return Err(Error::checkpoint(
                "online",
                format!("missing tensors: {missing:?}"),
            ));
        }
        Ok(online)
    }

    /// The whole training state, on `device` (online on its autodiff twin).
    pub fn state(&self, device: &Device) -> Result<TrainState> {
        let ad = device.clone().autodiff();
        let (online, m1) = load(
            Online::new(&self.config.model, self.config.data.image_size, &ad),
            &self.named("online", device),
        );
        let mut missing = m1;
        let target = match self.config.target.mode {
            TargetMode::Ema => {
                let (target, m2) = load(
                    Target::new(&self.config.model, self.config.data.image_size, device),
                    &self.named("target", device),
                );
                missing.extend(m2);
                Some(target)
            }
            TargetMode::None => None,
        };
        if !missing.is_empty() {
            return Err(Error::checkpoint(
                "state",
                format!("missing tensors: {missing:?}"),
            ));
        }
        let queue = self.queue(device)?;
        let mut optim = self
            .config
            .optim
            .init()
            .with_frozen(self.config.model.frozen_paths());
        optim.load_state(&self.tensors, device)?;
        let probe = self.probe(device);
        Ok(TrainState {
            online,
            target,
            optim,
            queue,
            step: self.step,
            probe,
        })
    }

    /// MoCo's queue (a checkpoint of another objective has none).
    fn queue(&self, device: &Device) -> Result<Option<Queue>> {
        Ok(match self.config.objective.kind {
            ObjectiveKind::Moco => {
                let (Some((shape, keys)), Some((_, ptr))) = (
                    self.tensors.get("queue/keys"),
                    self.tensors.get("queue/ptr"),
                ) else {
                    return Err(Error::checkpoint(
                        "queue",
                        "a MoCo checkpoint must hold queue/keys and queue/ptr",
                    ));
                };
                let keys =
                    Tensor::<1>::from_data(TensorData::new(keys.clone(), [keys.len()]), device)
                        .reshape([shape[0], shape[1]]);
                Some(Queue {
                    keys,
                    ptr: ptr[0] as usize,
                })
            }
            _ => None,
        })
    }

    /// The online probe, where the checkpoint holds one (the count of its epoch's correct
    /// answers is 0 in checkpoints written before it was kept).
    fn probe(&self, device: &Device) -> Option<crate::eval::OnlineProbe> {
        match (
            self.tensors.get("probe/w"),
            self.tensors.get("probe/mw"),
            self.tensors.get("probe/b"),
            self.tensors.get("probe/mb"),
        ) {
            (Some((ws, w)), Some((_, mw)), Some((bs, b)), Some((_, mb)))
                if ws.len() == 2 && bs.len() == 1 =>
            {
                let two = |v: &Vec<f32>| {
                    Tensor::<2>::from_data(TensorData::new(v.clone(), [ws[0], ws[1]]), device)
                };
                let one = |v: &Vec<f32>| {
                    Tensor::<1>::from_data(TensorData::new(v.clone(), [bs[0]]), device)
                };
                // Checkpoints written before the count was kept start the epoch's count at 0.
                let (correct, seen) = self
                    .tensors
                    .get("probe/epoch")
                    .map_or((0.0, 0), |(_, e)| (e[0], e[1] as u64));
                let epoch_correct =
                    Tensor::<1>::from_data(TensorData::new(vec![correct], [1]), device);
                Some(crate::eval::OnlineProbe {
                    w: two(w),
                    mw: two(mw),
                    b: one(b),
                    mb: one(mb),
                    epoch_correct,
                    epoch_seen: seen,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::temporary;

    /// A write that fails with "no space left on device" (the temporary file is a link to
    /// /dev/full) reports the file, leaves nothing behind, and keeps the previous file intact.
    #[test]
    fn a_failed_write_leaves_the_previous_file_intact() {
        if !cfg!(target_os = "linux") {
            return; // /dev/full is Linux's
        }
        assert!(
            Path::new("/dev/full").exists(),
            "/dev/full is missing on this Linux machine: the test cannot run"
        );
        let dir = std::env::temp_dir().join(format!("byol-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("checkpoint-000000001.safetensors");
        write_atomic(&path, b"previous").unwrap();
        std::os::unix::fs::symlink("/dev/full", temporary(&path)).unwrap();
        let e = write_atomic(&path, &vec![7u8; 1 << 16])
            .unwrap_err()
            .to_string();
        assert!(e.contains(".checkpoint-000000001.safetensors.tmp"), "{e}");
        assert!(e.to_lowercase().contains("no space"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"previous");
        assert!(!temporary(&path).exists() && std::fs::symlink_metadata(temporary(&path)).is_err());
        // A stale temporary file of a killed write is removed at the next start.
        std::fs::write(temporary(&path), b"half").unwrap();
        remove_stale_temporaries(&dir);
        assert!(!temporary(&path).exists());
        assert_eq!(std::fs::read(&path).unwrap(), b"previous");
    }
}
