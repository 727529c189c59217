//! `byol`: the command-line front end. Parses flags, resolves them into a validated
//! [`ExperimentConfig`], calls the library, and draws progress in the terminal.

mod args;
mod chart;
mod distill;
mod transfer;

use anyhow::{Context, Result};
use args::*;
use byol::ExperimentConfig;
use byol::train::{EvalReport, Observer, ProbeReport, StepLog};
use byol::workflow::{self, Evaluation, Settings};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;

struct Bar {
    pb: ProgressBar,
}

impl Bar {
    /// A bar drawn from the run's first step on ([`Observer::on_start`]): a command that never
    /// trains (an evaluation, a finished run) prints its lines without an empty `0/0 steps` bar.
    fn new() -> Self {
        let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        pb.set_style(ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps (ETA {eta}) {msg}").expect("template").progress_chars("=> "));
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
        self.pb.set_draw_target(ProgressDrawTarget::stderr());
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
    fn on_probe(&mut self, r: &ProbeReport) {
        self.println(&format!(
            "epoch {} step {}: online linear probe top-1 {:.2}% on the test split ({:.2}% on this epoch's training views)",
            r.epoch,
            r.step,
            100.0 * r.test_top1,
            100.0 * r.train_top1
        ));
    }
    fn on_message(&mut self, m: &str) {
        self.println(m);
    }
}

fn pretrain(args: PretrainArgs) -> Result<()> {
    let settings = args.config.settings();
    let (rank, processes) = byol::collective::process_rank_and_count();
    let (cfg, run_dir, resume) = match &args.resume {
        // The run's recorded config (its newest checkpoint's header), with the flags given now on
        // top; the library then loads the checkpoint and refuses a change of trajectory (and of
        // the number of processes).
        Some(dir) => (workflow::resume_config(dir, &settings)?, dir.clone(), true),
        None => {
            let dir = args.run_dir.clone().unwrap_or_else(|| workflow::new_run_dir(&args.config.config, std::time::SystemTime::now()));
            let mut cfg = settings.resolve(&args.config.config)?;
            cfg.train.world = processes;
            cfg.validate()?;
            (cfg, dir, false)
        }
    };
    if rank > 0 {
        // One of several processes: rank 0 alone writes the run directory and reports.
        byol::train::follow(&cfg, Some(&run_dir), resume).with_context(|| format!("rank {rank} of the run in {}", run_dir.display()))?;
        return Ok(());
    }
    eprintln!("run directory: {}", run_dir.display());
    // Held until the charts are drawn: no other process writes this directory meanwhile.
    let run = byol::train::RunDir::lock(&run_dir)?;
    let mut bar = Bar::new();
    let interrupt = stop_on_signal(&format!("byol pretrain --resume {}", run_dir.display()))?;
    let opts = byol::train::RunOptions {
        resume,
        compare_random: !args.no_baseline,
        max_steps: args.max_steps,
        time_budget_s: args.time_budget,
        interrupt: Some(interrupt.clone()),
    };
    let report = byol::train::pretrain_in(&cfg, &run, &opts, &mut bar).with_context(|| format!("pre-training in {}", run_dir.display()))?;
    bar.pb.finish_and_clear();
    if interrupt.load(std::sync::atomic::Ordering::SeqCst) && report.knn.is_none() {
        eprintln!("interrupted at step {}; continue with: byol pretrain --resume {}", report.steps, run_dir.display());
        std::process::exit(130);
    }
    println!(
        "pre-trained {} steps on {} images in {:.0} s, {:.0} s of them training{} (final loss {:.4})",
        report.steps,
        report.train_images,
        report.wall_seconds,
        report.train_seconds,
        if report.stopped_by_time_budget { ", stopped by the time budget" } else { "" },
        report.final_loss
    );
    if report.skipped_images > 0 {
        println!("skipped {} file(s) or folder(s), unreadable or outside the layout (listed in {})", report.skipped_images, byol::train::run_dir::SKIPPED);
    }
    if report.lost_images > 0 {
        println!("{} image(s) that the shard manifests record were missing (truncated shards)", report.lost_images);
    }
    let k = cfg.eval.knn.k;
    if let Some(knn) = report.knn {
        println!("kNN (k={k}) on {} test images: trained encoder top-1 {:6.2}%  top-5 {:6.2}%", report.test_images, 100.0 * knn.top1, 100.0 * knn.top5);
    }
    if let Some(r) = report.random_init_knn {
        println!("kNN (k={k}) on {} test images: random-init     top-1 {:6.2}%  top-5 {:6.2}%", report.test_images, 100.0 * r.top1, 100.0 * r.top5);
    }
    if let Some(p) = report.online_linear_top1 {
        println!("online linear probe on {} test images: top-1 {:6.2}% (a monitor; `byol eval linear` is the protocol)", report.test_images, 100.0 * p);
    }
    let png = run.file(byol::train::run_dir::CURVES);
    chart::run_curves(&run_dir, &png).with_context(|| format!("writing {}", png.display()))?;
    use byol::train::run_dir::{CURVES, EVAL, METRICS};
    let mut written: Vec<&str> = Vec::new();
    if !byol::train::checkpoint::list(&run_dir).is_empty() {
        written.push("checkpoint");
    }
    written.extend([METRICS, EVAL, CURVES].into_iter().filter(|f| std::fs::metadata(run.file(f)).is_ok_and(|m| m.len() > 0)));
    println!("{} in {}", written.join(", "), run_dir.display());
    Ok(())
}

/// A flag that the first Ctrl-C (or SIGTERM) sets: the run finishes its step, writes a
/// checkpoint and stops. A second one ends the process at once (the run then loses at most the
/// steps since its last checkpoint, as after a kill).
fn stop_on_signal(resume: &str) -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let resume = resume.to_string();
    ctrlc::set_handler(move || {
        if set.swap(true, Ordering::SeqCst) {
            eprintln!("\nstopped at once; resume from the last checkpoint with: {resume}");
            std::process::exit(130);
        }
        eprintln!("\nfinishing the step and writing a checkpoint (Ctrl-C again to stop at once)");
    })
    .context("installing the Ctrl-C handler")?;
    Ok(flag)
}

/// The checkpoint of `args` with its `--data` and `--set` flags, then `edit`.
fn evaluation(args: &EvalArgs, edit: impl FnOnce(&mut ExperimentConfig)) -> Result<Evaluation> {
    let settings = Settings { set: args.sets.clone(), data: args.data.clone(), ..Default::default() };
    Ok(Evaluation::from_checkpoint(&args.checkpoint, &settings, edit, args.random_init)?)
}

fn eval_knn(args: KnnArgs) -> Result<()> {
    let e = evaluation(&args.eval, |c| {
        c.eval.knn.k = args.k.unwrap_or(c.eval.knn.k);
        c.eval.knn.temperature = args.temperature.unwrap_or(c.eval.knn.temperature);
    })?;
    let r = byol::train::knn_of_encoder(&e.encoder, &e.config, &e.splits()?.train, &e.splits()?.test, &e.device)?;
    let k = &e.config.eval.knn;
    println!(
        "kNN (k={}, T={}) on {} test images, {}: top-1 {:.2}%  top-5 {:.2}%",
        k.k,
        k.temperature,
        e.splits()?.test.len(),
        e.label,
        100.0 * r.top1,
        100.0 * r.top5
    );
    record(&e, "knn", serde_json::to_value(r)?);
    Ok(())
}

/// Write an evaluation's result into its run directory, or say why it was not.
fn record(e: &Evaluation, protocol: &str, result: serde_json::Value) {
    match e.record(protocol, result) {
        Ok(Some(path)) => println!("recorded in {}", path.display()),
        Ok(None) => {}
        Err(err) => eprintln!("warning: the result is not recorded in the run directory: {err}"),
    }
}

fn eval_linear(args: LinearArgs) -> Result<()> {
    let e = evaluation(&args.eval, |c| {
        c.eval.linear.epochs = args.epochs.unwrap_or(c.eval.linear.epochs);
        if let Some(lrs) = &args.lrs {
            c.eval.linear.learning_rates = lrs.clone();
        }
    })?;
    let r = byol::train::linear_of_encoder(&e.encoder, &e.config, &e.splits()?.train, &e.splits()?.test, &e.device)?;
    for (lr, acc) in &r.sweep {
        println!("  lr {lr:<6} validation top-1 {:.2}%", 100.0 * acc);
    }
    println!(
        "linear evaluation on {} test images, {} (lr {}): top-1 {:.2}%  top-5 {:.2}%  (train top-1 {:.2}%)",
        e.splits()?.test.len(),
        e.label,
        r.best_lr,
        100.0 * r.test.top1,
        100.0 * r.test.top5,
        100.0 * r.train.top1
    );
    record(&e, "linear", serde_json::to_value(&r)?);
    Ok(())
}

fn eval_finetune(args: FinetuneArgs) -> Result<()> {
    let e = evaluation(&args.eval, |c| {
        let f = &mut c.eval.finetune;
        f.label_fraction = args.labels;
        f.epochs = args.epochs.unwrap_or(f.epochs);
        f.learning_rates = args.lr.clone().unwrap_or_else(|| f.learning_rates.clone());
        f.from = args.from.unwrap_or(f.from);
    })?;
    let test_images = e.splits()?.test.len();
    // Fine-tuning starts from copies of its own (`finetune_of_network`): `e`'s network stays as it was.
    let (r, tuned) =
        byol::train::finetune_of_network(e.encoder.clone(), Some(e.projector.clone()), &e.config, &e.splits()?.train, &e.splits()?.test, &e.device)?;
    for (lr, top1) in &r.sweep {
        println!("learning rate {lr}: top-1 {:.2}% on {} held-out training images", 100.0 * top1, r.validation_images);
    }
    println!(
        "fine-tuning on {} labelled images ({}, from the {}, learning rate {}), {test_images} test images: top-1 {:.2}%  top-5 {:.2}%",
        r.labelled_images,
        e.label,
        if e.config.eval.finetune.from == byol::eval::FinetuneFrom::Encoder { "encoder" } else { "projector's first layer" },
        r.learning_rate,
        100.0 * r.test.top1,
        100.0 * r.test.top5
    );
    record(&e, "finetune", serde_json::to_value(&r)?);
    if let Some(path) = &args.save_model {
        byol::eval::classifier::save(&tuned, &workflow::classifier_info(&e, &r)?, path)?;
        println!("wrote the fine-tuned classifier (a teacher for `byol distill`) to {}", path.display());
    }
    if let Some(path) = &args.save_encoder {
        byol::model::export::export_encoder(&tuned.encoder, &e.config.model.encoder, None, path)?;
        println!("wrote the fine-tuned encoder (torchvision layout) to {}", path.display());
    }
    Ok(())
}

fn embed(args: EmbedArgs) -> Result<()> {
    let e = evaluation(&args.eval, |_| {})?;
    let (train, test) = e.embed(&args.out)?;
    println!("wrote {} × {} features ({}) to {}", train.len() + test.len(), train.dim, e.label, args.out.display());
    if let Some(png) = &args.plot {
        let (points, labels) = e.tsne_map(&test, args.plot_points, args.perplexity)?;
        let title = format!("t-SNE of {} test representations ({}), perplexity {}", points.len(), e.label, args.perplexity);
        chart::embedding(&points, &labels, e.classes()?, &title, png).with_context(|| format!("writing {}", png.display()))?;
        println!("wrote the t-SNE map of {} test images to {}", points.len(), png.display());
    }
    Ok(())
}

fn shard(args: ShardArgs) -> Result<()> {
    let (input, out) = match (&args.verify, &args.input, &args.out) {
        (Some(folder), _, _) => return verify_shards(folder),
        (None, Some(input), Some(out)) => (input, out),
        _ => unreachable!("clap requires --input and --out without --verify"),
    };
    let opts = byol::data::shards::ShardWriteOptions {
        target_bytes: args.shard_mb << 20,
        resize_shorter: args.resize_shorter,
        quality: args.quality,
        seed: args.seed,
    };
    let pb = ProgressBar::new(0);
    pb.set_style(ProgressStyle::with_template("{prefix:>5} [{bar:30}] {pos}/{len} images ({per_sec}, ETA {eta})").expect("template").progress_chars("=> "));
    let mut current = String::new();
    let written = byol::data::shards::shard_imagefolder(input, out, &opts, args.holdout_fraction, 100_000_000, &mut |split, done, total| {
        if current != split {
            current = split.to_string();
            pb.set_prefix(current.clone());
            pb.set_length(total as u64);
            pb.reset();
        }
        pb.set_position(done as u64);
    })?;
    pb.finish_and_clear();
    for (name, m) in [("train", &written.train), ("test", &written.test)] {
        let bytes: u64 = m.shards.iter().map(|s| s.bytes).sum();
        println!(
            "{name}: {} images of {} classes in {} shard(s), {:.1} MB, {}",
            m.count,
            m.classes.len(),
            m.shards.len(),
            bytes as f64 / 1e6,
            out.join(name).join(byol::data::shards::MANIFEST).display()
        );
    }
    if !written.skipped.is_empty() {
        println!("skipped {} unreadable image(s):", written.skipped.len());
        for (file, reason) in &written.skipped {
            println!("  {file}: {reason}");
        }
    }
    println!("train on them with: byol pretrain --data shards:{}", out.display());
    Ok(())
}

/// `byol shard --verify`: every shard against its manifest; exit 1 when any differs.
fn verify_shards(folder: &std::path::Path) -> Result<()> {
    let checked = byol::data::shards::verify(folder)?;
    let mut bad = 0;
    for v in &checked {
        println!("{}: {} shard(s), {} images, {}", v.manifest.display(), v.shards, v.images, if v.problems.is_empty() { "all as recorded" } else { "DIFFERS" });
        for p in &v.problems {
            println!("  {}: {}", p.shard.display(), p.problem);
        }
        bad += v.problems.len();
    }
    if bad > 0 {
        eprintln!("{bad} shard(s) differ from their manifests: write them again with `byol shard`");
        std::process::exit(1);
    }
    Ok(())
}

fn export(args: ExportArgs) -> Result<()> {
    let loaded = byol::train::checkpoint::read_path_or_dir(&args.checkpoint)?;
    let device = loaded.config.backend.device()?;
    let online = loaded.online(&device)?;
    let projector = args.with_projector.then_some(&online.projector);
    byol::model::export::export_encoder(&online.encoder, &loaded.config.model.encoder, projector, &args.out)?;
    let with = if args.with_projector { ", and the projector as nn.Sequential under projector.," } else { "" };
    println!("wrote the encoder with torchvision resnet names{with} to {}", args.out.display());
    let e = &loaded.config.model.encoder;
    match byol::model::export::torchvision_constructor(e) {
        Some(c) => println!("load it with load_state_dict(…, strict=False) into {c}"),
        None => println!(
            "no torchvision constructor fits this encoder ({:?}, base width {}, width ×{}): torchvision's ResNets have base width 64 and width ×1; build a ResNet of these sizes to load it",
            e.arch, e.base_width, e.width_multiplier
        ),
    }
    Ok(())
}

fn augment(args: AugmentArgs) -> Result<()> {
    let cfg = args.config.settings().resolve(&args.config.config)?;
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
    let a = byol::ablate::ablate(&args.config.config, &args.config.settings(), &grid, &dir, &options, &mut bar)?;
    bar.pb.finish_and_clear();
    let png = dir.join("ablation.png");
    chart::ablation(&a, &png).with_context(|| format!("writing {}", png.display()))?;
    for r in a.runs.iter().filter(|r| !r.random_init) {
        let run = byol::ablate::run_dir(&dir, &r.name, r.seed);
        let png = run.join("curves.png");
        chart::run_curves(&run, &png).with_context(|| format!("writing {}", png.display()))?;
    }
    print!("{}", std::fs::read_to_string(dir.join("ablation.md"))?);
    println!("\n{} variants, {} runs; table (ablation.md), JSON and chart (ablation.png) in {}", a.summary.len(), a.runs.len(), dir.display());
    Ok(())
}

fn bench_step(args: BenchStepArgs) -> Result<()> {
    let arch: byol::bench::StepArch = args.arch.into();
    let kind: byol::backend::BackendKind = args.backend.into();
    let batch = args.batch.unwrap_or(arch.default_batch(kind != byol::backend::BackendKind::Flex));
    let cfg = arch.config(batch, kind, args.precision.into())?;
    let device = kind.device()?;
    let r = byol::bench::bench_step(arch, &cfg, args.steps, args.warmup, &device)?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

fn bench_augment(args: BenchAugmentArgs) -> Result<()> {
    let kind: byol::backend::BackendKind = args.backend.into();
    let device = kind.device()?;
    let aug = byol::augment::AugmentConfig::default();
    let mut rows = Vec::new();
    for &size in &args.sizes {
        let source = if size <= 32 { size } else { size * 8 / 7 };
        let r = byol::bench::bench_augment(&aug, size, source, args.batch, args.reps, &device, kind.name())?;
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

fn bench_decode(args: BenchDecodeArgs) -> Result<()> {
    let text = args.data.to_string_lossy();
    let (set, buffer) = match text.strip_prefix("shards:") {
        Some(p) => {
            let p = std::path::Path::new(p);
            let train = if p.join("train").is_dir() { p.join("train") } else { p.to_path_buf() };
            (byol::data::shards::load_set(&train, None, 100_000_000)?, Some(args.shuffle_buffer))
        }
        None => {
            let root = if args.data.join("train").is_dir() { args.data.join("train") } else { args.data.clone() };
            (byol::data::imagefolder::load_folder(&root, byol::data::imagefolder::Cache::Off, None, 0, 0, 100_000_000)?, None)
        }
    };
    let interpolation = match args.interpolation {
        Interp::Bilinear => byol::augment::Interpolation::Bilinear,
        Interp::Bicubic => byol::augment::Interpolation::Bicubic,
    };
    let aug = byol::augment::AugmentConfig { interpolation, ..Default::default() };
    let r = byol::bench::bench_decode(set, &aug, args.size, args.threads, args.passes, args.batch, buffer)?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    // An invalid BYOL_CPU_KERNELS is an error before any work, not a panic at the first layer.
    byol::model::kernels::CpuKernels::from_env()?;
    let (_, processes) = byol::collective::process_rank_and_count();
    if processes > 1 && !matches!(cli.command, Command::Pretrain(_)) {
        // Each process would run the whole command and write the same files.
        anyhow::bail!("only `byol pretrain` runs on several processes; run this command once, without mpirun ({processes} processes here)");
    }
    match cli.command {
        Command::Pretrain(a) => pretrain(a),
        Command::DumpConfig(a) => {
            print!("{}", a.settings().resolve(&a.config)?.to_toml());
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
        Command::Bench(BenchCommand::Decode(a)) => bench_decode(a),
        Command::Shard(a) => shard(a),
        Command::Transfer(a) => transfer::run(a),
        Command::Distill(a) => distill::run(a),
    }
}

fn main() {
    byol_kernels::alloc::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,byol=info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    #[cfg(feature = "mpi")]
    let _mpi = byol::collective::mpi::init().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    if let Err(e) = run() {
        // One of several processes: end them all (none waits on this one), naming the failure.
        #[cfg(feature = "mpi")]
        if let Some(w) = byol::collective::mpi::world().filter(|w| w.size() > 1) {
            w.abort(&format!("{e:#}"));
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
