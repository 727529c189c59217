//! PNG charts of the binary's reports, drawn with `plotters`: the curves of one pre-training run
//! (`curves.png` in its run directory) and an ablation's accuracies and losses (`ablation.png`).
//! Text is DejaVu Sans, embedded, so a chart needs no system font.

mod ablation;
mod curves;
mod embedding;

pub use ablation::ablation;
pub use curves::run_curves;
pub use embedding::embedding;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
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
