//! `byol transfer`: what its subcommands run and print.

use crate::args::transfer::*;
use crate::progress::Bar;
use anyhow::Result;
use byol::ExperimentConfig;
use byol::workflow::{self, Evaluation, Settings};

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
fn transfer_encoder(a: &EncoderArgs, edit: impl FnOnce(&mut ExperimentConfig)) -> Result<Evaluation> {
    let settings = Settings { set: a.sets.clone(), data: a.data.clone(), seed: a.seed, ..Default::default() };
    Ok(match (&a.checkpoint, &a.encoder) {
        (Some(checkpoint), _) => Evaluation::from_checkpoint(checkpoint, &settings, edit, a.random_init)?,
        (None, Some(file)) => Evaluation::from_exported(file, &a.config, &settings, edit)?,
        (None, None) => unreachable!("clap requires --checkpoint or --encoder"),
    })
}

fn transfer_segment(args: SegmentArgs) -> Result<()> {
    if let (Some(byol::transfer::segment::SegmentData::Voc { path }), Some(_)) = (&args.dataset, &args.encoder.data) {
        anyhow::bail!("--data names the images of mosaics; --dataset voc:{} reads its own images: drop --data", path.display());
    }
    let e = transfer_encoder(&args.encoder, |c| {
        let s = &mut c.transfer.segment;
        s.epochs = args.tune.epochs.unwrap_or(s.epochs);
        s.learning_rate = args.tune.lr.unwrap_or(s.learning_rate);
        s.data = args.dataset.clone().unwrap_or(s.data.clone());
    })?;
    let out = args.tune.out.unwrap_or_else(|| workflow::new_run_dir("segment", std::time::SystemTime::now()));
    let mut bar = Bar::new();
    let run = workflow::segment(&e, &out, &mut bar)?;
    bar.pb.finish_and_clear();
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
    let per_class: Vec<String> =
        r.classes.iter().zip(&v.per_class_iou).map(|(c, iou)| format!("{c} {}", iou.map_or("–".into(), |x| format!("{:.1}", 100.0 * x)))).collect();
    println!("IoU % per class: {}", per_class.join(", "));
    println!("wrote {} and {}", out.join(workflow::SEGMENT).display(), out.join(workflow::PREDICTIONS).display());
    Ok(())
}

fn transfer_mosaics(args: MosaicArgs) -> Result<()> {
    let e = transfer_encoder(&args.encoder, |c| c.transfer.segment.data = args.dataset.clone().unwrap_or(c.transfer.segment.data.clone()))?;
    let (train, val, lists) = workflow::write_mosaics(&e, &e.config.transfer.segment.data, &args.out)?;
    println!("wrote {train} training and {val} validation mosaics in PASCAL VOC's layout under {} (lists in {})", args.out.display(), lists.display());
    println!("fine-tune on them with: byol transfer segment … --dataset voc:{}", args.out.display());
    Ok(())
}

fn transfer_depth(args: DepthArgs) -> Result<()> {
    if args.encoder.data.is_some() {
        anyhow::bail!("transfer depth reads its own data (--dataset synthetic or folder:<path>); --data names the images of segmentation mosaics: drop it");
    }
    let e = transfer_encoder(&args.encoder, |c| {
        let d = &mut c.transfer.depth;
        d.epochs = args.tune.epochs.unwrap_or(d.epochs);
        d.learning_rate = args.tune.lr.unwrap_or(d.learning_rate);
        d.data = args.dataset.clone().unwrap_or(d.data.clone());
    })?;
    let out = args.tune.out.unwrap_or_else(|| workflow::new_run_dir("depth", std::time::SystemTime::now()));
    let mut bar = Bar::new();
    let run = workflow::depth(&e, &out, &mut bar)?;
    bar.pb.finish_and_clear();
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
    println!("wrote {} and {}", out.join(workflow::DEPTH).display(), out.join(workflow::PREDICTIONS).display());
    Ok(())
}

fn transfer_scenes(args: ScenesArgs) -> Result<()> {
    let data = byol::transfer::depth::DepthData::Synthetic { train: args.train, val: args.val, size: args.size };
    let (train, val) = workflow::write_scenes(&data, args.seed, &args.out)?;
    println!("wrote {train} training and {val} validation scenes under {}", args.out.display());
    println!("fine-tune on them with: byol transfer depth … --dataset folder:{}", args.out.display());
    Ok(())
}
