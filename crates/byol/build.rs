//! Records the git revision the library is built from (written into every run's `run.json`):
//! HEAD's commit, with `-dirty` when the files that decide what a run computes differ from it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's paths whose change changes what a run computes (relative to its root): the
/// library's and its kernels' sources, manifests and build script, the presets the library
/// embeds, the patched dependency and the lock file. Left out: tests, docs, benchmarks, and the
/// thin binary's own code, which composes a config that every run writes out resolved
/// (`config.toml`); watching it would rebuild the library at every edit of the terminal code.
const SOURCES: [&str; 9] = [
    "crates/byol/src",
    "crates/byol/build.rs",
    "crates/byol/Cargo.toml",
    "crates/byol-kernels/src",
    "crates/byol-kernels/Cargo.toml",
    "configs",
    "vendor",
    "Cargo.toml",
    "Cargo.lock",
];

/// `git args…` in the workspace, its trimmed output when it succeeds.
/// GIT_OPTIONAL_LOCKS=0: `git status` must not refresh the index file.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .current_dir(root)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The files whose change must run this script again: the sources (cargo scans a folder whole),
/// HEAD and the branch it points to (a commit moves the branch, not HEAD), and the packed refs.
fn watched(root: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = SOURCES.iter().map(|p| root.join(p)).collect();
    let branch = git(root, &["symbolic-ref", "-q", "HEAD"]);
    for reference in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(path) = git(root, &["rev-parse", "--git-path", reference]) {
            paths.push(root.join(path));
        }
    }
    paths.into_iter().filter(|p| p.exists()).collect()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let rev = git(&root, &["rev-parse", "--short=12", "HEAD"]);
    let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    status.extend(SOURCES);
    let dirty = rev.is_some() && git(&root, &status).is_some_and(|s| !s.is_empty());
    println!(
        "cargo:rustc-env=BYOL_GIT_REVISION={}{}",
        rev.as_deref().unwrap_or("unknown"),
        if dirty { "-dirty" } else { "" }
    );
    for path in watched(&root) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
