//! The library's and the binary's layers, checked on their source: every `crate::…` reference
//! of a module points to a lower layer (so there is no import cycle between the top-level
//! modules), and no source file of the workspace is longer than 500 lines. docs/ARCHITECTURE.md
//! describes the layers. Also the house's other checks: no library function over 80 lines, and
//! every repository path the docs name exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. A module may use the modules before it and never those after it. A folder's
/// `config.rs` (the type of its config section) is its own entry, below `config`, which
/// composes the sections.
const LAYERS: &[&str] = &[
    "error",
    "rng",
    "image",
    "io",
    "events",
    "backend",
    "collective", // shared pieces
    "data",
    "augment",
    "model",
    "loss",
    "ema",
    "optim",
    "supervised", // the one loop of the supervised protocols
    "eval",       // the components
    "transfer", // dense tasks: metrics, mosaics, the VOC layout (they use data and, later, the encoder)
    "train::config",
    "distill::config",
    "config", // the experiment's configuration
    "train",
    "distill", // distillation with unlabelled images: a fine-tuned classifier teaches a student
    "workflow",
    "ablate",
    "bench", // the training loop, and what runs it
];

/// A file of a module's tests (`foo/tests.rs` beside `foo.rs`, `#[cfg(test)] mod tests;`): test
/// code, which may use any layer, as the `#[cfg(test)]` modules inside the files may.
fn is_tests_file(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "tests.rs")
}

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
    let rel: Vec<String> = file
        .strip_prefix(src)
        .unwrap()
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    let config = format!("{}::config", rel[0]);
    if rel.len() == 2 && rel[1] == "config" && LAYERS.contains(&config.as_str()) {
        return config;
    }
    rel[0].clone()
}

/// The module path of a source file: `train/monitor.rs` is `train::monitor`, `train/mod.rs` is
/// `train`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let mut m: Vec<String> = file
        .strip_prefix(src)
        .unwrap()
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if m.last().is_some_and(|l| l == "mod") {
        m.pop();
    }
    m
}

/// The layer of the absolute module path `path` (`a`, or `a::config` for a folder's config).
fn layer_of_path(path: &[String]) -> Option<String> {
    let first = path.first()?;
    if !first.chars().next().is_some_and(|c| c.is_lowercase()) || first == "self" {
        return None; // crate::Error, crate::Result: the root's re-exports of `error`
    }
    let config = format!("{first}::config");
    Some(
        if path.len() > 1 && path[1] == "config" && LAYERS.contains(&config.as_str()) {
            config
        } else {
            first.clone()
        },
    )
}

/// The first two segments of each path a use tree names: `a::b::c` gives `[a, b]`,
/// `{a::b, c::{d, e}}` gives `[a, b]` and `[c, d]` and `[c, e]`.
fn heads(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    if let Some(inner) = tree.strip_prefix('{') {
        let mut items = Vec::new();
        let (mut depth, mut start) = (0usize, 0usize);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    items.push(&inner[start..i]);
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return items
            .into_iter()
            .filter(|i| !i.trim().is_empty())
            .flat_map(heads)
            .collect();
    }
    let path: String = tree
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':' || *c == '{')
        .collect();
    let segs: Vec<&str> = path.split("::").collect();
    match segs.iter().position(|s| s.starts_with('{')) {
        // `a::{b, c}`: a path whose second segment is in the group.
        Some(1) => heads(&tree[segs[0].len() + 2..])
            .into_iter()
            .map(|mut h| {
                h.insert(0, segs[0].to_string());
                h.truncate(2);
                h
            })
            .collect(),
        _ => vec![
            segs.iter()
                .take(2)
                .filter(|s| !s.is_empty() && !s.starts_with('{'))
                .map(|s| s.to_string())
                .collect(),
        ],
    }
}

/// `text` without comments and test modules, on one line with single spaces, so that
/// formatting cannot hide a path.
fn normalised(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap();
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    code.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(":: ", "::")
        .replace(" ::", "::")
        .replace("{ ", "{")
}

/// The absolute paths (at least two segments deep where the source names two) of the
/// `crate::…` and `super::…` paths of `text`, the source of the module `module`.
fn paths(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let code = normalised(text);
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find(['c', 's']) {
        let at = &rest[i..];
        let boundary =
            i == 0 || !rest[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':');
        let (prefix, tail) = if boundary && at.starts_with("crate::") {
            (Vec::new(), &at["crate::".len()..])
        } else if boundary && at.starts_with("super::") {
            let mut tail = at;
            let mut up = 0;
            while let Some(t) = tail.strip_prefix("super::") {
                tail = t;
                up += 1;
            }
            (module[..module.len().saturating_sub(up)].to_vec(), tail)
        } else {
            rest = &at[1..];
            continue;
        };
        out.extend(
            heads(tail)
                .into_iter()
                .map(|head| prefix.iter().cloned().chain(head).collect()),
        );
        rest = tail;
    }
    out
}

