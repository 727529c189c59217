//! Datasets stored as tar shards in the WebDataset layout: `shard-000000.tar`, … each holding,
//! for every sample, `<key>.jpg` (or `.jpeg`, `.png`) and `<key>.cls` (the class index as
//! decimal text), the members of one sample next to each other. Other members (`<key>.path`,
//! written by [`write_shards`]) are ignored.
//!
//! Opening a set reads only the tar headers (seeking over the data), so that every sample is
//! known by (shard, offset, length) before training starts; training then reads the shards
//! sequentially in the order of an epoch's plan ([`epoch_plan`], [`ShardReader`]), and the
//! evaluations read samples in index order, which is also sequential within each shard.
//!
//! `manifest.json` beside the shards (written by [`write_shards`]) names the classes and records
//! each shard's sample count, size and SHA-256; a shard whose header scan finds fewer samples
//! than the manifest says is reported as truncated.

mod stream;
mod verify;
mod write;

pub use super::decode::decode_member;
pub use stream::{ShardReader, epoch_plan};
pub use verify::{ShardProblem, Verified, verify};
pub use write::{ShardWriteOptions, ShardedSplits, shard_imagefolder, write_shards};

use super::{ImageSet, Pixels};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name of the manifest written beside a split's shards.
pub const MANIFEST: &str = "manifest.json";

/// One shard file of a set, as the samples refer to it.
#[derive(Debug)]
pub struct ShardFile {
    pub path: PathBuf,
    /// Images whose header announces more pixels than this are not decoded.
    pub max_pixels: u64,
}

impl ShardFile {
    /// The encoded bytes of the member at `offset` (`len` bytes).
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut f = std::fs::File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        read_at(&mut f, &self.path, offset, len)
    }
}

pub(crate) fn read_at<R: Read + Seek>(
    f: &mut R,
    path: &Path,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>> {
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io(path, e))?;
    read_member(f, path, offset, len)
}

/// The `len` bytes of the member at `offset`, where `f` now is.
pub(crate) fn read_member<R: Read>(
    f: &mut R,
    path: &Path,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).map_err(|e| {
        Error::data(
            path,
            format!("member at byte {offset} is cut short ({e}): truncated shard"),
        )
    })?;
    Ok(buf)
}

/// What `manifest.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Samples in all shards.
    pub count: usize,
    /// Class names; `<key>.cls` holds an index into this list.
    pub classes: Vec<String>,
    /// The shorter side images were resized to when written (none: stored as they were).
    pub resize_shorter: Option<u32>,
    pub shards: Vec<ManifestShard>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ManifestShard {
    /// File name, relative to the manifest.
    pub name: String,
    pub count: usize,
    pub bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::data(path, format!("not a shard manifest: {e}")))
    }
}

/// Expand `{a..b}` ranges (zero-padded to the width of `a`), e.g. `train-{000000..000127}.tar`.
/// Several ranges multiply out, the first varying slowest.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>> {
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_string()]);
    };
    let bad = |why: &str| Error::data(pattern, format!("bad shard pattern: {why}"));
    let close = pattern[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| bad("`{` without `}`"))?;
    let inner = &pattern[open + 1..close];
    let (a, b) = inner
        .split_once("..")
        .ok_or_else(|| bad("expected {first..last}"))?;
    let (lo, hi): (u64, u64) = (
        a.parse()
            .map_err(|_| bad("range bounds must be integers"))?,
        b.parse()
            .map_err(|_| bad("range bounds must be integers"))?,
    );
    if lo > hi {
        return Err(bad("the first bound is larger than the last"));
    }
    if hi - lo >= 10_000_000 {
        return Err(bad("more than 10,000,000 shards"));
    }
    let width = a.len();
    let mut out = Vec::new();
    for rest in expand_braces(&pattern[close + 1..])? {
        for i in lo..=hi {
            out.push(format!("{}{i:0width$}{rest}", &pattern[..open]));
        }
    }
    // The first range varies slowest.
    out.sort_by_key(|s| s.clone());
    Ok(out)
}

/// The shard files a `data.path` names: a folder (every `*.tar` in it), or a pattern with
/// `{a..b}` ranges and `*`/`?` wildcards. A file a range names that does not exist is an error
/// (a missing shard), as is a pattern that matches nothing.
pub fn shard_paths(spec: &Path) -> Result<Vec<PathBuf>> {
    if spec.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(spec)
            .map_err(|e| Error::io(spec, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "tar"))
            .collect();
        v.sort();
        if v.is_empty() {
            return Err(Error::data(spec, "no .tar shards in this folder"));
        }
        return Ok(v);
    }
    let text = spec
        .to_str()
        .ok_or_else(|| Error::data(spec, "shard pattern is not valid UTF-8"))?;
    let mut out = Vec::new();
    for p in expand_braces(text)? {
        if p.contains(['*', '?', '[']) {
            let mut found: Vec<PathBuf> = glob::glob(&p)
                .map_err(|e| Error::data(&p, format!("bad shard pattern: {e}")))?
                .filter_map(|r| r.ok())
                .filter(|p| p.is_file())
                .collect();
            found.sort();
            out.extend(found);
        } else {
            let path = PathBuf::from(&p);
            if !path.is_file() {
                return Err(Error::data(&path, "shard does not exist"));
            }
            out.push(path);
        }
    }
    if out.is_empty() {
        return Err(Error::data(spec, "no shard matches this pattern"));
    }
    Ok(out)
}

