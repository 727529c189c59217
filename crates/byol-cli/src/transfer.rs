//! `byol transfer …`: the dense tasks' flags and what the commands print.

use crate::Bar;
use crate::args::data_choice;
use anyhow::Result;
use byol::ExperimentConfig;
use byol::data::Source;
use byol::workflow::{self, Evaluation, Settings};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum TransferCommand {
    /// Semantic segmentation: an FCN on the encoder, fine-tuned and scored by mIoU.
    Segment(SegmentArgs),
    /// Write the built-in segmentation mosaics in PASCAL VOC's layout (read back by
    /// `--dataset voc:<out>`).
    Mosaics(MosaicArgs),
    /// Depth estimation: an up-projection decoder on the encoder, fine-tuned and scored by
    /// δ < 1.25ᵏ, rms and rel.
    Depth(DepthArgs),
    /// Write the built-in synthetic depth scenes as RGB PNGs and 16-bit depth PNGs (mm), read back
    /// by `transfer depth --dataset folder:<out>`.
    Scenes(ScenesArgs),
}

/// The encoder of a transfer task and the labelled images.
#[derive(Args)]
pub struct EncoderArgs {
    /// A run directory or a checkpoint file: its online encoder.
    #[arg(long, required_unless_present = "encoder")]
    pub checkpoint: Option<PathBuf>,
    /// Use the random-init encoder of the checkpoint's architecture and seed instead.
    #[arg(long, requires = "checkpoint")]
    pub random_init: bool,
    /// An encoder in torchvision's layout (`byol export`, `eval finetune --save-encoder`), with
    /// `--config` for everything else (its architecture comes from the file when it records one).
    #[arg(long, conflicts_with = "checkpoint")]
    pub encoder: Option<PathBuf>,
    /// The config of an `--encoder` (a preset or a TOML file).
    #[arg(long, default_value = "cifar10-cpu", requires = "encoder")]
    pub config: String,
    /// The labelled images the segmentation mosaics are made of (same forms as `pretrain
    /// --data`); refused where nothing reads it (`transfer depth`, `--dataset voc:…`).
    #[arg(long, value_parser = data_choice)]
    pub data: Option<Source>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Any config field: `--set transfer.segment.epochs=20` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Args)]
pub struct SegmentArgs {
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// The segmentation data: `mosaic` (2 × 2 tiles of the labelled images), `mosaic:<grid>`,
    /// or `voc:<folder>` (PASCAL VOC's layout). Sets `transfer.segment.data`.
    #[arg(long, value_parser = byol::transfer::segment::SegmentData::parse)]
    pub dataset: Option<byol::transfer::segment::SegmentData>,
    #[command(flatten)]
    pub tune: TuneArgs,
}

/// A dense fine-tuning run's budget and where it writes.
#[derive(Args)]
pub struct TuneArgs {
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// The run directory: the result (`segment.json` or `depth.json`), `predictions.png` and
    /// `config.toml` (default: runs/<task>-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct DepthArgs {
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// The depth data: `synthetic` (built-in scenes) or `folder:<path>` (`train/` and `val/`,
    /// each with `rgb/<id>.png|jpg` and `depth/<id>.png`, 16-bit, millimetres). Sets
    /// `transfer.depth.data`.
    #[arg(long, value_parser = byol::transfer::depth::DepthData::parse)]
    pub dataset: Option<byol::transfer::depth::DepthData>,
    #[command(flatten)]
    pub tune: TuneArgs,
}

#[derive(Args)]
pub struct ScenesArgs {
    /// The folder to write (train/ and val/, each with rgb/ and depth/).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 2000)]
    pub train: usize,
    #[arg(long, default_value_t = 500)]
    pub val: usize,
    /// Side of the square scenes, in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args)]
pub struct MosaicArgs {
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// `mosaic` or `mosaic:<grid>`.
    #[arg(long, value_parser = byol::transfer::segment::SegmentData::parse)]
    pub dataset: Option<byol::transfer::segment::SegmentData>,
    /// The folder to write (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/).
    #[arg(long)]
    pub out: PathBuf,
}

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

impl byol::transfer::tune::Progress for Bar {
    fn on_start(&mut self, total: u64) {
        self.pb.set_length(total);
        self.pb.reset_eta();
    }
    fn on_step(&mut self, step: u64, loss: f32) {
        self.pb.set_position(step);
        self.pb.set_message(format!("loss {loss:.4}"));
    }
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