/// The layers named by the `crate::…` and `super::…` paths of `text`, the source of the module
/// `module` (comments and test modules left out). Whitespace and line breaks do not matter, so
/// formatting cannot hide a reference.
fn references(text: &str, module: &[String]) -> Vec<String> {
    paths(text, module)
        .iter()
        .filter_map(|p| layer_of_path(p))
        .collect()
}

/// The uses between the files of each folder of `src`, as `folder::a → b` edges: `train/monitor.rs`
/// naming `super::feed::Schedules`, `crate::train::feed`, or `super::RunOptions` where the
/// folder's `mod.rs` has `pub use options::RunOptions`, uses `feed` or `options`. A file in a
/// subfolder counts as its subfolder (`data/shards/write.rs` is `data::shards`).
fn sibling_uses(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(src, file);
        if module.len() < 2 || is_tests_file(file) {
            continue; // a top-level file, a folder's mod.rs, or tests
        }
        let (folder, own) = (&module[0], &module[1]);
        let exported = reexports(&src.join(folder).join("mod.rs"));
        let is_module = |m: &str| {
            src.join(folder).join(format!("{m}.rs")).is_file()
                || src.join(folder).join(m).join("mod.rs").is_file()
        };
        for p in paths(&std::fs::read_to_string(file).unwrap(), &module) {
            let Some(to) = p.get(1).filter(|_| &p[0] == folder) else {
                continue;
            };
            let to = if is_module(to) {
                Some(to.clone())
            } else {
                exported.get(to).cloned()
            };
            if let Some(to) = to.filter(|t| t != own) {
                uses.entry(format!("{folder}::{own}"))
                    .or_default()
                    .insert(format!("{folder}::{to}"));
            }
        }
    }
    uses
}

/// The names a folder's `mod.rs` re-exports, each with the file it comes from
/// (`pub use options::RunOptions;` gives `RunOptions → options`).
fn reexports(mod_rs: &Path) -> BTreeMap<String, String> {
    let Ok(text) = std::fs::read_to_string(mod_rs) else {
        return BTreeMap::new();
    };
    let code = normalised(&text);
    let mut out = BTreeMap::new();
    for part in code.split("pub use ").skip(1) {
        for head in heads(part.split(';').next().unwrap()) {
            if let [from, name] = head.as_slice() {
                out.insert(name.clone(), from.clone());
            }
        }
    }
    out
}

/// A cycle in `uses`, as the modules around it (the first repeated at the end), if there is one.
fn cycle(uses: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        at: &str,
        uses: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == at) {
            return Some(path[i..].iter().cloned().chain([at.to_string()]).collect());
        }
        if !done.insert(at.to_string()) {
            return None;
        }
        path.push(at.to_string());
        for next in uses.get(at).into_iter().flatten() {
            if let Some(c) = visit(next, uses, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    uses.keys()
        .find_map(|start| visit(start, uses, &mut Vec::new(), &mut done))
}

/// Each reference of a module of `src` (a crate's sources, `main.rs` and `lib.rs` left out) to a
/// module after its own in `layers`.
fn upward_references(src: &Path, layers: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let rank: BTreeMap<&str, usize> = layers.iter().enumerate().map(|(i, l)| (*l, i)).collect();
    let mut upward = Vec::new();
    for file in &files {
        if file.file_name().unwrap() == "lib.rs"
            || file.file_name().unwrap() == "main.rs"
            || is_tests_file(file)
        {
            continue;
        }
        let layer = layer_of(src, file);
        let own = *rank
            .get(layer.as_str())
            .unwrap_or_else(|| panic!("{}: module `{layer}` is not in the layers", file.display()));
        for r in references(
            &std::fs::read_to_string(file).unwrap(),
            &module_of(src, file),
        ) {
            let to = *rank
                .get(r.as_str())
                .unwrap_or_else(|| panic!("{}: `crate::{r}` is not in the layers", file.display()));
            if to > own {
                upward.push(format!(
                    "{} ({layer}) uses crate::{r}",
                    file.strip_prefix(src).unwrap().display()
                ));
            }
        }
    }
    upward.sort();
    upward.dedup();
    upward
}

#[test]
fn every_module_uses_only_lower_layers() {
    let upward = upward_references(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), LAYERS);
    assert!(
        upward.is_empty(),
        "references to higher layers:\n{}",
        upward.join("\n")
    );
}

