//! `byol`: the command-line front end. Parses flags, resolves them into a validated
//! [`ExperimentConfig`], calls the library, and draws progress in the terminal.

mod chart;

use anyhow::{Context, Result};
use byol::ExperimentConfig;
use byol::train::{EvalReport, Observer, StepLog};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "byol", version, about = "BYOL self-supervised pre-training and evaluation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pre-train an encoder with BYOL, then report its kNN accuracy beside a random-init encoder's.
    Pretrain(PretrainArgs),
    /// Print the resolved configuration (preset or file, plus flags) as TOML.
    DumpConfig(ConfigArgs),
    /// Evaluate a checkpoint.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Write the representation of every image (train and test splits) to a safetensors file.
    Embed(EmbedArgs),
    /// Write the encoder with torchvision's `resnet*` tensor names to a safetensors file.
    Export(ExportArgs),
    /// Write a PNG grid of images and their two training views (the config's augmentations).
    Augment(AugmentArgs),
    /// Train and evaluate a list of variants of one config; write a table and a chart.
    Ablate(AblateArgs),
    /// Measure throughput beside a baseline in the same process.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Args)]
struct AugmentArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Output file (.png).
    #[arg(long, default_value = "views.png")]
    out: PathBuf,
    /// Number of images (rows).
    #[arg(long, default_value_t = 8)]
    count: usize,
    /// Upscaling factor of each tile (default: to about 128 pixels).
    #[arg(long)]
    scale: Option<usize>,
}

#[derive(Args)]
struct AblateArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The variants: a TOML file of `[[variant]]` tables (name, set = [overrides], random-init).
    #[arg(long)]
    grid: PathBuf,
    /// Where each variant's run and the reports go. Default: runs/ablate-<grid name>.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Also run the linear evaluation of each run.
    #[arg(long)]
    linear: bool,
    /// Run every variant at each of these seeds (`--seeds 0,1,2`); the table reports the mean
    /// and spread. Default: the config's seed.
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Views per second of the batched view pipeline against the per-image host pipeline.
    Augment(BenchAugmentArgs),
    /// Samples per second of the training step on the reference's model and batch (one JSON
    /// line in the fields of shared/reference/byol_torch.py).
    Step(BenchStepArgs),
}

#[derive(Args)]
struct BenchStepArgs {
    /// resnet18-cifar (r18c32: 32×32, CIFAR stem) or resnet50 (r50i224: 224×224).
    #[arg(long, default_value = "resnet18-cifar")]
    arch: String,
    /// Samples per step (each two views). The reference uses 512 / 256 on a GPU, 64 / 8 on a CPU.
    #[arg(long)]
    batch: Option<usize>,
    /// flex (CPU) or cuda.
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Timed steps (median reported).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// f32, or bf16 / f16 mixed precision (encoders in that type, the rest in f32).
    #[arg(long, default_value = "f32")]
    precision: String,
}

#[derive(Args)]
struct BenchAugmentArgs {
    /// View sides to measure; source images are 32 px for 32 and 8/7 of the side otherwise.
    #[arg(long, value_delimiter = ',', default_value = "32,224")]
    sizes: Vec<usize>,
    /// Images per batch (each gives two views).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Timed batches (median reported), after 2 warm-up batches.
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Compute backend of the batched pipeline: flex (CPU) or cuda.
    #[arg(long, default_value = "flex")]
    backend: String,
}

#[derive(Args)]
struct EmbedArgs {
    #[command(flatten)]
    eval: EvalArgs,
    /// Output file (.safetensors).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct ExportArgs {
    /// A run directory or a checkpoint file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Output file (.safetensors).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// k-nearest-neighbour accuracy of a checkpoint's frozen encoder.
    Knn(KnnArgs),
    /// Linear evaluation of a checkpoint's frozen encoder (fast mode: features computed once).
    Linear(LinearArgs),
    /// Semi-supervised fine-tuning of the encoder and a classifier on a fraction of the labels.
    Finetune(FinetuneArgs),
}

