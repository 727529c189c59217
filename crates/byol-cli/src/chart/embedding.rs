//! The t-SNE map of `byol embed --plot`.

use super::*;
use anyhow::{Context, Result};
use std::path::Path;

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
