//! The ablation runner behind `byol ablate`: a list of variants of one base config, each trained
//! with the same budget and seed through the same code, evaluated with the kNN protocol (and
//! linear evaluation when asked), reported as a Markdown table, a JSON file and a PNG chart of
//! the accuracies and loss curves. A variant whose result is already recorded is skipped, and one
//! that was interrupted resumes from its last checkpoint.

use crate::config::ExperimentConfig;
use crate::plot::{BLACK, Canvas, GREY, PALETTE, polyline};
use crate::train::{Observer, RunOptions, checkpoint, knn_of_encoder, linear_of_encoder, pretrain, random_init_encoder};
use crate::{Error, Result, data};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// A grid file: `[[variant]]` tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    pub variant: Vec<Variant>,
}

/// One row of the ablation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Variant {
    /// Row name and sub-directory of the run directory (letters, digits, `-`, `_`).
    pub name: String,
    /// Config overrides applied on top of the base config and the command line's.
    #[serde(default)]
    pub set: Vec<String>,
    /// Evaluate the encoder as initialised by the seed, without training.
    #[serde(default)]
    pub random_init: bool,
}

impl Grid {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let grid: Grid = toml::from_str(&text).map_err(|e| Error::ConfigParse { path: path.to_path_buf(), message: e.to_string() })?;
        let mut seen = std::collections::HashSet::new();
        for v in &grid.variant {
            if v.name.is_empty() || !v.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(Error::config(format!("variant.name = {:?}", v.name), "use letters, digits, - and _ only"));
            }
            if !seen.insert(v.name.clone()) {
                return Err(Error::config(format!("variant.name = {:?}", v.name), "appears twice"));
            }
        }
        if grid.variant.is_empty() {
            return Err(Error::config("variant", format!("{} lists no [[variant]]", path.display())));
        }
        Ok(grid)
    }
}

/// The result of one variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
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
    /// Seconds of this variant's last invocation (training and evaluation).
    pub wall_seconds: f64,
    /// The same training alone, as a `byol pretrain` command (for a random-init row: the command
    /// whose random-init baseline line is this row).
    pub command: String,
    /// (step, loss) of every logged step.
    pub losses: Vec<(u64, f64)>,
    /// The resolved config of the variant (TOML): a rerun reuses this row only if the variant
    /// resolves to the same config.
    #[serde(default)]
    pub config: String,
}

/// Quote a shell word when it needs it.
fn shell_word(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:".contains(c)) { s.to_string() } else { format!("'{}'", s.replace('\'', "'\\''")) }
}

fn read_metrics(dir: &Path) -> (Vec<(u64, f64)>, Option<f64>) {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    let mut losses = Vec::new();
    let mut std = None;
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if let (Some(s), Some(l)) = (v["step"].as_u64(), v["loss"].as_f64()) {
                losses.push((s, l));
            }
            std = v["projection_std"].as_f64().or(std);
        }
    }
    (losses, std)
}

