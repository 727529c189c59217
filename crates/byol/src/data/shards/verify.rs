//! `byol shard --verify`: every shard of a folder checked against its manifest (size, SHA-256,
//! sample count), and the shards it does not name.

use super::{MANIFEST, Manifest, ManifestShard, scan_shard};
use crate::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// One shard's problems found by [`verify`].
#[derive(Debug, Clone, PartialEq)]
pub struct ShardProblem {
    pub shard: PathBuf,
    pub problem: String,
}

/// What [`verify`] checked in one folder of shards.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: PathBuf,
    pub shards: usize,
    pub images: usize,
    pub problems: Vec<ShardProblem>,
}

/// Check the shards of `folder` against their manifest(s): `folder/manifest.json`, or the
/// manifests of `folder/train/` and `folder/test/` (as `byol shard` writes them). Every shard the
/// manifest names must exist with its size, SHA-256 and sample count; a `.tar` beside them that
/// the manifest does not name is reported too. Reads every byte (the hashing runs on all cores).
pub fn verify(folder: &Path) -> Result<Vec<Verified>> {
    let manifests: Vec<PathBuf> = if folder.join(MANIFEST).is_file() {
        vec![folder.join(MANIFEST)]
    } else {
        let split: Vec<PathBuf> = ["train", "test"]
            .iter()
            .map(|s| folder.join(s).join(MANIFEST))
            .filter(|p| p.is_file())
            .collect();
        if split.is_empty() {
            return Err(Error::data(
                folder,
                format!(
                    "no {MANIFEST} here nor in train/ or test/: only shards written by `byol shard` can be verified"
                ),
            ));
        }
        split
    };
    manifests.into_iter().map(|m| verify_manifest(&m)).collect()
}

fn verify_manifest(manifest_path: &Path) -> Result<Verified> {
    use rayon::prelude::*;
    let manifest = Manifest::read(manifest_path)?;
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let mut problems: Vec<ShardProblem> = manifest
        .shards
        .par_iter()
        .filter_map(|s| verify_shard(&dir.join(&s.name), s))
        .collect();
    let named: std::collections::HashSet<&str> =
        manifest.shards.iter().map(|s| s.name.as_str()).collect();
    for entry in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tar") && !named.contains(name.as_str()) {
            problems.push(ShardProblem {
                shard: entry.path(),
                problem: "is not in the manifest: training on this folder would read it too".into(),
            });
        }
    }
    let recorded: usize = manifest.shards.iter().map(|s| s.count).sum();
    if recorded != manifest.count {
        problems.push(ShardProblem {
            shard: manifest_path.to_path_buf(),
            problem: format!(
                "records {} images in all, its shards {recorded}",
                manifest.count
            ),
        });
    }
    problems.sort_by(|a, b| a.shard.cmp(&b.shard));
    Ok(Verified {
        manifest: manifest_path.to_path_buf(),
        shards: manifest.shards.len(),
        images: manifest.count,
        problems,
    })
}

fn verify_shard(path: &Path, recorded: &ManifestShard) -> Option<ShardProblem> {
    use sha2::Digest;
    let problem = |p: String| {
        Some(ShardProblem {
            shard: path.to_path_buf(),
            problem: p,
        })
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return problem(format!("cannot be read: {e}")),
    };
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                sha.update(&buf[..n]);
                bytes += n as u64;
            }
            Err(e) => return problem(format!("cannot be read after {bytes} bytes: {e}")),
        }
    }
    let digest = format!("{:x}", sha.finalize());
    let mut found = Vec::new();
    if bytes != recorded.bytes {
        found.push(format!(
            "{bytes} bytes, the manifest records {}",
            recorded.bytes
        ));
    }
    if digest != recorded.sha256 {
        found.push(format!(
            "SHA-256 {digest}, the manifest records {}",
            recorded.sha256
        ));
    }
    match scan_shard(path) {
        Ok((samples, warning)) => {
            if samples.len() != recorded.count {
                found.push(format!(
                    "{} image(s), the manifest records {}",
                    samples.len(),
                    recorded.count
                ));
            }
            found.extend(warning);
        }
        Err(e) => found.push(e.to_string()),
    }
    if found.is_empty() {
        None
    } else {
        problem(found.join("; "))
    }
}
