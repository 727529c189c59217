//! The ablation runner behind `byol ablate`: a list of variants of one base config, each trained
//! at each of a list of seeds with the same budget through the same code, evaluated with the kNN
//! protocol (and linear evaluation when asked), reported per run and per variant (mean, spread)
//! as a Markdown table and a JSON file. A run whose result is already recorded is read back, and
//! one that was interrupted resumes from its last checkpoint.

use crate::config::ExperimentConfig;
use crate::train::{
    Observer, RunDir, RunOptions, checkpoint, knn_of_encoder, linear_of_encoder, pretrain_in,
    random_init_encoder,
};
use crate::workflow::Settings;
use crate::{Error, Result, data};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod summary;

pub use summary::{
    Ablation, Relative, Row, Spread, Summary, paired_differences, summarise, write_reports,
};

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
    /// Another variant of the grid this one is compared with: the table adds its kNN top-1
    /// minus that variant's, seed by seed (the paper's Figure 3: the drop from "all views").
    #[serde(default)]
    pub relative_to: Option<String>,
    /// The published change of this variant from the one it is `relative-to`, in points (e.g.
    /// the spec's Figure 3(a): BYOL −2.2 at batch 128 from 256): the table and the chart show it
    /// beside ours. Needs `relative-to`.
    #[serde(default)]
    pub paper_delta: Option<f64>,
}

impl Grid {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let grid: Grid = toml::from_str(&text).map_err(|e| Error::ConfigParse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut seen = std::collections::HashSet::new();
        for v in &grid.variant {
            if v.name.is_empty()
                || !v
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Error::config(
                    format!("variant.name = {:?}", v.name),
                    "use letters, digits, - and _ only",
                ));
            }
            if !seen.insert(v.name.clone()) {
                return Err(Error::config(
                    format!("variant.name = {:?}", v.name),
                    "appears twice",
                ));
            }
        }
        if grid.variant.is_empty() {
            return Err(Error::config(
                "variant",
                format!("{} lists no [[variant]]", path.display()),
            ));
        }
        for v in &grid.variant {
            if let Some(r) = &v.relative_to
                && (r == &v.name || !seen.contains(r))
            {
                return Err(Error::config(
                    format!("variant {:?}: relative-to = {r:?}", v.name),
                    "must name another variant of the grid",
                ));
            }
            if v.paper_delta.is_some() && v.relative_to.is_none() {
                return Err(Error::config(
                    format!("variant {:?}: paper-delta", v.name),
                    "is a change from another variant: give `relative-to` too",
                ));
            }
        }
        Ok(grid)
    }
}

/// Where the run of `variant` at `seed` lives in an ablation directory.
pub fn run_dir(dir: &Path, variant: &str, seed: u64) -> PathBuf {
    dir.join(variant).join(format!("seed-{seed}"))
}

/// What to run besides the grid.
#[derive(Debug, Clone, Default)]
pub struct AblationOptions {
    /// The seeds each variant runs with; empty: the config's own seed only.
    pub seeds: Vec<u64>,
    /// Also run the linear evaluation of each run.
    pub linear: bool,
}

/// `e`, a variant's config error, saying which variant: a grid's `set` lists look alike.
fn in_variant(e: Error, name: &str) -> Error {
    match e {
        Error::Config { field, message } => Error::Config {
            field: format!("{field}` of variant `{name}"),
            message,
        },
        Error::ConfigParse { path, message } => Error::ConfigParse {
            path,
            message: format!("variant `{name}`: {message}"),
        },
        other => other,
    }
}

/// The seeds every variant runs with: the options' list, or the config's own seed. A seed given
/// twice would be read back as a second run of itself (a spread of zero over copies, counted as
/// two seeds): refused.
fn seeds_of(base: &str, settings: &Settings, options: &AblationOptions) -> Result<Vec<u64>> {
    let seeds = if options.seeds.is_empty() {
        vec![settings.resolve(base)?.seed]
    } else {
        options.seeds.clone()
    };
    match seeds
        .iter()
        .enumerate()
        .find(|(i, s)| seeds[..*i].contains(s))
    {
        Some((_, twice)) => Err(Error::config(
            format!("seeds = {seeds:?}"),
            format!("seed {twice} appears twice"),
        )),
        None => Ok(seeds),
    }
}