#[derive(Args)]
struct FinetuneArgs {
    #[command(flatten)]
    eval: EvalArgs,
    /// Labelled fraction: `1%`, `10%`, `100%` (or a number in (0, 1]).
    #[arg(long, default_value = "10%")]
    labels: String,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// A preset name (small-cpu, cifar10-cpu, cifar10-resnet18, imagenet-resnet50-1000ep,
    /// simclr-cifar10-cpu, mocov2-cifar10-cpu) or a TOML file.
    #[arg(long, short, default_value = "small-cpu")]
    config: String,
    /// Data: `synthetic`, `cifar10`/`cifar100` (binary format, downloaded into ./data if missing),
    /// or the path of an ImageFolder.
    #[arg(long)]
    data: Option<String>,
    /// Compute backend: flex (CPU) or cuda.
    #[arg(long)]
    backend: Option<String>,
    #[arg(long)]
    epochs: Option<u64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Any config field: `--set model.encoder.base-width=16` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

impl ConfigArgs {
    fn overrides(&self) -> Vec<String> {
        let mut o = self.data.as_deref().map(data_overrides).unwrap_or_default();
        if let Some(b) = &self.backend {
            o.push(format!("backend={}", toml_string(b)));
        }
        if let Some(e) = self.epochs {
            o.push(format!("train.epochs={e}"));
        }
        if let Some(b) = self.batch_size {
            o.push(format!("train.batch-size={b}"));
        }
        if let Some(s) = self.seed {
            o.push(format!("seed={s}"));
        }
        o.extend(self.sets.iter().cloned());
        o
    }

    fn resolve(&self) -> Result<ExperimentConfig> {
        Ok(ExperimentConfig::load(&self.config, &self.overrides())?)
    }
}

/// The config overrides that `--data VALUE` stands for.
fn data_overrides(data: &str) -> Vec<String> {
    match data {
        "synthetic" => vec!["data.source=\"synthetic\"".into()],
        "cifar10" | "cifar100" => vec![format!("data.source=\"{data}\""), "data.path=\"data\"".into(), "data.download=true".into()],
        path => vec!["data.source=\"folder\"".into(), format!("data.path={}", toml_string(path))],
    }
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[derive(Args)]
struct PretrainArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Run directory (checkpoints, metrics.jsonl, evals.jsonl, config.toml, run.json, eval.json). Default: runs/<config>-<time>.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, with its recorded config
    /// (flags such as --epochs still apply on top; --config is ignored).
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "run_dir")]
    resume: Option<PathBuf>,
    /// Skip the random-init encoder's kNN evaluation.
    #[arg(long)]
    no_baseline: bool,
    /// Stop with a checkpoint after this many steps in total (continue later with --resume).
    #[arg(long)]
    max_steps: Option<u64>,
}