/// A sample found by the header scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ScannedSample {
    pub key: String,
    /// Byte offset of the image's data in the shard, and its length.
    pub offset: u64,
    pub len: u64,
    /// `<key>.cls`, if present and readable.
    pub label: Option<usize>,
}

fn is_image_ext(ext: &str) -> bool {
    matches!(ext, "jpg" | "jpeg" | "png")
}

/// The samples of one shard, from its headers, and a warning if the shard ends early (a cut-off
/// last member or a damaged header): the samples before that point are kept.
pub fn scan_shard(path: &Path) -> Result<(Vec<ScannedSample>, Option<String>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let entries = archive
        .entries_with_seek()
        .map_err(|e| Error::data(path, format!("not a tar file: {e}")))?;
    let mut samples: Vec<ScannedSample> = Vec::new();
    let mut labels: HashMap<String, std::result::Result<usize, String>> = HashMap::new();
    let mut warning = None;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                warning = Some(format!("ends early after {} image(s): {e}", samples.len()));
                break;
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = match entry.path() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(_) => continue,
        };
        let Some((key, ext)) = key_and_extension(&name) else {
            continue;
        };
        let (offset, len) = (entry.raw_file_position(), entry.size());
        if offset + len > file_len {
            warning = Some(format!(
                "ends early after {} image(s): member {name} is cut short",
                samples.len()
            ));
            break;
        }
        if is_image_ext(&ext) {
            samples.push(ScannedSample {
                key,
                offset,
                len,
                label: None,
            });
        } else if ext == "cls" {
            labels.insert(key, class_index(&mut entry, &name, len));
        }
    }
    let mut bad_label = None;
    for s in &mut samples {
        match labels.remove(&s.key) {
            Some(Ok(l)) => s.label = Some(l),
            Some(Err(e)) => {
                bad_label.get_or_insert(e);
            }
            None => {}
        }
    }
    if let Some(e) = bad_label {
        return Err(Error::data(path, e));
    }
    Ok((samples, warning))
}

/// A member's sample key and extension (lower case): in WebDataset, the key is the path up to
/// the first dot of the file name.
fn key_and_extension(name: &str) -> Option<(String, String)> {
    let (dir, file_name) = name.rsplit_once('/').map_or(("", name), |(d, f)| (d, f));
    let (stem, ext) = file_name.split_once('.')?;
    let key = if dir.is_empty() {
        stem.to_string()
    } else {
        format!("{dir}/{stem}")
    };
    Some((key, ext.to_ascii_lowercase()))
}

/// The class index a `<key>.cls` member (`name`, `len` bytes) holds, or why it holds none.
fn class_index(member: &mut impl Read, name: &str, len: u64) -> std::result::Result<usize, String> {
    if len > 64 {
        return Err(format!("{name} is {len} bytes, not a class index"));
    }
    let mut text = String::new();
    member
        .read_to_string(&mut text)
        .map_err(|e| format!("{name}: {e}"))?;
    text.trim()
        .parse::<usize>()
        .map_err(|_| format!("{name} holds {:?}, not a class index", text.trim()))
}