/// Run every variant of `grid` over the base config `base` (a preset or file) with
/// `overrides`, in sub-directories of `dir`; write `ablation.md`, `ablation.json` and
/// `ablation.png` there. Returns the rows in the grid's order.
pub fn ablate(base: &str, overrides: &[String], grid: &Grid, dir: &Path, linear: bool, obs: &mut dyn Observer) -> Result<Vec<Row>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // Resolve every variant's config first, so that a bad one fails before any training.
    let mut configs = Vec::new();
    for v in &grid.variant {
        let all: Vec<String> = overrides.iter().chain(&v.set).cloned().collect();
        configs.push((ExperimentConfig::load(base, &all)?, all));
    }
    let mut rows = Vec::new();
    for (v, (cfg, all)) in grid.variant.iter().zip(configs) {
        let vdir = dir.join(&v.name);
        let row_path = vdir.join("ablation-row.json");
        let resolved = cfg.to_toml();
        if let Ok(text) = std::fs::read_to_string(&row_path) {
            if let Ok(row) = serde_json::from_str::<Row>(&text) {
                if row.config != resolved || row.random_init != v.random_init {
                    return Err(Error::data(
                        &vdir,
                        format!(
                            "variant `{}` was run with another config or kind; its result would be stale. Remove {} to rerun it, or use another directory",
                            v.name,
                            vdir.display()
                        ),
                    ));
                }
                if !linear || row.linear_top1.is_some() {
                    obs.on_message(&format!("{}: already done ({:.2}% kNN), skipped", v.name, 100.0 * row.knn_top1));
                    rows.push(row);
                    continue;
                }
            }
        }
        obs.on_message(&format!("{}: {}", v.name, if v.random_init { "random-init encoder".to_string() } else { all.join(" ") }));
        let started = Instant::now();
        let device = cfg.backend.device()?;
        let healthy_std = 1.0 / (cfg.model.projector.output as f64).sqrt();
        let mut command = format!("byol pretrain --config {}", shell_word(base));
        for o in &all {
            command.push_str(&format!(" --set {}", shell_word(o)));
        }
        let (encoder, steps, knn, splits) = if v.random_init {
            let splits = data::load(&cfg.data, cfg.seed)?;
            let encoder = random_init_encoder(&cfg, &device);
            let knn = knn_of_encoder(&encoder, &cfg, &splits.train, &splits.test, &device)?;
            (encoder, 0, knn, Some(splits))
        } else {
            let resume = !checkpoint::list(&vdir).is_empty();
            let report = pretrain(&cfg, &vdir, &RunOptions { resume, compare_random: false, max_steps: None }, obs)?;
            let knn = report.knn.ok_or_else(|| Error::data(&vdir, "the run ended without an evaluation"))?;
            let (loaded, _) = checkpoint::read_latest(&vdir)?;
            let encoder = loaded.online(&device)?.encoder;
            (encoder, report.steps, knn, None)
        };
        let linear_top1 = if linear {
            obs.on_message(&format!("{}: linear evaluation", v.name));
            let splits = match splits {
                Some(s) => s,
                None => data::load(&cfg.data, cfg.seed)?,
            };
            Some(linear_of_encoder(&encoder, &cfg, &splits.train, &splits.test, &device)?.test.top1)
        } else {
            None
        };
        let (losses, projection_std) = read_metrics(&vdir);
        let row = Row {
            name: v.name.clone(),
            overrides: v.set.clone(),
            random_init: v.random_init,
            steps,
            knn_top1: knn.top1,
            knn_top5: knn.top5,
            linear_top1,
            final_loss: losses.last().map(|l| l.1),
            projection_std,
            healthy_std,
            collapsed: projection_std.map(|s| s < cfg.train.collapse_fraction * healthy_std),
            wall_seconds: started.elapsed().as_secs_f64(),
            command,
            losses,
            config: resolved,
        };
        std::fs::create_dir_all(&vdir).map_err(|e| Error::io(&vdir, e))?;
        checkpoint::write_atomic(&row_path, serde_json::to_string_pretty(&row).expect("json").as_bytes())?;
        rows.push(row);
        write_reports(dir, &rows)?;
    }
    write_reports(dir, &rows)?;
    Ok(rows)
}

/// `ablation.md`, `ablation.json` and `ablation.png` of the rows so far.
pub fn write_reports(dir: &Path, rows: &[Row]) -> Result<()> {
    let pct = |v: f64| format!("{:.2}", 100.0 * v);
    let mut md = String::from(
        "| variant | kNN top-1 % | kNN top-5 % | linear top-1 % | final loss | projection std (healthy) | collapsed | steps | wall s |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            r.name,
            pct(r.knn_top1),
            pct(r.knn_top5),
            r.linear_top1.map_or("–".into(), pct),
            r.final_loss.map_or("–".into(), |l| format!("{l:.4}")),
            r.projection_std.map_or("–".into(), |s| format!("{s:.4} ({:.4})", r.healthy_std)),
            r.collapsed.map_or("–", |c| if c { "yes" } else { "no" }),
            r.steps,
            r.wall_seconds
        ));
    }
    md.push_str("\nCommands (each row alone):\n\n");
    for r in rows {
        if r.random_init {
            md.push_str(&format!("- {}: the random-init baseline printed by `{}`\n", r.name, r.command));
        } else {
            md.push_str(&format!("- {}: `{}`\n", r.name, r.command));
        }
    }
    let write = |name: &str, bytes: &[u8]| checkpoint::write_atomic(&dir.join(name), bytes);
    write("ablation.md", md.as_bytes())?;
    write("ablation.json", serde_json::to_string_pretty(rows).expect("json").as_bytes())?;
    crate::augment::preview::write_png(&chart(rows), &dir.join("ablation.png"))
}