/// Run every variant of `grid` at every seed over the base config `base` (a preset or file)
/// with `settings` (a variant's `set` comes after the settings' own, the seed last), each in
/// `dir/<variant>/seed-<seed>`; write `ablation.md` and `ablation.json` into `dir` after each
/// run. A run whose row is recorded with the same resolved config is read back, not rerun; one
/// recorded with another config is an error.
pub fn ablate(
    base: &str,
    settings: &Settings,
    grid: &Grid,
    dir: &Path,
    options: &AblationOptions,
    obs: &mut dyn Observer,
) -> Result<Ablation> {
    // Held to the end: one `byol ablate` at a time writes the tables of `dir`; each run's own
    // directory is held while it runs.
    let _ablation = RunDir::lock(dir)?;
    let seeds = seeds_of(base, settings, options)?;
    // Resolve every run's config first, so that a bad one fails before any training.
    let mut plan = Vec::new();
    for v in &grid.variant {
        for &seed in &seeds {
            let mut run = settings.clone();
            run.set.extend(v.set.iter().cloned());
            run.seed = Some(seed);
            plan.push((
                v,
                seed,
                run.resolve(base).map_err(|e| in_variant(e, &v.name))?,
            ));
        }
    }
    let described = settings.describe();
    let mut runs = Vec::new();
    for (v, seed, cfg) in plan {
        let vdir = run_dir(dir, &v.name, seed);
        if let Some(row) = reusable_row(v, seed, &cfg, &vdir, options, obs)? {
            runs.push(row);
            continue;
        }
        runs.push(run_variant(v, seed, &cfg, &vdir, options, obs)?);
        write_reports(
            dir,
            &Ablation {
                base: base.to_string(),
                settings: described.clone(),
                summary: summarise(&runs, grid),
                runs: runs.clone(),
            },
        )?;
    }
    let ablation = Ablation {
        base: base.to_string(),
        settings: described,
        summary: summarise(&runs, grid),
        runs,
    };
    write_reports(dir, &ablation)?;
    Ok(ablation)
}

/// The row of variant `v` at `seed` read back from `vdir` when it need not run again (recorded
/// with the same config, and with the linear evaluation when `options` ask for one); None when
/// it must (re)run; an error when the linear evaluation is asked of records kept without the
/// encoder's checkpoint.
fn reusable_row(
    v: &Variant,
    seed: u64,
    cfg: &ExperimentConfig,
    vdir: &Path,
    options: &AblationOptions,
    obs: &mut dyn Observer,
) -> Result<Option<Row>> {
    match recorded_row(v, seed, cfg, vdir)? {
        Some(mut row) if !options.linear || row.linear_top1.is_some() => {
            obs.on_message(&format!(
                "{} (seed {seed}): already done ({:.2}% kNN), skipped",
                v.name,
                100.0 * row.knn_top1
            ));
            // The run of this variant's directory, whatever the grid that trained it called
            // it: a variant may link to another grid's run of the same config.
            (row.name, row.overrides) = (v.name.clone(), v.set.clone());
            if row.evals.is_empty() && !row.random_init {
                row.evals = evals_of(vdir)?;
            }
            Ok(Some(row))
        }
        Some(_) if !v.random_init && checkpoint::list(vdir).is_empty() => Err(Error::data(
            vdir,
            format!(
                "variant `{}` holds a finished run's records without its checkpoints: the \
                 linear evaluation needs the trained encoder. Run without --linear, or remove \
                 {} to rerun it",
                v.name,
                vdir.display()
            ),
        )),
        _ => Ok(None),
    }
}

/// The file of a finished run's [`Row`] in its directory.
const ROW: &str = "ablation-row.json";

