//! `ablation.png`: an ablation's accuracies by variant, with the seeds, and each variant's
//! difference from its reference beside the paper's.

use super::*;
use anyhow::Result;
use byol::ablate::Ablation;
use plotters::coord::ranged1d::SegmentedCoord;
use plotters::coord::types::RangedCoordi32;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// The colour of each variant of `a`: one per method, a method being a variant and those
/// `relative-to` it (BYOL's rows in one colour, SimCLR's in another), so that a grid of more
/// variants than colours still tells its methods apart.
fn method_colours(a: &Ablation) -> Vec<RGBColor> {
    let base =
        |s: &byol::ablate::Summary| s.relative.as_ref().map_or(s.name.clone(), |r| r.to.clone());
    let mut methods: Vec<String> = Vec::new();
    a.summary
        .iter()
        .map(|s| {
            let m = base(s);
            let k = methods.iter().position(|x| *x == m).unwrap_or_else(|| {
                methods.push(m);
                methods.len() - 1
            });
            colour(k)
        })
        .collect()
}

/// kNN top-1 per variant (bar: mean over seeds; dots: each seed); when variants are
/// `relative-to` others, their differences (bar: mean; dots: each seed, paired by seed); when
/// runs were evaluated along the way, kNN top-1 against the step for every run, the random-init
/// encoders' level as a line; then one panel of training loss per trained variant (one line per
/// seed).
pub fn ablation(a: &Ablation, out: &Path) -> Result<()> {
    register_font();
    let n = a.summary.len();
    let trained: Vec<_> = a.summary.iter().filter(|s| !s.random_init).collect();
    let relative: Vec<_> = a.summary.iter().filter(|s| s.relative.is_some()).collect();
    let along = knn_along_training(a);
    let cols = 3usize;
    let panel_rows = trained.len().div_ceil(cols);
    let bars_h = 90 + 34 * n as u32;
    let delta_h = if relative.is_empty() {
        0
    } else {
        90 + 34 * relative.len() as u32
    };
    let along_h = if along.is_empty() { 0 } else { 380 };
    let height = bars_h + delta_h + along_h + 260 * panel_rows as u32;
    let root = BitMapBackend::new(out, (1200, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(bars_h);
    let (deltas, bottom) = bottom.split_vertically(delta_h);
    if !relative.is_empty() {
        delta_bars(a, &relative, &deltas)?;
    }
    let (along_area, bottom) = bottom.split_vertically(along_h);
    if !along.is_empty() {
        line_panel(
            &along_area,
            "kNN top-1 on the test set along training",
            "step",
            "kNN top-1 %",
            &along,
        )?;
    }
    let all_top1 = a.runs.iter().map(|r| 100.0 * r.knn_top1);
    let (_, hi) = range(all_top1).ok_or_else(|| anyhow!("the ablation has no runs"))?;
    // Bars start at 0: a cut axis makes small differences look large.
    let lo = 0.0;
    let names: Vec<String> = a.summary.iter().map(|s| s.name.clone()).collect();
    let seeds = a.summary.iter().map(|s| s.seeds.len()).max().unwrap_or(1);
    let rows = bar_rows(n);
    let caption = format!(
        "kNN top-1 on the test set (bar: mean of {seeds} seed(s); dots: each seed) — base {}",
        a.base
    );
    let mut chart = bar_chart(&top, &caption, lo..hi.ceil(), "kNN top-1 %", &names, 210)?;
    let colours = method_colours(a);
    for (i, s) in a.summary.iter().enumerate() {
        let c = colours[i];
        let y = (rows - 1 - i) as i32; // the grid's first variant at the top
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [
                    (lo, SegmentValue::Exact(y)),
                    (100.0 * s.knn_top1.mean, SegmentValue::Exact(y + 1)),
                ],
                c.mix(0.6).filled(),
            )))
            .map_err(err)?;
        let dots = a.runs.iter().filter(|r| r.name == s.name).map(|r| {
            Circle::new(
                (100.0 * r.knn_top1, SegmentValue::CenterOf(y)),
                4,
                BLACK.filled(),
            )
        });
        chart.draw_series(dots).map_err(err)?;
        let mut label = format!("{:.2}", 100.0 * s.knn_top1.mean);
        if s.seeds.len() > 1 {
            label.push_str(&format!(" ± {:.2}", 100.0 * s.knn_top1.std));
        }
        if let Some(c) = s.collapsed.filter(|&c| c > 0) {
            label.push_str(&format!("  collapsed in {c} of {}", s.seeds.len()));
        }
        chart
            .draw_series(std::iter::once(Text::new(
                label,
                (lo + 0.01 * (hi - lo), SegmentValue::CenterOf(y)),
                (FONT, 13),
            )))
            .map_err(err)?;
    }
    if !trained.is_empty() {
        let panels = bottom.split_evenly((panel_rows, cols));
        for (s, panel) in trained.iter().zip(panels.iter()) {
            let series: Vec<(String, Vec<(f64, f64)>)> = a
                .runs
                .iter()
                .filter(|r| r.name == s.name)
                .map(|r| {
                    (
                        format!("seed {}", r.seed),
                        r.losses.iter().map(|&(x, y)| (x as f64, y)).collect(),
                    )
                })
                .collect();
            line_panel(
                panel,
                &format!("{}: training loss", s.name),
                "step",
                "loss",
                &series,
            )?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// The series of the kNN-along-training panel: (step, kNN top-1 %) of every trained run evaluated
/// more than once, and each random-init variant's mean level as a line over the same steps; none
/// when no run was evaluated along the way.
fn knn_along_training(a: &Ablation) -> Vec<(String, Vec<(f64, f64)>)> {
    let seeds = a.summary.iter().map(|s| s.seeds.len()).max().unwrap_or(1);
    let mut series: Vec<(String, Vec<(f64, f64)>)> = a
        .runs
        .iter()
        .filter(|r| !r.random_init && r.evals.len() > 1)
        .map(|r| {
            let label = if seeds > 1 {
                format!("{} (seed {})", r.name, r.seed)
            } else {
                r.name.clone()
            };
            let points = r.evals.iter().map(|&(s, t)| (s as f64, 100.0 * t));
            (label, points.collect())
        })
        .collect();
    if series.is_empty() {
        return series;
    }
    let last = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    for s in a.summary.iter().filter(|s| s.random_init) {
        let level = 100.0 * s.knn_top1.mean;
        series.push((s.name.clone(), vec![(0.0, level), (last, level)]));
    }
    series
}

/// A horizontal bar chart's frame on `area`: x over `x`, one row per name (the first at the top,
/// [`bar_rows`] of them), the names as the y labels in a margin `label_width` wide.
fn bar_chart<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    caption: &str,
    x: std::ops::Range<f64>,
    x_desc: &str,
    names: &[String],
    label_width: u32,
) -> Result<
    ChartContext<
        'a,
        BitMapBackend<'b>,
        Cartesian2d<RangedCoordf64, SegmentedCoord<RangedCoordi32>>,
    >,
> {
    let rows = bar_rows(names.len());
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(label_width)
        .build_cartesian_2d(x, (0..rows as i32 - 1).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_desc(x_desc)
        .y_labels(rows)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names
                .get(rows.wrapping_sub(1 + *i as usize))
                .cloned()
                .unwrap_or_default(),
            _ => String::new(),
        })
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// The rows of a bar chart of `n` bars: plotters maps a one-value axis (0..0) onto nothing, so a
/// single bar takes the top one of two rows.
fn bar_rows(n: usize) -> usize {
    n.max(2)
}

/// Each variant's kNN top-1 minus its `relative-to` variant's, in points: a bar from 0 to the mean
/// over the seeds, a dot per seed (the difference of the two runs of that seed).
fn delta_bars(
    a: &Ablation,
    relative: &[&byol::ablate::Summary],
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
) -> Result<()> {
    let n = relative.len();
    let per_seed = |s: &byol::ablate::Summary, to: &str| -> Vec<f64> {
        let rows: Vec<_> = a.runs.iter().filter(|r| r.name == s.name).collect();
        byol::ablate::paired_differences(&a.runs, &rows, to)
            .into_iter()
            .map(|d| 100.0 * d)
            .collect()
    };
    let all = relative
        .iter()
        .flat_map(|s| per_seed(s, &s.relative.as_ref().expect("relative").to));
    let paper = |s: &byol::ablate::Summary| s.relative.as_ref().and_then(|r| r.paper_delta);
    let papers: Vec<f64> = relative.iter().filter_map(|s| paper(s)).collect();
    let (lo, hi) = range(all.chain(papers.iter().copied()).chain([0.0]))
        .ok_or_else(|| anyhow!("no differences to draw"))?;
    // Room beyond the bars and dots on each side for the labels.
    let pad = 0.18 * (hi - lo).max(1.0);
    let (lo, hi) = (
        lo.min(-0.5) - if lo < 0.0 { pad } else { 0.0 },
        hi.max(0.5) + pad,
    );
    let names: Vec<String> = relative
        .iter()
        .map(|s| format!("{} − {}", s.name, s.relative.as_ref().expect("relative").to))
        .collect();
    let rows = bar_rows(n);
    let caption = if papers.is_empty() {
        "difference in kNN top-1 from the variant each is relative to (bar: mean; dots: each seed)"
    } else {
        "difference in kNN top-1 from the variant each is relative to (bar: mean; dots: each seed; ×: the paper's)"
    };
    let mut chart = bar_chart(area, caption, lo..hi, "Δ kNN top-1 (points)", &names, 330)?;
    let colours = method_colours(a);
    for (i, s) in relative.iter().enumerate() {
        let y = (rows - 1 - i) as i32;
        let rel = s.relative.as_ref().expect("relative");
        let c = a
            .summary
            .iter()
            .position(|o| o.name == s.name)
            .map_or(colour(i), |k| colours[k]);
        let mean = 100.0 * rel.knn_top1_delta.mean;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(y)),
                    (mean, SegmentValue::Exact(y + 1)),
                ],
                c.mix(0.6).filled(),
            )))
            .map_err(err)?;
        let seeds = per_seed(s, &rel.to);
        let dots = seeds
            .iter()
            .map(|&d| Circle::new((d, SegmentValue::CenterOf(y)), 4, BLACK.filled()));
        chart.draw_series(dots).map_err(err)?;
        if let Some(p) = rel.paper_delta {
            chart
                .draw_series(std::iter::once(Cross::new(
                    (p, SegmentValue::CenterOf(y)),
                    7,
                    RGBColor(213, 0, 0).stroke_width(3),
                )))
                .map_err(err)?;
        }
        let seeds: Vec<f64> = seeds.into_iter().chain(rel.paper_delta).collect();
        // The label beyond the bar and every dot, on the side the bar points to.
        let label = format!("{mean:+.2}");
        let gap = 0.01 * (hi - lo);
        let style = TextStyle::from((FONT, 13).into_font()).color(&BLACK);
        let (at, style) = if mean >= 0.0 {
            (
                seeds.iter().copied().fold(mean, f64::max) + gap,
                style.pos(Pos::new(HPos::Left, VPos::Center)),
            )
        } else {
            (
                seeds.iter().copied().fold(mean, f64::min) - gap,
                style.pos(Pos::new(HPos::Right, VPos::Center)),
            )
        };
        chart
            .draw_series(std::iter::once(Text::new(
                label,
                (at, SegmentValue::CenterOf(y)),
                style,
            )))
            .map_err(err)?;
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![
                (0.0, SegmentValue::Exact(0)),
                (0.0, SegmentValue::Exact(rows as i32)),
            ],
            BLACK,
        )))
        .map_err(err)?;
    Ok(())
}
