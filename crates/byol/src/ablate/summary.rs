//! An ablation's results: each run's row, each variant's summary over its seeds (with its change
//! from the variant it is relative to, seed by seed, and the paper's where the grid gives it),
//! and the reports `byol ablate` writes.

use super::Grid;
use crate::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The result of one variant at one seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    /// The seed of this run (`seed` of the config).
    pub seed: u64,
    /// The variant's own overrides of the base config and its settings.
    pub overrides: Vec<String>,
    pub random_init: bool,
    pub steps: u64,
    pub knn_top1: f64,
    pub knn_top5: f64,
    pub linear_top1: Option<f64>,
    /// Loss of the last logged step (objectives differ in scale between methods).
    pub final_loss: Option<f64>,
    /// Std of the normalised online projections at the last logged step.
    pub projection_std: Option<f64>,
    /// 1/√P, the value for well-spread projections.
    pub healthy_std: f64,
    /// projection_std below `train.collapse-fraction`·healthy_std.
    pub collapsed: Option<bool>,
    /// Seconds of this run's last invocation (training and evaluation).
    pub wall_seconds: f64,
    /// (step, loss) of every logged step.
    pub losses: Vec<(u64, f64)>,
    /// (step, kNN top-1) of every evaluation during training (`train.knn-every-epochs`, the
    /// run's final one last); none for a random-init encoder. Rows written before this field
    /// read it back from the run's `evals.jsonl`.
    #[serde(default)]
    pub evals: Vec<(u64, f64)>,
    /// The resolved config of the run (TOML): a rerun reuses this row only if the variant
    /// resolves to the same config (compared as configs: fields added later read as their
    /// defaults).
    pub config: String,
}

/// Mean, sample standard deviation, minimum and maximum of one figure over a variant's seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub mean: f64,
    /// Sample standard deviation (n − 1); 0 for one seed.
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Spread {
            mean,
            std,
            min,
            max,
        })
    }
}

/// One variant over all its seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub overrides: Vec<String>,
    pub random_init: bool,
    pub seeds: Vec<u64>,
    pub knn_top1: Spread,
    pub knn_top5: Spread,
    pub linear_top1: Option<Spread>,
    pub projection_std: Option<Spread>,
    pub healthy_std: f64,
    /// How many of the seeds collapsed.
    pub collapsed: Option<usize>,
    pub final_loss: Option<Spread>,
    pub wall_seconds: Spread,
    /// The variant's `relative-to`, and its kNN top-1 minus that variant's over the seeds both
    /// have run (paired by seed).
    #[serde(default)]
    pub relative: Option<Relative>,
}

/// A variant's kNN top-1 against another variant's, seed by seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Relative {
    pub to: String,
    pub knn_top1_delta: Spread,
    /// The published change, in points, when the grid gives it (`paper-delta`).
    #[serde(default)]
    pub paper_delta: Option<f64>,
}

/// Every run of an ablation and its per-variant summary, in the grid's order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ablation {
    /// The base config (a preset name or a file).
    pub base: String,
    /// The settings every run applies to it ([`crate::workflow::Settings::describe`]).
    pub settings: Vec<String>,
    pub runs: Vec<Row>,
    pub summary: Vec<Summary>,
}

/// Summarise `runs` per variant, in the order of first appearance, with each variant's
/// difference to the variant it is `relative-to` in `grid`.
pub fn summarise(runs: &[Row], grid: &Grid) -> Vec<Summary> {
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let rs: Vec<&Row> = runs.iter().filter(|r| r.name == name).collect();
            let all = |f: &dyn Fn(&Row) -> Option<f64>| -> Option<Spread> {
                let v: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
                if v.len() == rs.len() {
                    Spread::of(&v)
                } else {
                    None
                }
            };
            let first = rs[0];
            Summary {
                name: name.to_string(),
                overrides: first.overrides.clone(),
                random_init: first.random_init,
                seeds: rs.iter().map(|r| r.seed).collect(),
                knn_top1: all(&|r| Some(r.knn_top1)).expect("a variant has runs"),
                knn_top5: all(&|r| Some(r.knn_top5)).expect("a variant has runs"),
                linear_top1: all(&|r| r.linear_top1),
                projection_std: all(&|r| r.projection_std),
                healthy_std: first.healthy_std,
                collapsed: if rs.iter().all(|r| r.collapsed.is_some()) {
                    Some(rs.iter().filter(|r| r.collapsed == Some(true)).count())
                } else {
                    None
                },
                final_loss: all(&|r| r.final_loss),
                wall_seconds: all(&|r| Some(r.wall_seconds)).expect("a variant has runs"),
                relative: grid
                    .variant
                    .iter()
                    .find(|v| v.name == name)
                    .and_then(|v| relative(runs, &rs, v.relative_to.as_deref(), v.paper_delta)),
            }
        })
        .collect()
}