/// The binary's modules, lowest first: the flags (`args/`, every command's), the terminal's
/// pieces (the progress bar and Ctrl-C, the charts), then one file per command (`commands/`);
/// `main.rs` dispatches. The flags know nothing of the commands (they named `distill.rs` and
/// `transfer.rs`, which named them back).
const CLI_LAYERS: &[&str] = &["args", "progress", "chart", "commands"];

#[test]
fn the_binarys_modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("byol-cli")
        .join("src");
    let upward = upward_references(&src, CLI_LAYERS);
    assert!(
        upward.is_empty(),
        "references to higher layers in the binary:\n{}",
        upward.join("\n")
    );
}

/// The checker sees an upward reference (so the test above can fail), however the `use` is
/// formatted: one line, a multi-line list, nested lists, `super::super::` paths.
#[test]
fn an_upward_reference_is_seen() {
    let m = |p: &str| p.split("::").map(String::from).collect::<Vec<_>>();
    let refs = references(
        "use crate::train::checkpoint::write_atomic;\nuse crate::{io, Error};\n// crate::bench in a comment\n",
        &m("data"),
    );
    assert_eq!(refs, ["train", "io"]);
    assert_eq!(
        references("pub use crate::train::config::TrainConfig;", &m("data")),
        ["train::config"]
    );
    let formatted = "use crate::{\n    Error,\n    data::ImageSet,\n    train::{\n        checkpoint,\n        config::TrainConfig,\n    },\n};\n";
    assert_eq!(
        references(formatted, &m("model::resnet")),
        ["data", "train", "train::config"]
    );
    assert_eq!(
        references(
            "use super::super::workflow::Settings;",
            &m("eval::probe::inner")
        ),
        ["eval"]
    );
    assert_eq!(
        references("use super::super::workflow::Settings;", &m("eval::probe")),
        ["workflow"]
    );
    assert_eq!(
        references(
            "use super::checkpoint; use super::{config::X, Y};",
            &m("train::config")
        ),
        ["train", "train::config", "train"]
    );
    assert_eq!(
        references("let x = crate::\n    bench::run();", &m("eval")),
        ["bench"]
    );
    assert!(references("fn supersede() { my_crate::bench::x(); }", &m("eval")).is_empty());
}

/// No two files of a folder use each other, directly or round a longer circle (`train/monitor.rs`
/// and `train/pretrain.rs` did, over the run's options and schedules).
#[test]
fn the_files_of_a_folder_use_each_other_in_one_direction() {
    let uses = sibling_uses(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(
        uses.contains_key("train::monitor") && uses.contains_key("train::pretrain"),
        "the checker sees no uses: {uses:?}"
    );
    assert_eq!(cycle(&uses), None);
}

/// The cycle check sees a circle planted in a copy of `train/` (the monitor using the loop that
/// uses it), and one through a name the folder's `mod.rs` re-exports.
#[test]
fn a_planted_circle_is_seen() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let copy = std::env::temp_dir().join(format!("byol-layers-{}", std::process::id()));
    let train = copy.join("train");
    std::fs::create_dir_all(&train).unwrap();
    for entry in std::fs::read_dir(src.join("train")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, train.join(path.file_name().unwrap())).unwrap();
        }
    }
    let monitor = train.join("monitor.rs");
    let text = std::fs::read_to_string(&monitor).unwrap();
    for planted in [
        "use super::pretrain::pretrain;\n",
        "use super::{\n    pretrain_in,\n};\n",
    ] {
        std::fs::write(&monitor, format!("{planted}{text}")).unwrap();
        let c =
            cycle(&sibling_uses(&copy)).unwrap_or_else(|| panic!("no cycle seen with {planted:?}"));
        assert!(
            c.contains(&"train::monitor".to_string()) && c.contains(&"train::pretrain".to_string()),
            "{c:?}"
        );
    }
    std::fs::remove_dir_all(&copy).unwrap();
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
    assert!(
        files.len() > 50,
        "found only {} source files under {}",
        files.len(),
        crates.display()
    );
    let long: Vec<String> = files
        .iter()
        .map(|f| (f, std::fs::read_to_string(f).unwrap().lines().count()))
        .filter(|(_, n)| *n > 500)
        .map(|(f, n)| format!("{}: {n} lines", f.display()))
        .collect();
    assert!(long.is_empty(), "{}", long.join("\n"));
}

