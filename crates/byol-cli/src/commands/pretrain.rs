//! `byol pretrain`: the run, what it prints, its chart.

use crate::args::PretrainArgs;
use crate::progress::{Bar, stop_on_signal};
use anyhow::{Context, Result};
use byol::workflow;

pub(crate) fn pretrain(args: PretrainArgs) -> Result<()> {
    let settings = args.config.settings();
    let (rank, processes) = byol::collective::process_rank_and_count();
    let (cfg, run_dir, resume) = match &args.resume {
        // The run's recorded config (its newest checkpoint's header), with the flags given now on
        // top; the library then loads the checkpoint and refuses a change of trajectory (and of
        // the number of processes).
        Some(dir) => (workflow::resume_config(dir, &settings)?, dir.clone(), true),
        None => {
            let dir = args.run_dir.clone().unwrap_or_else(|| {
                workflow::new_run_dir(&args.config.config, std::time::SystemTime::now())
            });
            let mut cfg = settings.resolve(&args.config.config)?;
            cfg.train.world = processes;
            cfg.validate()?;
            (cfg, dir, false)
        }
    };
    if rank > 0 {
        // One of several processes: rank 0 alone writes the run directory and reports.
        byol::train::follow(&cfg, Some(&run_dir), resume)
            .with_context(|| format!("rank {rank} of the run in {}", run_dir.display()))?;
        return Ok(());
    }
    eprintln!("run directory: {}", run_dir.display());
    // Held until the charts are drawn: no other process writes this directory meanwhile.
    let run = byol::train::RunDir::lock(&run_dir)?;
    let mut bar = Bar::new();
    let interrupt = stop_on_signal(&format!(
        "resume from the last checkpoint with: byol pretrain --resume {}",
        run_dir.display()
    ))?;
    let opts = byol::train::RunOptions {
        resume,
        compare_random: !args.no_baseline,
        max_steps: args.max_steps,
        time_budget_s: args.time_budget,
        interrupt: Some(interrupt.clone()),
    };
    let report = byol::train::pretrain_in(&cfg, &run, &opts, &mut bar)
        .with_context(|| format!("pre-training in {}", run_dir.display()))?;
    bar.pb.finish_and_clear();
    if interrupt.load(std::sync::atomic::Ordering::SeqCst) && report.knn.is_none() {
        eprintln!(
            "interrupted at step {}; continue with: byol pretrain --resume {}",
            report.steps,
            run_dir.display()
        );
        std::process::exit(130);
    }
    println!(
        "pre-trained {} steps on {} images in {:.0} s, {:.0} s of them training{} (final loss {:.4})",
        report.steps,
        report.train_images,
        report.wall_seconds,
        report.train_seconds,
        if report.stopped_by_time_budget {
            ", stopped by the time budget"
        } else {
            ""
        },
        report.final_loss
    );
    if report.skipped_images > 0 {
        println!(
            "skipped {} file(s) or folder(s), unreadable or outside the layout (listed in {})",
            report.skipped_images,
            byol::train::run_dir::SKIPPED
        );
    }
    if report.lost_images > 0 {
        println!(
            "{} image(s) that the shard manifests record were missing (truncated shards)",
            report.lost_images
        );
    }
    let k = cfg.eval.knn.k;
    if let Some(knn) = report.knn {
        println!(
            "kNN (k={k}) on {} test images: trained encoder top-1 {:6.2}%  top-5 {:6.2}%",
            report.test_images,
            100.0 * knn.top1,
            100.0 * knn.top5
        );
    }
    if let Some(r) = report.random_init_knn {
        println!(
            "kNN (k={k}) on {} test images: random-init     top-1 {:6.2}%  top-5 {:6.2}%",
            report.test_images,
            100.0 * r.top1,
            100.0 * r.top5
        );
    }
    if let Some(p) = report.online_linear_top1 {
        println!(
            "online linear probe on {} test images: top-1 {:6.2}% (a monitor; `byol eval linear` is the protocol)",
            report.test_images,
            100.0 * p
        );
    }
    let png = run.file(byol::train::run_dir::CURVES);
    crate::chart::run_curves(&run_dir, &png)
        .with_context(|| format!("writing {}", png.display()))?;
    use byol::train::run_dir::{CURVES, EVAL, METRICS};
    let mut written: Vec<&str> = Vec::new();
    if !byol::train::checkpoint::list(&run_dir).is_empty() {
        written.push("checkpoint");
    }
    written.extend(
        [METRICS, EVAL, CURVES]
            .into_iter()
            .filter(|f| std::fs::metadata(run.file(f)).is_ok_and(|m| m.len() > 0)),
    );
    println!("{} in {}", written.join(", "), run_dir.display());
    Ok(())
}