/// Bars of kNN top-1 per variant, then one small loss-curve panel per trained variant.
pub fn chart(rows: &[Row]) -> crate::augment::Rgb8 {
    let (w, s) = (960i64, 2i64);
    let bar_h = 28i64;
    let top = 40 + rows.len() as i64 * (bar_h + 8) + 20;
    let trained: Vec<(usize, &Row)> = rows.iter().enumerate().filter(|(_, r)| !r.losses.is_empty()).collect();
    let (cols, pw, ph) = (3i64, 300i64, 170i64);
    let panel_rows = (trained.len() as i64 + cols - 1) / cols;
    let h = top + 30 + panel_rows * (ph + 50) + 10;
    let mut c = Canvas::new(w as usize, h as usize);
    c.text(10, 10, "knn top-1 % (same seed, same budget)", s, BLACK);
    let label_w = 200i64;
    let max_acc = rows.iter().map(|r| r.knn_top1).fold(0.0, f64::max).max(1e-9);
    for (i, r) in rows.iter().enumerate() {
        let y = 40 + i as i64 * (bar_h + 8);
        c.text(10, y + 8, &r.name, s, BLACK);
        let len = ((r.knn_top1 / max_acc) * (w - label_w - 120) as f64).round() as i64;
        c.rect(label_w, y, len.max(1), bar_h, PALETTE[i % PALETTE.len()]);
        let mut label = format!("{:.2}%", 100.0 * r.knn_top1);
        if r.collapsed == Some(true) {
            label.push_str(" collapsed");
        }
        c.text(label_w + len + 8, y + 8, &label, s, BLACK);
    }
    c.text(10, top, "training loss per variant (own scale)", s, BLACK);
    for (k, &(i, r)) in trained.iter().enumerate() {
        let (col, row) = (k as i64 % cols, k as i64 / cols);
        let (x, y) = (10 + col * (pw + 15), top + 30 + row * (ph + 50));
        c.text(x, y, &r.name, s, BLACK);
        let frame = (x, y + 16, pw, ph);
        c.rect(frame.0, frame.1, pw, 1, GREY);
        c.rect(frame.0, frame.1 + ph - 1, pw, 1, GREY);
        c.rect(frame.0, frame.1, 1, ph, GREY);
        c.rect(frame.0 + pw - 1, frame.1, 1, ph, GREY);
        let xs: Vec<f64> = r.losses.iter().map(|l| l.0 as f64).collect();
        let ys: Vec<f64> = r.losses.iter().map(|l| l.1).collect();
        let lo = ys.iter().copied().filter(|v| v.is_finite()).fold(f64::INFINITY, f64::min);
        let hi = ys.iter().copied().filter(|v| v.is_finite()).fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() && hi.is_finite() {
            polyline(&mut c, frame, &xs, &ys, (lo, hi), PALETTE[i % PALETTE.len()]);
            c.text(x + 4, y + 20, &format!("{hi:.3}"), s, BLACK);
            c.text(x + 4, y + 16 + ph - 14, &format!("{lo:.3}"), s, BLACK);
            let steps = format!("{} steps", xs.last().copied().unwrap_or(0.0));
            c.text(x + pw - Canvas::text_width(&steps, s) - 4, y + 16 + ph - 14, &steps, s, BLACK);
        }
    }
    c.into_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_names_are_checked() {
        let dir = std::env::temp_dir().join(format!("byol-grid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("g.toml");
        std::fs::write(&p, "[[variant]]\nname = \"a b\"\n").unwrap();
        assert!(Grid::load(&p).unwrap_err().to_string().contains("letters"));
        std::fs::write(&p, "[[variant]]\nname = \"a\"\n[[variant]]\nname = \"a\"\n").unwrap();
        assert!(Grid::load(&p).unwrap_err().to_string().contains("twice"));
        std::fs::write(&p, "[[variant]]\nname = \"a\"\nsett = []\n").unwrap();
        assert!(Grid::load(&p).unwrap_err().to_string().contains("sett"));
        std::fs::write(&p, "[[variant]]\nname = \"a\"\nset = [\"seed=1\"]\n").unwrap();
        assert_eq!(Grid::load(&p).unwrap().variant[0].set, vec!["seed=1".to_string()]);
    }
}