/// Open a split stored as shards: every sample's place and label (from the headers), the class
/// names (from `manifest.json` beside the first shard if there is one, else the indices).
/// Samples without `<key>.cls` are an error unless no sample has one (an unlabelled set: one
/// class). With `class_names`, the labels must index into it (the test split uses the training
/// split's classes).
pub fn load_set(spec: &Path, class_names: Option<&[String]>, max_pixels: u64) -> Result<ImageSet> {
    let paths = shard_paths(spec)?;
    let manifest_path = paths[0].parent().unwrap_or(Path::new(".")).join(MANIFEST);
    let manifest = if manifest_path.is_file() {
        Some(Manifest::read(&manifest_path)?)
    } else {
        None
    };
    let scans: Vec<Result<(Vec<ScannedSample>, Option<String>)>> = {
        use rayon::prelude::*;
        paths.par_iter().map(|p| scan_shard(p)).collect()
    };
    let mut set = ImageSet::empty(Vec::new());
    let mut raw_labels: Vec<Option<usize>> = Vec::new();
    for (path, scan) in paths.iter().zip(scans) {
        let (samples, warning) = scan?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let recorded = manifest
            .as_ref()
            .and_then(|m| m.shards.iter().find(|s| s.name == name));
        if let Some(problem) = open_problem(path, samples.len(), warning, recorded) {
            tracing::warn!("shard {} {problem}", path.display());
            set.lost += recorded.map_or(0, |r| r.count.saturating_sub(samples.len()));
            set.skipped.push((path.clone(), problem));
        }
        let file = Arc::new(ShardFile {
            path: path.clone(),
            max_pixels,
        });
        for s in samples {
            set.names.push(format!("{}:{}", path.display(), s.key));
            set.images.push(Pixels::Member {
                shard: file.clone(),
                offset: s.offset,
                len: s.len,
            });
            raw_labels.push(s.label);
        }
    }
    if set.images.is_empty() {
        return Err(Error::data(spec, "the shards hold no images"));
    }
    label(&mut set, raw_labels, class_names, manifest.as_ref(), spec)?;
    Ok(set)
}

/// The labels and class names of `set` from its samples' `raw` labels: none is an unlabelled set
/// (one class), some but not all an error; the names are `class_names`, else the manifest's,
/// else the indices, and every label must index into them.
fn label(
    set: &mut ImageSet,
    raw_labels: Vec<Option<usize>>,
    class_names: Option<&[String]>,
    manifest: Option<&Manifest>,
    spec: &Path,
) -> Result<()> {
    let labelled = raw_labels.iter().filter(|l| l.is_some()).count();
    if labelled == 0 {
        set.classes = vec!["unlabelled".into()];
        set.labels = vec![0; raw_labels.len()];
        return Ok(());
    }
    if labelled < raw_labels.len() {
        let i = raw_labels
            .iter()
            .position(Option::is_none)
            .expect("some unlabelled");
        return Err(Error::data(
            spec,
            format!(
                "{} has no .cls member ({} of {} samples have none)",
                set.names[i],
                raw_labels.len() - labelled,
                raw_labels.len()
            ),
        ));
    }
    set.labels = raw_labels
        .into_iter()
        .map(|l| l.expect("all labelled"))
        .collect();
    let max = set.labels.iter().copied().max().expect("not empty");
    set.classes = match (class_names, manifest) {
        (Some(c), _) => c.to_vec(),
        (None, Some(m)) => m.classes.clone(),
        (None, None) => (0..=max).map(|i| i.to_string()).collect(),
    };
    if max >= set.classes.len() {
        let i = set
            .labels
            .iter()
            .position(|&l| l == max)
            .expect("max exists");
        return Err(Error::data(
            spec,
            format!(
                "{} has class index {max}, but there are {} classes",
                set.names[i],
                set.classes.len()
            ),
        ));
    }
    Ok(())
}

/// What is wrong with a shard at open time, from its header scan (`found` samples, and the
/// scan's warning if it ended early) and its manifest entry: the samples lost against the
/// manifest's count, and a size other than the manifest's (cheap; the SHA-256 is checked by
/// [`verify`]).
fn open_problem(
    path: &Path,
    found: usize,
    warning: Option<String>,
    recorded: Option<&ManifestShard>,
) -> Option<String> {
    let bytes = std::fs::metadata(path).map(|m| m.len()).ok();
    match (warning, recorded) {
        (Some(w), Some(r)) if r.count > found => Some(format!(
            "{w}; its manifest records {}: {} image(s) lost",
            r.count,
            r.count - found
        )),
        (Some(w), _) => Some(format!(
            "{w} (no manifest entry says how many images it held)"
        )),
        (None, Some(r)) if r.count != found => Some(format!(
            "holds {found} image(s), its manifest records {}",
            r.count
        )),
        (None, Some(r)) if bytes.is_some_and(|b| b != r.bytes) => Some(format!(
            "is {} bytes, its manifest records {}: rewritten since (`byol shard --verify` checks its SHA-256)",
            bytes.unwrap_or(0),
            r.bytes
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brace_ranges_expand_with_their_padding() {
        assert_eq!(
            expand_braces("a-{08..11}.tar").unwrap(),
            ["a-08.tar", "a-09.tar", "a-10.tar", "a-11.tar"]
        );
        assert_eq!(
            expand_braces("{0..1}-{0..1}").unwrap(),
            ["0-0", "0-1", "1-0", "1-1"]
        );
        assert_eq!(expand_braces("plain.tar").unwrap(), ["plain.tar"]);
        for bad in ["a{1..x}", "a{3..1}", "a{1-3}", "a{1..3"] {
            let e = expand_braces(bad).unwrap_err().to_string();
            assert!(e.contains("bad shard pattern") && e.contains(bad), "{e}");
        }
    }
}
