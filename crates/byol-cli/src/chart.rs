//! PNG charts of the binary's reports, drawn with `plotters`: the curves of one pre-training run
//! (`curves.png` in its run directory) and an ablation's accuracies and losses (`ablation.png`).
//! Text is DejaVu Sans, embedded, so a chart needs no system font.

use anyhow::{Context, Result, anyhow};
use byol::ablate::Ablation;
use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentedCoord;
use plotters::coord::types::{RangedCoordf64, RangedCoordi32};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;
use std::sync::Once;

const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_err()
        {
            unreachable!("the embedded DejaVu Sans is a valid font");
        }
    });
}

/// Okabe–Ito colours, distinguishable with the common colour-vision deficiencies.
const COLOURS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(0, 0, 0),
];

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

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

/// Plotters' errors carry the backend's error type; keep their text.
fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

/// (min, max) of the finite values, widened by 5 % (or ±1 % of the value for a constant).
fn range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return None;
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        0.01 * lo.abs().max(1e-6)
    };
    Some((lo - pad, hi + pad))
}

/// The corner of a panel (x from 0 to `x1`, y over `y`) that the fewest points fall in, for
/// the legend: a third of the width by a third of the height.
fn emptiest_corner(
    series: &[(String, Vec<(f64, f64)>)],
    x1: f64,
    y: (f64, f64),
) -> SeriesLabelPosition {
    let points = || series.iter().flat_map(|s| s.1.iter());
    let count = |right: bool, top: bool| {
        points()
            .filter(|p| {
                if right {
                    p.0 > 2.0 * x1 / 3.0
                } else {
                    p.0 < x1 / 3.0
                }
            })
            .filter(|p| {
                if top {
                    p.1 > y.1 - (y.1 - y.0) / 3.0
                } else {
                    p.1 < y.0 + (y.1 - y.0) / 3.0
                }
            })
            .count()
    };
    let corners = [
        (SeriesLabelPosition::UpperRight, count(true, true)),
        (SeriesLabelPosition::UpperLeft, count(false, true)),
        (SeriesLabelPosition::LowerRight, count(true, false)),
        (SeriesLabelPosition::LowerLeft, count(false, false)),
    ];
    corners
        .into_iter()
        .min_by_key(|c| c.1)
        .map(|c| c.0)
        .expect("four corners")
}

/// One line panel: `series` are (label, points); the legend shows the labels when there are
/// several.
fn line_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let Some((y0, y1)) = range(series.iter().flat_map(|s| s.1.iter().map(|p| p.1))) else {
        return Ok(());
    };
    let x1 = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(62)
        .build_cartesian_2d(0.0..1.03 * x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for (i, (label, points)) in series.iter().enumerate() {
        let c = colour(i);
        if points.len() <= 25 {
            // Sparse measurements (evaluations, epochs) get a marker each: a lone point, or several at one step, stay visible.
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(err)?;
        }
        let s = chart
            .draw_series(LineSeries::new(
                points.iter().copied().filter(|p| p.1.is_finite()),
                c.stroke_width(2),
            ))
            .map_err(err)?;
        if series.len() > 1 {
            s.label(label.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
            });
        }
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .position(emptiest_corner(series, x1, (y0, y1)))
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

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

/// kNN top-1 per variant (bar: mean over seeds; dots: each seed); when variants are
/// `relative-to` others, their differences (bar: mean; dots: each seed, paired by seed); then one
/// panel of training loss per trained variant (one line per seed).
pub fn ablation(a: &Ablation, out: &Path) -> Result<()> {
    register_font();
    let n = a.summary.len();
    let trained: Vec<_> = a.summary.iter().filter(|s| !s.random_init).collect();
    let relative: Vec<_> = a.summary.iter().filter(|s| s.relative.is_some()).collect();
    let cols = 3usize;
    let panel_rows = trained.len().div_ceil(cols);
    let bars_h = 90 + 34 * n as u32;
    let delta_h = if relative.is_empty() {
        0
    } else {
        90 + 34 * relative.len() as u32
    };
    let root = BitMapBackend::new(out, (1200, bars_h + delta_h + 260 * panel_rows as u32))
        .into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(bars_h);
    let (deltas, bottom) = bottom.split_vertically(delta_h);
    if !relative.is_empty() {
        delta_bars(a, &relative, &deltas)?;
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

/// matplotlib's `tab10`, for up to ten classes (more reuse them).
const TAB10: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A scatter plot of 2-D `points`, coloured by `labels` (indices into `classes`), with the
/// legend beside it.
pub fn embedding(
    points: &[[f32; 2]],
    labels: &[usize],
    classes: &[String],
    title: &str,
    out: &Path,
) -> Result<()> {
    register_font();
    let root = BitMapBackend::new(out, (1150, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, (FONT, 22)).map_err(err)?;
    let (plot, legend) = root.split_horizontally(900);
    let (xr, yr) = (
        range(points.iter().map(|p| f64::from(p[0]))).context("no finite point")?,
        range(points.iter().map(|p| f64::from(p[1]))).context("no finite point")?,
    );
    let mut chart = ChartBuilder::on(&plot)
        .margin(15)
        .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .disable_y_axis()
        .draw()
        .map_err(err)?;
    for (c, name) in classes.iter().enumerate() {
        let colour = TAB10[c % TAB10.len()];
        let pts = points
            .iter()
            .zip(labels)
            .filter(|(_, l)| **l == c)
            .map(|(p, _)| (f64::from(p[0]), f64::from(p[1])));
        chart
            .draw_series(pts.map(|p| Circle::new(p, 3, colour.mix(0.75).filled())))
            .map_err(err)?;
        let y = 30 + 28 * c as i32;
        legend
            .draw(&Circle::new((20, y), 6, colour.filled()))
            .map_err(err)?;
        legend
            .draw(&Text::new(name.as_str(), (36, y - 9), (FONT, 18)))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
