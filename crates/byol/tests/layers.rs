//! The library's layers, checked on its source: every `crate::…` reference of a module points to
//! a lower layer (so there is no import cycle between the top-level modules), and no source file
//! of the workspace is longer than 500 lines. docs/ARCHITECTURE.md describes the layers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Lowest first. A module may use the modules before it and never those after it. A folder's
/// `config.rs` (the type of its config section) is its own entry, below `config`, which
/// composes the sections.
const LAYERS: &[&str] = &[
    "error", "rng", "image", "io", "events", "backend", "collective", // shared pieces
    "data", "augment", "model", "loss", "ema", "optim", "eval", // the components
    "train::config", "config", // the experiment's configuration
    "train", "workflow", "ablate", "bench", // the training loop, and what runs it
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer a source file belongs to: its top-level module, or `<folder>::config`.
fn layer_of(src: &Path, file: &Path) -> String {
    let rel: Vec<String> = file.strip_prefix(src).unwrap().iter().map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    if rel.len() == 2 && rel[1] == "config" {
        return format!("{}::config", rel[0]);
    }
    rel[0].clone()
}

/// The layers named by the `crate::a::b` paths of `text` (comments and test modules left out).
fn references(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap();
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap();
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if rest.starts_with('{') {
                continue; // a list, read below
            }
            let path: Vec<&str> = rest.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).next().unwrap().split("::").collect();
            let first = path[0].to_string();
            if !first.chars().next().is_some_and(|c| c.is_lowercase()) {
                continue; // crate::Error, crate::Result: the root's re-exports of `error`
            }
            if path.len() > 1 && path[1] == "config" && first != "config" {
                out.push(format!("{first}::config"));
            } else {
                out.push(first);
            }
        }
        if line.contains("use crate::{") {
            // `use crate::{a, b::c}`: each item's first segment.
            let inner = line.split("use crate::{").nth(1).unwrap().split('}').next().unwrap();
            for item in inner.split(',') {
                let head = item.trim().split("::").next().unwrap().to_string();
                if head.chars().next().is_some_and(|c| c.is_lowercase()) && head != "self" {
                    out.push(head);
                }
            }
        }
    }
    out
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let rank: BTreeMap<&str, usize> = LAYERS.iter().enumerate().map(|(i, l)| (*l, i)).collect();
    let mut upward = Vec::new();
    for file in &files {
        if file.file_name().unwrap() == "lib.rs" {
            continue;
        }
        let layer = layer_of(&src, file);
        let own = *rank.get(layer.as_str()).unwrap_or_else(|| panic!("{}: module `{layer}` is not in LAYERS", file.display()));
        for r in references(&std::fs::read_to_string(file).unwrap()) {
            let to = *rank.get(r.as_str()).unwrap_or_else(|| panic!("{}: `crate::{r}` is not in LAYERS", file.display()));
            if to > own {
                upward.push(format!("{} ({layer}) uses crate::{r}", file.strip_prefix(&src).unwrap().display()));
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(upward.is_empty(), "references to higher layers:\n{}", upward.join("\n"));
}

/// The checker sees an upward reference (so the test above can fail).
#[test]
fn an_upward_reference_is_seen() {
    let refs = references("use crate::train::checkpoint::write_atomic;\nuse crate::{io, Error};\n// crate::bench in a comment\n");
    assert_eq!(refs, ["train", "io"]);
    assert_eq!(references("pub use crate::train::config::TrainConfig;"), ["train::config"]);
}

#[test]
fn no_source_file_is_longer_than_500_lines() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for krate in std::fs::read_dir(crates).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    assert!(files.len() > 50, "found only {} source files under {}", files.len(), crates.display());
    let long: Vec<String> = files
        .iter()
        .map(|f| (f, std::fs::read_to_string(f).unwrap().lines().count()))
        .filter(|(_, n)| *n > 500)
        .map(|(f, n)| format!("{}: {n} lines", f.display()))
        .collect();
    assert!(long.is_empty(), "{}", long.join("\n"));
}
