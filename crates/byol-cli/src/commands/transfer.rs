//! `byol transfer`: what its subcommands run and print.

use crate::args::transfer::*;
use crate::progress::{Bar, stop_on_signal};
use anyhow::Result;
use byol::ExperimentConfig;
use byol::train::run_dir;
use byol::transfer::segment::SegmentData;
use byol::workflow::{self, Evaluation, TransferOptions, TransferOutcome};
use std::path::{Path, PathBuf};

/// Run a `transfer` subcommand.
pub fn run(command: TransferCommand) -> Result<()> {
    match command {
        TransferCommand::Segment(a) => transfer_segment(a),
        TransferCommand::Mosaics(a) => transfer_mosaics(a),
        TransferCommand::Depth(a) => transfer_depth(a),
        TransferCommand::Scenes(a) => transfer_scenes(a),
    }
}

/// The encoder of a transfer task (a checkpoint's, its random-init one, or an exported one)
/// with the task's flags, then `edit`.
fn transfer_encoder(
    a: &EncoderArgs,
    edit: impl FnOnce(&mut ExperimentConfig),
) -> Result<Evaluation> {
    let settings = a.common.settings();
    Ok(match (&a.checkpoint, &a.encoder) {
        (Some(checkpoint), _) => {
            Evaluation::from_checkpoint(checkpoint, &settings, edit, a.random_init)?
        }
        (None, Some(file)) => Evaluation::from_exported(file, &a.config, &settings, edit)?,
        (None, None) => anyhow::bail!("give the encoder: --checkpoint, or --encoder with --config"),
    })
}

fn transfer_segment(args: SegmentArgs) -> Result<()> {
    let e = match &args.tune.resume {
        Some(dir) => resumed(&args.encoder, dir, workflow::SEGMENT_CHECKPOINT)?,
        None => {
            if let (Some(SegmentData::Voc { path }), Some(_)) =
                (&args.dataset, &args.encoder.common.data)
            {
                anyhow::bail!(
                    "--data names the images of mosaics; --dataset voc:{} reads its own images: drop --data",
                    path.display()
                );
            }
            transfer_encoder(&args.encoder, |c| {
                let s = &mut c.transfer.segment;
                args.tune.apply(&mut s.epochs, &mut s.learning_rate);
                s.data = args.dataset.clone().unwrap_or(s.data.clone());
            })?
        }
    };
    let outcome = fine_tune(&args.tune, "segment", |out, opts, bar| {
        workflow::segment(&e, out, opts, bar, &mut print_segment)
    })?;
    wrote(outcome, "segment", run_dir::SEGMENT)
}

/// The result of a segmentation run, as soon as it is scored.
fn print_segment(run: &workflow::SegmentRun) {
    let (r, v) = (&run.result, &run.result.val);
    println!(
        "segmentation ({}, {} training / {} validation images, {} steps): mIoU {:.2}%  pixel accuracy {:.2}%",
        run.encoder,
        r.train_images,
        r.val_images,
        r.steps,
        100.0 * v.miou,
        100.0 * v.pixel_accuracy
    );
    let per_class: Vec<String> = r
        .classes
        .iter()
        .zip(&v.per_class_iou)
        .map(|(c, iou)| {
            format!(
                "{c} {}",
                iou.map_or("–".into(), |x| format!("{:.1}", 100.0 * x))
            )
        })
        .collect();
    println!("IoU % per class: {}", per_class.join(", "));
}

/// The encoder and config a transfer run in `dir` started with, from its newest checkpoint of
/// `kind`; the flags that would change the run are refused.
fn resumed(a: &EncoderArgs, dir: &Path, kind: byol::io::FileKind<'static>) -> Result<Evaluation> {
    let c = &a.common;
    if a.checkpoint.is_some()
        || a.encoder.is_some()
        || c.data.is_some()
        || c.seed.is_some()
        || !c.sets.is_empty()
    {
        anyhow::bail!(
            "--resume continues the run with its recorded encoder and config: drop --checkpoint, --encoder, --data, --seed and --set"
        );
    }
    Ok(Evaluation::resumed_transfer(dir, kind)?)
}