/// The kNN top-1 of `rows` (one variant) minus that of variant `to` at the same seeds, with the
/// published change `paper`.
fn relative(runs: &[Row], rows: &[&Row], to: Option<&str>, paper: Option<f64>) -> Option<Relative> {
    let to = to?;
    Some(Relative {
        to: to.to_string(),
        knn_top1_delta: Spread::of(&paired_differences(runs, rows, to))?,
        paper_delta: paper,
    })
}

/// The kNN top-1 of each of `rows` minus that of variant `to`'s run of the same seed, for the
/// seeds both have run, in the order of `rows`.
pub fn paired_differences(runs: &[Row], rows: &[&Row], to: &str) -> Vec<f64> {
    rows.iter()
        .filter_map(|r| {
            runs.iter()
                .find(|o| o.name == to && o.seed == r.seed)
                .map(|o| r.knn_top1 - o.knn_top1)
        })
        .collect()
}

/// `ablation.md` (the per-variant summary, then every run) and `ablation.json`.
pub fn write_reports(dir: &Path, a: &Ablation) -> Result<()> {
    let with = if a.settings.is_empty() {
        String::new()
    } else {
        format!(" with `{}`", a.settings.join("`, `"))
    };
    let mut md = format!(
        "Base config `{}`{with}; mean ± sample std (min–max) over the seeds.\n\n\
         | variant | seeds | kNN top-1 % | Δ kNN top-1 (points) | kNN top-5 % | linear top-1 % | final loss | projection std (healthy) | collapsed | wall s |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        a.base
    );
    a.summary.iter().for_each(|s| md.push_str(&summary_row(s)));
    md.push_str(
        "\nEvery run:\n\n| variant | seed | kNN top-1 % | kNN top-5 % | linear top-1 % | final loss | projection std | steps | wall s | the variant's overrides |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &a.runs {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} |\n",
            r.name,
            r.seed,
            pct(r.knn_top1),
            pct(r.knn_top5),
            r.linear_top1.map_or("–".into(), pct),
            r.final_loss.map_or("–".into(), |l| format!("{l:.4}")),
            r.projection_std.map_or("–".into(), |s| format!("{s:.4}")),
            r.steps,
            r.wall_seconds,
            if r.overrides.is_empty() {
                "(none)".to_string()
            } else {
                format!("`{}`", r.overrides.join(" "))
            }
        ));
    }
    let write = |name: &str, bytes: &[u8]| crate::io::write_atomic(&dir.join(name), bytes);
    write("ablation.md", md.as_bytes())?;
    write(
        "ablation.json",
        serde_json::to_string_pretty(a).expect("json").as_bytes(),
    )
}

/// A percentage with two decimals.
fn pct(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

/// A spread in percent: the mean, and with several seeds ± the std and the range.
fn spread_pct(s: &Spread, n: usize) -> String {
    if n > 1 {
        format!(
            "{} ± {} ({}–{})",
            pct(s.mean),
            pct(s.std),
            pct(s.min),
            pct(s.max)
        )
    } else {
        pct(s.mean)
    }
}

/// The Markdown row of one variant's summary.
fn summary_row(s: &Summary) -> String {
    let n = s.seeds.len();
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
        s.name,
        s.seeds
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        spread_pct(&s.knn_top1, n),
        s.relative.as_ref().map_or("–".into(), |r| {
            let d = &r.knn_top1_delta;
            let spread = if n > 1 {
                format!(" ± {:.2}", 100.0 * d.std)
            } else {
                String::new()
            };
            let paper = r
                .paper_delta
                .map_or(String::new(), |p| format!(" (paper {p:+.1})"));
            format!("{:+.2}{spread} vs {}{paper}", 100.0 * d.mean, r.to)
        }),
        pct(s.knn_top5.mean),
        s.linear_top1
            .as_ref()
            .map_or("–".into(), |l| spread_pct(l, n)),
        s.final_loss
            .map_or("–".into(), |l| format!("{:.4}", l.mean)),
        s.projection_std.map_or("–".into(), |p| format!(
            "{:.4} ({:.4})",
            p.mean, s.healthy_std
        )),
        s.collapsed.map_or("–".into(), |c| format!("{c} of {n}")),
        s.wall_seconds.mean
    )
}