/// The functions of `text` longer than `limit` lines, as `line: name (lines)`: a function runs
/// from its `fn` line to the closing brace at its own indentation (a declaration without a body
/// and a one-line function are not counted).
fn long_functions(text: &str, limit: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        let indent = &line[..line.len() - code.len()];
        let mut rest = code;
        while let Some(r) = [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "const ",
            "unsafe ",
            "async ",
            "extern \"C\" ",
        ]
        .iter()
        .find_map(|p| rest.strip_prefix(p))
        {
            rest = r;
        }
        let Some(name) = rest
            .strip_prefix("fn ")
            .map(|r| r.split(['(', '<']).next().unwrap_or(r))
        else {
            continue;
        };
        // The signature ends at the first line ending in `{` (a body) or `;` (none).
        let Some(open) = (i..lines.len()).find(|&k| {
            lines[k].ends_with('{') || lines[k].ends_with(';') || lines[k].ends_with('}')
        }) else {
            continue;
        };
        if !lines[open].ends_with('{') {
            continue;
        }
        let close = format!("{indent}}}");
        let Some(end) = (open + 1..lines.len()).find(|&k| lines[k] == close) else {
            continue;
        };
        let n = end - i + 1;
        if n > limit {
            out.push(format!("{}: {name} ({n} lines)", i + 1));
        }
    }
    out
}

/// No function of the library is over 80 lines (its kernels are in their own crate).
#[test]
fn no_library_function_is_longer_than_80_lines() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let long: Vec<String> = files
        .iter()
        .flat_map(|f| {
            long_functions(&std::fs::read_to_string(f).unwrap(), 80)
                .into_iter()
                .map(move |l| format!("{}:{l}", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "functions over 80 lines:\n{}",
        long.join("\n")
    );
}

/// The length check counts from `fn` to the closing brace at the function's indentation, in
/// and out of `impl` blocks, and skips declarations.
#[test]
fn a_long_function_is_seen() {
    let body = |n: usize| {
        (0..n)
            .map(|i| format!("        let x{i} = {i};\n"))
            .collect::<String>()
    };
    let text = format!(
        "trait T {{\n    fn declared(&self) -> u8;\n}}\nimpl S {{\n    pub(crate) fn long(&self) {{\n{}    }}\n    fn short() {{\n{}    }}\n}}\nfn one() {{ 1 }}\n",
        body(80),
        body(10)
    );
    assert_eq!(long_functions(&text, 80), ["5: long (82 lines)"]);
    assert!(long_functions(&text, 82).is_empty());
}

/// The repository paths that `text` names in backticks: a token that starts with one of the
/// workspace's top folders (`tests/…` stands for a crate's tests folder, as the docs write it);
/// placeholders (`<table>`) and trailing punctuation are left out.
fn named_paths(text: &str) -> Vec<String> {
    const TOPS: [&str; 6] = [
        "ablations/",
        "bench/",
        "configs/",
        "crates/",
        "docs/",
        "tests/",
    ];
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| {
            !t.contains(char::is_whitespace)
                && !t.contains('<')
                && TOPS.iter().any(|p| t.starts_with(p))
        })
        .map(|t| t.trim_end_matches([':', ',', '.', ')']).to_string())
        .collect()
}

/// Every file or folder the README and the docs name exists in the checkout. On CI's clean clone
/// this also catches a named file that `.gitignore` keeps out of the repository (the raw run
/// records of `docs/runs/` were, under a `runs/` pattern meant for run directories).
#[test]
fn the_docs_name_files_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut docs = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    let mut missing = Vec::new();
    let mut named = 0;
    for doc in &docs {
        for path in named_paths(&std::fs::read_to_string(doc).unwrap()) {
            named += 1;
            let found = match path.strip_prefix("tests/") {
                Some(rest) => ["byol", "byol-cli"].iter().any(|c| {
                    root.join("crates")
                        .join(c)
                        .join("tests")
                        .join(rest)
                        .exists()
                }),
                None => root.join(&path).exists(),
            };
            if !found {
                missing.push(format!(
                    "{}: `{path}`",
                    doc.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    assert!(
        named > 100,
        "only {named} paths named in {} docs",
        docs.len()
    );
    assert!(
        missing.is_empty(),
        "named but not in the checkout:\n{}",
        missing.join("\n")
    );
}

#[test]
fn a_named_path_is_seen() {
    let text = "see `docs/runs/long/` and `bench/gpu.sh`, not `docs/runs/<table>/` or `cargo test`";
    assert_eq!(named_paths(text), ["docs/runs/long/", "bench/gpu.sh"]);
}