/// Fine-tune a dense task with a progress bar in `--out` (default runs/<task>-<time>) or the
/// `--resume` folder, stopping with a checkpoint at Ctrl-C or `--max-steps`.
fn fine_tune<R>(
    tune: &TuneArgs,
    task: &str,
    run: impl FnOnce(&Path, &TransferOptions, &mut Bar) -> byol::Result<TransferOutcome<R>>,
) -> Result<(TransferOutcome<R>, PathBuf)> {
    let out = match (&tune.resume, &tune.out) {
        (Some(d), _) | (None, Some(d)) => d.clone(),
        (None, None) => workflow::new_run_dir(task, std::time::SystemTime::now()),
    };
    let interrupt = stop_on_signal(&format!(
        "resume from the last checkpoint with: byol transfer {task} --resume {}",
        out.display()
    ))?;
    let opts = TransferOptions {
        resume: tune.resume.is_some(),
        max_steps: tune.max_steps,
        interrupt: Some(interrupt),
    };
    let mut bar = Bar::new();
    let result = run(&out, &opts, &mut bar);
    bar.pb.finish_and_clear();
    Ok((result?, out))
}

/// What a transfer run left in `out`: its files, or the checkpoint to resume from.
fn wrote<R>((outcome, out): (TransferOutcome<R>, PathBuf), task: &str, result: &str) -> Result<()> {
    match outcome {
        TransferOutcome::Stopped { step } => println!(
            "stopped at step {step} with a checkpoint; continue with: byol transfer {task} --resume {}",
            out.display()
        ),
        TransferOutcome::Finished(_) => println!(
            "wrote {} and {}",
            out.join(result).display(),
            out.join(run_dir::PREDICTIONS).display()
        ),
    }
    Ok(())
}

fn transfer_mosaics(args: MosaicArgs) -> Result<()> {
    let e = transfer_encoder(&args.encoder, |c| {
        c.transfer.segment.data = args
            .dataset
            .clone()
            .unwrap_or(c.transfer.segment.data.clone())
    })?;
    let (train, val, lists) =
        workflow::write_mosaics(&e, &e.config.transfer.segment.data, &args.out)?;
    println!(
        "wrote {train} training and {val} validation mosaics in PASCAL VOC's layout under {} (lists in {})",
        args.out.display(),
        lists.display()
    );
    println!(
        "fine-tune on them with: byol transfer segment … --dataset voc:{}",
        args.out.display()
    );
    Ok(())
}

fn transfer_depth(args: DepthArgs) -> Result<()> {
    let e = match &args.tune.resume {
        Some(dir) => resumed(&args.encoder, dir, workflow::DEPTH_CHECKPOINT)?,
        None => {
            if args.encoder.common.data.is_some() {
                anyhow::bail!(
                    "transfer depth reads its own data (--dataset synthetic or folder:<path>); --data names the images of segmentation mosaics: drop it"
                );
            }
            transfer_encoder(&args.encoder, |c| {
                let d = &mut c.transfer.depth;
                args.tune.apply(&mut d.epochs, &mut d.learning_rate);
                d.data = args.dataset.clone().unwrap_or(d.data.clone());
            })?
        }
    };
    let outcome = fine_tune(&args.tune, "depth", |out, opts, bar| {
        workflow::depth(&e, out, opts, bar, &mut print_depth)
    })?;
    wrote(outcome, "depth", run_dir::DEPTH)
}

/// The result of a depth run, as soon as it is scored.
fn print_depth(run: &workflow::DepthRun) {
    let (r, v) = (&run.result, &run.result.val);
    println!(
        "depth ({}, {} training / {} validation images, {} steps): δ<1.25 {:.2}%  δ<1.25² {:.2}%  δ<1.25³ {:.2}%  rms {:.3} m  rel {:.3}",
        run.encoder,
        r.train_images,
        r.val_images,
        r.steps,
        100.0 * v.delta1,
        100.0 * v.delta2,
        100.0 * v.delta3,
        v.rms,
        v.rel
    );
}

fn transfer_scenes(args: ScenesArgs) -> Result<()> {
    let data = byol::transfer::depth::DepthData::Synthetic {
        train: args.train,
        val: args.val,
        size: args.size,
    };
    let (train, val) = workflow::write_scenes(&data, args.seed, &args.out)?;
    println!(
        "wrote {train} training and {val} validation scenes under {}",
        args.out.display()
    );
    println!(
        "fine-tune on them with: byol transfer depth … --dataset folder:{}",
        args.out.display()
    );
    Ok(())
}