#[derive(Args)]
struct EvalArgs {
    /// A run directory or a checkpoint file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Evaluate on this data instead of the checkpoint's (same forms as `pretrain --data`):
    /// another ImageFolder with its own classes is a transfer evaluation.
    #[arg(long)]
    data: Option<String>,
    /// Evaluate the random-init encoder of the checkpoint's architecture and seed instead.
    #[arg(long)]
    random_init: bool,
    /// Any config field: `--set eval.linear.epochs=20` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Args)]
struct KnnArgs {
    #[command(flatten)]
    eval: EvalArgs,
    #[arg(long)]
    k: Option<usize>,
    #[arg(long)]
    temperature: Option<f64>,
}

#[derive(Args)]
struct LinearArgs {
    #[command(flatten)]
    eval: EvalArgs,
    #[arg(long)]
    epochs: Option<usize>,
    /// Learning rates to sweep, comma-separated (default: the paper's 0.4,0.3,0.2,0.1,0.05).
    #[arg(long, value_delimiter = ',')]
    lrs: Option<Vec<f64>>,
}

struct Bar {
    pb: ProgressBar,
}

impl Bar {
    fn new() -> Self {
        let pb = ProgressBar::new(0);
        pb.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps (ETA {eta}) {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        Bar { pb }
    }

    /// A line above the bar, or on stderr when there is no terminal to draw the bar on.
    fn println(&self, m: &str) {
        if self.pb.is_hidden() {
            eprintln!("{m}");
        } else {
            self.pb.println(m);
        }
    }
}

impl Observer for Bar {
    fn on_start(&mut self, start: u64, total: u64) {
        self.pb.set_length(total);
        self.pb.set_position(start);
        self.pb.reset_eta();
    }
    fn on_step(&mut self, log: &StepLog) {
        self.pb.set_position(log.step);
        self.pb.set_message(format!(
            "ep {} loss {:.4} lr {:.3} τ {:.4} std {:.3} {:.0} img/s",
            log.epoch, log.loss, log.lr, log.tau, log.projection_std, log.images_per_sec
        ));
    }
    fn on_eval(&mut self, r: &EvalReport) {
        self.println(&format!("epoch {} step {}: kNN top-1 {:.2}% top-5 {:.2}%", r.epoch, r.step, 100.0 * r.knn.top1, 100.0 * r.knn.top5));
    }
    fn on_message(&mut self, m: &str) {
        self.println(m);
    }
}

fn pretrain(args: PretrainArgs) -> Result<()> {
    let (cfg, run_dir, resume) = match &args.resume {
        Some(dir) => {
            // The run's recorded config, with only the flags given now applied on top.
            // From the newest checkpoint's header only; the library then loads and verifies it.
            let (recorded, file) = byol::train::checkpoint::read_latest_config(dir)?;
            let cfg = ExperimentConfig::from_toml_with_overrides(&recorded.to_toml(), &file, &args.config.overrides())?;
            (cfg, dir.clone(), true)
        }
        None => {
            let cfg = args.config.resolve()?;
            let name = Path::new(&args.config.config).file_stem().and_then(|s| s.to_str()).unwrap_or("run").to_string();
            let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            (cfg, args.run_dir.clone().unwrap_or_else(|| PathBuf::from(format!("runs/{name}-{stamp}"))), false)
        }
    };
    eprintln!("run directory: {}", run_dir.display());
    let mut bar = Bar::new();
    let opts = byol::train::RunOptions { resume, compare_random: !args.no_baseline, max_steps: args.max_steps };
    let report = byol::train::pretrain(&cfg, &run_dir, &opts, &mut bar)
        .with_context(|| format!("pre-training in {}", run_dir.display()))?;
    bar.pb.finish_and_clear();
    println!("pre-trained {} steps on {} images in {:.0} s (final loss {:.4})", report.steps, report.train_images, report.wall_seconds, report.final_loss);
    if report.skipped_images > 0 {
        println!("skipped {} unreadable image(s)", report.skipped_images);
    }
    let k = cfg.eval.knn.k;
    if let Some(knn) = report.knn {
        println!("kNN (k={k}) on {} test images: trained encoder top-1 {:6.2}%  top-5 {:6.2}%", report.test_images, 100.0 * knn.top1, 100.0 * knn.top5);
    }
    if let Some(r) = report.random_init_knn {
        println!("kNN (k={k}) on {} test images: random-init     top-1 {:6.2}%  top-5 {:6.2}%", report.test_images, 100.0 * r.top1, 100.0 * r.top5);
    }
    let png = run_dir.join("curves.png");
    chart::run_curves(&run_dir, &png).with_context(|| format!("writing {}", png.display()))?;
    println!("checkpoint, metrics.jsonl, eval.json and curves.png in {}", run_dir.display());
    Ok(())
}

/// What an evaluation needs: the resolved config, the device, the encoder and the data.
struct EvalSetup {
    cfg: ExperimentConfig,
    device: byol::Device,
    encoder: byol::model::ResNet,
    splits: byol::data::Splits,
    label: &'static str,
}

fn eval_setup(args: &EvalArgs, mut overrides: Vec<String>) -> Result<EvalSetup> {
    let loaded = byol::train::checkpoint::read_path_or_dir(&args.checkpoint)?;
    let mut all = args.data.as_deref().map(data_overrides).unwrap_or_default();
    all.append(&mut overrides);
    all.extend(args.sets.iter().cloned());
    let cfg = ExperimentConfig::from_toml_with_overrides(&loaded.config.to_toml(), &args.checkpoint, &all)?;
    let device = cfg.backend.device()?;
    let (encoder, label) = if args.random_init {
        (byol::train::random_init_encoder(&cfg, &device), "random-init encoder")
    } else {
        let label = match cfg.objective.kind {
            byol::config::ObjectiveKind::Byol => "trained encoder (BYOL objective)",
            byol::config::ObjectiveKind::NtXent => "trained encoder (SimCLR objective)",
            byol::config::ObjectiveKind::Moco => "trained encoder (MoCo objective)",
        };
        (loaded.online(&device)?.encoder, label)
    };
    let splits = byol::data::load(&cfg.data, cfg.seed)?;
    Ok(EvalSetup { cfg, device, encoder, splits, label })
}

fn eval_knn(args: KnnArgs) -> Result<()> {
    let mut overrides = Vec::new();
    if let Some(k) = args.k {
        overrides.push(format!("eval.knn.k={k}"));
    }
    if let Some(t) = args.temperature {
        overrides.push(format!("eval.knn.temperature={t}"));
    }
    let e = eval_setup(&args.eval, overrides)?;
    let r = byol::train::knn_of_encoder(&e.encoder, &e.cfg, &e.splits.train, &e.splits.test, &e.device)?;
    let k = &e.cfg.eval.knn;
    println!("kNN (k={}, T={}) on {} test images, {}: top-1 {:.2}%  top-5 {:.2}%", k.k, k.temperature, e.splits.test.len(), e.label, 100.0 * r.top1, 100.0 * r.top5);
    Ok(())
}

fn eval_linear(args: LinearArgs) -> Result<()> {
    let mut overrides = Vec::new();
    if let Some(n) = args.epochs {
        overrides.push(format!("eval.linear.epochs={n}"));
    }
    if let Some(lrs) = &args.lrs {
        let list: Vec<String> = lrs.iter().map(|l| format!("{l:?}")).collect();
        overrides.push(format!("eval.linear.learning-rates=[{}]", list.join(", ")));
    }
    let e = eval_setup(&args.eval, overrides)?;
    let r = byol::train::linear_of_encoder(&e.encoder, &e.cfg, &e.splits.train, &e.splits.test, &e.device)?;
    for (lr, acc) in &r.sweep {
        println!("  lr {lr:<6} validation top-1 {:.2}%", 100.0 * acc);
    }
    println!(
        "linear evaluation on {} test images, {} (lr {}): top-1 {:.2}%  top-5 {:.2}%  (train top-1 {:.2}%)",
        e.splits.test.len(),
        e.label,
        r.best_lr,
        100.0 * r.test.top1,
        100.0 * r.test.top5,
        100.0 * r.train.top1
    );
    Ok(())
}

fn eval_finetune(args: FinetuneArgs) -> Result<()> {
    let fraction = match args.labels.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => args.labels.trim().parse::<f64>(),
    }
    .with_context(|| format!("--labels {}: expected a percentage such as 10%", args.labels))?;
    let mut overrides = vec![format!("eval.finetune.label-fraction={fraction}")];
    if let Some(n) = args.epochs {
        overrides.push(format!("eval.finetune.epochs={n}"));
    }
    if let Some(lr) = args.lr {
        overrides.push(format!("eval.finetune.learning-rate={lr}"));
    }
    let e = eval_setup(&args.eval, overrides)?;
    let r = byol::train::finetune_of_encoder(e.encoder, &e.cfg, &e.splits.train, &e.splits.test, &e.device)?;
    println!(
        "fine-tuning on {} labelled images ({}), {} test images: top-1 {:.2}%  top-5 {:.2}%",
        r.labelled_images,
        e.label,
        e.splits.test.len(),
        100.0 * r.test.top1,
        100.0 * r.test.top5
    );
    Ok(())
}

fn embed(args: EmbedArgs) -> Result<()> {
    let e = eval_setup(&args.eval, Vec::new())?;
    let (tr, te) = byol::train::features_of(&e.encoder, &e.cfg, &e.splits.train, &e.splits.test, &e.device)?;
    let mut rows: Vec<byol::eval::embed::Row> = e.splits.train.names.iter().map(|n| byol::eval::embed::Row { name: n.clone(), split: "train" }).collect();
    rows.extend(e.splits.test.names.iter().map(|n| byol::eval::embed::Row { name: n.clone(), split: "test" }));
    let all = byol::eval::Features { values: [tr.values, te.values].concat(), labels: [tr.labels, te.labels].concat(), dim: tr.dim };
    byol::eval::embed::write_embeddings(&args.out, &rows, &e.splits.train.classes, &all)?;
    println!("wrote {} × {} features ({}) to {}", all.len(), all.dim, e.label, args.out.display());
    Ok(())
}

fn export(args: ExportArgs) -> Result<()> {
    let loaded = byol::train::checkpoint::read_path_or_dir(&args.checkpoint)?;
    let device = loaded.config.backend.device()?;
    let online = loaded.online(&device)?;
    byol::model::export::export_encoder(&online.encoder, &loaded.config.model.encoder, &args.out)?;
    println!("wrote the encoder with torchvision resnet names to {}", args.out.display());
    Ok(())
}

fn augment(args: AugmentArgs) -> Result<()> {
    let cfg = args.config.resolve()?;
    let device = cfg.backend.device()?;
    let splits = byol::data::load(&cfg.data, cfg.seed)?;
    let size = cfg.data.image_size;
    let scale = args.scale.unwrap_or_else(|| (128 / size).max(1));
    let grid = byol::augment::preview::preview_grid(&splits.train, &cfg.augment, size, args.count, cfg.seed, scale, &device)?;
    byol::augment::preview::write_png(&grid, &args.out)?;
    println!("wrote {} rows of (image, view t, view t') at {size} px to {}", args.count.min(splits.train.len()), args.out.display());
    Ok(())
}

fn ablate(args: AblateArgs) -> Result<()> {
    let grid = byol::ablate::Grid::load(&args.grid)?;
    let stem = args.grid.file_stem().and_then(|s| s.to_str()).unwrap_or("grid");
    let dir = args.run_dir.clone().unwrap_or_else(|| PathBuf::from(format!("runs/ablate-{stem}")));
    eprintln!("ablation directory: {} ({} variants)", dir.display(), grid.variant.len());
    let mut bar = Bar::new();
    let options = byol::ablate::AblationOptions { seeds: args.seeds.clone(), linear: args.linear };
    let a = byol::ablate::ablate(&args.config.config, &args.config.overrides(), &grid, &dir, &options, &mut bar)?;
    bar.pb.finish_and_clear();
    let png = dir.join("ablation.png");
    chart::ablation(&a, &png).with_context(|| format!("writing {}", png.display()))?;
    print!("{}", std::fs::read_to_string(dir.join("ablation.md"))?);
    println!("\n{} variants, {} runs; table (ablation.md), JSON and chart (ablation.png) in {}", a.summary.len(), a.runs.len(), dir.display());
    Ok(())
}

fn bench_step(args: BenchStepArgs) -> Result<()> {
    let arch: byol::bench::StepArch = args.arch.parse()?;
    let kind: byol::backend::BackendKind = args.backend.parse()?;
    let gpu = kind != byol::backend::BackendKind::Flex;
    let batch = args.batch.unwrap_or(match (arch, gpu) {
        (byol::bench::StepArch::Resnet18Cifar, true) => 512,
        (byol::bench::StepArch::Resnet50, true) => 256,
        (byol::bench::StepArch::Resnet18Cifar, false) => 64,
        (byol::bench::StepArch::Resnet50, false) => 8,
    });
    let cfg = arch.config(batch, kind.name(), args.precision.parse()?)?;
    let device = kind.device()?;
    let r = byol::bench::bench_step(arch, &cfg, args.steps, args.warmup, &device)?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

fn bench_augment(args: BenchAugmentArgs) -> Result<()> {
    let kind: byol::backend::BackendKind = args.backend.parse()?;
    let device = kind.device()?;
    let aug = byol::augment::AugmentConfig::default();
    let mut rows = Vec::new();
    for &size in &args.sizes {
        let source = if size <= 32 { size } else { size * 8 / 7 };
        let r = byol::bench::bench_augment(&aug, size, source, args.batch, args.reps, &device, kind.name());
        println!("{}", serde_json::to_string(&r)?);
        rows.push(r);
    }
    println!("\n| size | source | batch | threads | backend | batched (views/s) | per-image host (views/s) | ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} |",
            r.size, r.source, r.batch, r.threads, r.backend, r.device_views_per_sec, r.host_views_per_sec, r.ratio
        );
    }
    Ok(())
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Pretrain(a) => pretrain(a),
        Command::DumpConfig(a) => {
            print!("{}", a.resolve()?.to_toml());
            Ok(())
        }
        Command::Eval(EvalCommand::Knn(a)) => eval_knn(a),
        Command::Eval(EvalCommand::Linear(a)) => eval_linear(a),
        Command::Eval(EvalCommand::Finetune(a)) => eval_finetune(a),
        Command::Embed(a) => embed(a),
        Command::Export(a) => export(a),
        Command::Augment(a) => augment(a),
        Command::Ablate(a) => ablate(a),
        Command::Bench(BenchCommand::Augment(a)) => bench_augment(a),
        Command::Bench(BenchCommand::Step(a)) => bench_step(a),
    }
}

fn main() {
    byol_kernels::alloc::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,byol=info".into()))
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
