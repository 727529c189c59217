//! `byol transfer`: what its subcommands run and print.

use crate::args::transfer::*;
use crate::progress::Bar;
use anyhow::Result;
use byol::ExperimentConfig;
use byol::train::run_dir;
use byol::workflow::{self, Evaluation};
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
        (None, None) => unreachable!("clap requires --checkpoint or --encoder"),
    })
}

fn transfer_segment(args: SegmentArgs) -> Result<()> {
    if let (Some(byol::transfer::segment::SegmentData::Voc { path }), Some(_)) =
        (&args.dataset, &args.encoder.common.data)
    {
        anyhow::bail!(
            "--data names the images of mosaics; --dataset voc:{} reads its own images: drop --data",
            path.display()
        );
    }
    let e = transfer_encoder(&args.encoder, |c| {
        let s = &mut c.transfer.segment;
        args.tune.apply(&mut s.epochs, &mut s.learning_rate);
        s.data = args.dataset.clone().unwrap_or(s.data.clone());
    })?;
    let (run, out) = fine_tune(&args.tune, "segment", |out, bar| {
        workflow::segment(&e, out, bar)
    })?;
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
    println!(
        "wrote {} and {}",
        out.join(run_dir::SEGMENT).display(),
        out.join(run_dir::PREDICTIONS).display()
    );
    Ok(())
}

/// Fine-tune a dense task with a progress bar into `--out` (default runs/<task>-<time>).
fn fine_tune<R>(
    tune: &TuneArgs,
    task: &str,
    run: impl FnOnce(&Path, &mut Bar) -> byol::Result<R>,
) -> Result<(R, PathBuf)> {
    let out = tune
        .out
        .clone()
        .unwrap_or_else(|| workflow::new_run_dir(task, std::time::SystemTime::now()));
    let mut bar = Bar::new();
    let result = run(&out, &mut bar)?;
    bar.pb.finish_and_clear();
    Ok((result, out))
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
    if args.encoder.common.data.is_some() {
        anyhow::bail!(
            "transfer depth reads its own data (--dataset synthetic or folder:<path>); --data names the images of segmentation mosaics: drop it"
        );
    }
    let e = transfer_encoder(&args.encoder, |c| {
        let d = &mut c.transfer.depth;
        args.tune.apply(&mut d.epochs, &mut d.learning_rate);
        d.data = args.dataset.clone().unwrap_or(d.data.clone());
    })?;
    let (run, out) = fine_tune(&args.tune, "depth", |out, bar| {
        workflow::depth(&e, out, bar)
    })?;
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
    println!(
        "wrote {} and {}",
        out.join(run_dir::DEPTH).display(),
        out.join(run_dir::PREDICTIONS).display()
    );
    Ok(())
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
