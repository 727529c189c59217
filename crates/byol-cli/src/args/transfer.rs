//! `byol transfer …`: the dense tasks' flags and what the commands print.

use super::CommonArgs;
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
    #[arg(long)]
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
    /// The data (the labelled images of the segmentation mosaics; refused where nothing reads
    /// it: `transfer depth`, `--dataset voc:…`), the backend, the seed, `--set`.
    #[command(flatten)]
    pub common: CommonArgs,
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
    /// The run directory: checkpoints while it trains, then the result (`segment.json` or
    /// `depth.json`), `predictions.png` and `config.toml` (default: runs/<task>-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, with its recorded config
    /// and encoder (the other flags of the run cannot change then).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["out", "epochs", "lr"])]
    pub resume: Option<PathBuf>,
    /// Stop with a checkpoint after this many steps in total, at least 1 (continue with
    /// --resume).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_steps: Option<u64>,
}

impl TuneArgs {
    /// Set a task's epochs and learning rate to the flags given.
    pub fn apply(&self, epochs: &mut usize, learning_rate: &mut f64) {
        *epochs = self.epochs.unwrap_or(*epochs);
        *learning_rate = self.lr.unwrap_or(*learning_rate);
    }
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