/// The row recorded in `vdir` for variant `v` at `seed` with the resolved config `cfg`, if there
/// is one (its `ablation-row.json`, or else the records of a finished run kept without its
/// checkpoints: [`row_from_records`]); an error when it was recorded with another config or kind
/// (its result would be stale).
fn recorded_row(
    v: &Variant,
    seed: u64,
    cfg: &ExperimentConfig,
    vdir: &Path,
) -> Result<Option<Row>> {
    let (row, row_path) = match std::fs::read_to_string(vdir.join(ROW)) {
        Ok(text) => match serde_json::from_str::<Row>(&text) {
            Ok(row) => (row, vdir.join(ROW)),
            Err(_) => return Ok(None),
        },
        Err(_) => match row_from_records(v, seed, cfg, vdir)? {
            Some(row) => (row, vdir.join(crate::train::run_dir::CONFIG)),
            None => return Ok(None),
        },
    };
    // Compared as configs, not as text: a field added to `byol` since the row was written reads
    // back at its default and leaves the run the same. The data paths are compared by where they
    // lead, not by how they were typed.
    let canonical = |c: &ExperimentConfig| ExperimentConfig {
        data: c.data.clone().with_canonical_paths(),
        ..c.clone()
    };
    let differences: Vec<String> =
        match ExperimentConfig::from_recorded_toml(&row.config, &row_path) {
            Ok(recorded) => crate::config::differences(&canonical(cfg), &canonical(&recorded))
                .iter()
                .map(|d| d.to_string())
                .collect(),
            Err(e) => vec![format!("its recorded config does not read: {e}")],
        };
    if differences.is_empty() && row.random_init == v.random_init {
        return Ok(Some(row));
    }
    let kind = |random: bool| {
        if random {
            "a random-init encoder"
        } else {
            "a pre-training run"
        }
    };
    let what = if row.random_init != v.random_init {
        format!("it was {}", kind(row.random_init))
    } else {
        differences.join("; ")
    };
    Err(Error::data(
        vdir,
        format!(
            "variant `{}` was run with another config or kind ({what}); its result would be stale. Remove {} to rerun it, or use another directory",
            v.name,
            vdir.display()
        ),
    ))
}

/// The encoder of variant `v` (its random-init one, or the one its run in `run` trains,
/// resuming a run left there), its steps, its kNN accuracy, and the data where it was loaded.
fn encoder_of(
    v: &Variant,
    cfg: &ExperimentConfig,
    run: &RunDir,
    device: &burn::tensor::Device,
    obs: &mut dyn Observer,
) -> Result<(
    crate::model::Encoder,
    u64,
    crate::eval::KnnResult,
    Option<data::Splits>,
)> {
    let vdir = run.path();
    Ok(if v.random_init {
        let splits = data::load(&cfg.data, cfg.seed)?;
        let encoder = random_init_encoder(cfg, device);
        let knn = knn_of_encoder(&encoder, cfg, &splits.train, &splits.test, device)?;
        (encoder, 0, knn, Some(splits))
    } else {
        let resume = !checkpoint::list(vdir).is_empty();
        let report = pretrain_in(
            cfg,
            run,
            &RunOptions {
                resume,
                compare_random: false,
                ..Default::default()
            },
            obs,
        )?;
        let knn = report
            .knn
            .ok_or_else(|| Error::data(vdir, "the run ended without an evaluation"))?;
        let (loaded, _) = checkpoint::read_latest(vdir)?;
        (loaded.online(device)?.encoder, report.steps, knn, None)
    })
}

