//! `byol ablate`: a grid of variants over seeds, its table and chart.

use crate::args::*;
use crate::progress::Bar;
use anyhow::{Context, Result};
use std::path::PathBuf;

pub(crate) fn ablate(args: AblateArgs) -> Result<()> {
    let grid = byol::ablate::Grid::load(&args.grid)?;
    let stem = args
        .grid
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("grid");
    let dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/ablate-{stem}")));
    eprintln!(
        "ablation directory: {} ({} variants)",
        dir.display(),
        grid.variant.len()
    );
    let mut bar = Bar::new();
    let options = byol::ablate::AblationOptions {
        seeds: args.seeds.clone(),
        linear: args.linear,
    };
    let a = byol::ablate::ablate(
        &args.config.config,
        &args.config.settings(),
        &grid,
        &dir,
        &options,
        &mut bar,
    )?;
    bar.pb.finish_and_clear();
    let png = dir.join("ablation.png");
    crate::chart::ablation(&a, &png).with_context(|| format!("writing {}", png.display()))?;
    for r in a.runs.iter().filter(|r| !r.random_init) {
        let run = byol::ablate::run_dir(&dir, &r.name, r.seed);
        let png = run.join(byol::train::run_dir::CURVES);
        crate::chart::run_curves(&run, &png)
            .with_context(|| format!("writing {}", png.display()))?;
    }
    print!("{}", std::fs::read_to_string(dir.join("ablation.md"))?);
    println!(
        "\n{} variants, {} runs; table (ablation.md), JSON and chart (ablation.png) in {}",
        a.summary.len(),
        a.runs.len(),
        dir.display()
    );
    Ok(())
}
