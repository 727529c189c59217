//! `curves.png`: the curves of one pre-training run.

use super::*;
use anyhow::Result;
use std::path::Path;

/// The curves of a run directory: training loss, learning rate, τ and the projections' std per
/// step (`metrics.jsonl`), kNN top-1 per evaluation (`evals.jsonl`) beside the random-init
/// encoder's as a flat reference line (`eval.json`, when it was measured), and the online linear
/// probe's test and training top-1 per epoch (`probe.jsonl`, when the probe ran).
pub fn run_curves(run_dir: &Path, out: &Path) -> Result<()> {
    use byol::train::run_dir::{read_evals, read_metrics, read_probes, read_report};
    register_font();
    let metrics = read_metrics(run_dir)?;
    let col = |f: fn(&byol::train::StepLog) -> f64| {
        metrics
            .iter()
            .map(|m| (m.step as f64, f(m)))
            .collect::<Vec<_>>()
    };
    let (loss, lr, tau, std) = (
        col(|m| m.loss),
        col(|m| m.lr),
        col(|m| m.tau),
        col(|m| m.projection_std),
    );
    let knn: Vec<(f64, f64)> = read_evals(run_dir)?
        .iter()
        .map(|e| (e.step as f64, 100.0 * e.knn.top1))
        .collect();
    let mut knn_series = vec![("trained encoder".to_string(), knn.clone())];
    if let Some(r) = read_report(run_dir)?.and_then(|r| r.random_init_knn) {
        let last = knn.iter().chain(&loss).map(|p| p.0).fold(1.0, f64::max);
        knn_series.push((
            "random-init encoder".to_string(),
            vec![(0.0, 100.0 * r.top1), (last, 100.0 * r.top1)],
        ));
    }
    let probes = read_probes(run_dir)?;
    let probe_series = vec![
        (
            "test split".to_string(),
            probes
                .iter()
                .map(|p| (p.step as f64, 100.0 * p.test_top1))
                .collect(),
        ),
        (
            "training views".to_string(),
            probes
                .iter()
                .map(|p| (p.step as f64, 100.0 * p.train_top1))
                .collect(),
        ),
    ];
    let root = BitMapBackend::new(out, (1200, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((2, 3));
    let one = |label: &str, p: Vec<(f64, f64)>| vec![(label.to_string(), p)];
    line_panel(
        &panels[0],
        "training loss",
        "step",
        "loss",
        &one("loss", loss),
    )?;
    line_panel(
        &panels[1],
        "kNN top-1 (test set)",
        "step",
        "top-1 %",
        &knn_series,
    )?;
    line_panel(
        &panels[2],
        "projection std (collapse → 0)",
        "step",
        "std",
        &one("std", std),
    )?;
    line_panel(&panels[3], "learning rate", "step", "lr", &one("lr", lr))?;
    line_panel(
        &panels[4],
        "target decay rate τ",
        "step",
        "τ",
        &one("tau", tau),
    )?;
    if !probes.is_empty() {
        line_panel(
            &panels[5],
            "online linear probe top-1 (a monitor)",
            "step",
            "top-1 %",
            &probe_series,
        )?;
    }
    root.present().map_err(err)?;
    Ok(())
}