/// Train (or take the random-init encoder of) variant `v` at `seed` in `vdir`, resuming a run
/// left there, and evaluate it: its row, written to `vdir` before the directory is let go.
fn run_variant(
    v: &Variant,
    seed: u64,
    cfg: &ExperimentConfig,
    vdir: &Path,
    options: &AblationOptions,
    obs: &mut dyn Observer,
) -> Result<Row> {
    let label = format!("{} (seed {seed})", v.name);
    obs.on_message(&format!(
        "{label}: {}",
        if v.random_init {
            "random-init encoder".to_string()
        } else {
            v.set.join(" ")
        }
    ));
    let started = Instant::now();
    let run = RunDir::lock(vdir)?;
    let device = cfg.backend.device()?;
    let (encoder, steps, knn, splits) = encoder_of(v, cfg, &run, &device, obs)?;
    let linear_top1 = if options.linear {
        obs.on_message(&format!("{label}: linear evaluation"));
        let splits = match splits {
            Some(s) => s,
            None => data::load(&cfg.data, cfg.seed)?,
        };
        Some(
            linear_of_encoder(&encoder, cfg, &splits.train, &splits.test, &device)?
                .test
                .top1,
        )
    } else {
        None
    };
    let outcome = Outcome {
        steps,
        knn,
        linear_top1,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    let row = row_of(v, seed, cfg, vdir, outcome, cfg.to_toml())?;
    run.write(ROW, &row)?;
    Ok(row)
}

/// What a run of a variant gave, besides what its records in the run directory hold.
struct Outcome {
    steps: u64,
    knn: crate::eval::KnnResult,
    linear_top1: Option<f64>,
    /// Seconds of the run's last invocation.
    wall_seconds: f64,
}

/// The row of variant `v` at `seed` (resolved config `cfg`, whose TOML is `config`): `outcome`
/// with the losses, projections and evaluations its run recorded in `vdir`.
fn row_of(
    v: &Variant,
    seed: u64,
    cfg: &ExperimentConfig,
    vdir: &Path,
    outcome: Outcome,
    config: String,
) -> Result<Row> {
    let healthy_std = 1.0 / (cfg.model.projector.output as f64).sqrt();
    let metrics = crate::train::run_dir::read_metrics(vdir)?;
    let losses: Vec<(u64, f64)> = metrics.iter().map(|m| (m.step, m.loss)).collect();
    let projection_std = metrics.last().map(|m| m.projection_std);
    let evals = if v.random_init {
        Vec::new()
    } else {
        evals_of(vdir)?
    };
    Ok(Row {
        name: v.name.clone(),
        seed,
        overrides: v.set.clone(),
        random_init: v.random_init,
        steps: outcome.steps,
        knn_top1: outcome.knn.top1,
        knn_top5: outcome.knn.top5,
        linear_top1: outcome.linear_top1,
        final_loss: losses.last().map(|l| l.1),
        projection_std,
        healthy_std,
        collapsed: projection_std.map(|s| s < cfg.train.collapse_fraction * healthy_std),
        wall_seconds: outcome.wall_seconds,
        losses,
        evals,
        config,
    })
}

/// The row of a finished pre-training run in `vdir` kept as its records alone: its final report
/// (`eval.json`), config, metrics and evaluations, without checkpoints or `ablation-row.json` (the
/// records `docs/runs/` keeps of a run, copied back onto a machine that lost its run folder).
/// None when `vdir` holds a checkpoint (the run's own resume reads it back then) or no final report.
/// The config recorded is the run's `config.toml`, compared by the caller.
fn row_from_records(
    v: &Variant,
    seed: u64,
    cfg: &ExperimentConfig,
    vdir: &Path,
) -> Result<Option<Row>> {
    use crate::train::run_dir;
    if v.random_init || !checkpoint::list(vdir).is_empty() {
        return Ok(None);
    }
    let Some(report) = run_dir::read_report(vdir)? else {
        return Ok(None);
    };
    let Some(knn) = report.knn else {
        return Ok(None);
    };
    let config_path = vdir.join(run_dir::CONFIG);
    let config = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let outcome = Outcome {
        steps: report.steps,
        knn,
        linear_top1: None,
        wall_seconds: report.wall_seconds,
    };
    row_of(v, seed, cfg, vdir, outcome, config).map(Some)
}

/// (step, kNN top-1) of the evaluations recorded in the run directory `vdir`.
fn evals_of(vdir: &Path) -> Result<Vec<(u64, f64)>> {
    Ok(crate::train::run_dir::read_evals(vdir)?
        .iter()
        .map(|e| (e.step, e.knn.top1))
        .collect())
}

#[cfg(test)]
mod tests;
