//! The command line: every subcommand's flags (`distill` and `transfer` in their own files). Closed choices are `ValueEnum`s that convert
//! into the library's types; everything else is passed on typed.

use byol::data::Source;
use byol::workflow::Settings;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

pub mod distill;
pub mod transfer;

fn fraction(s: &str) -> Result<f64, String> {
    byol::workflow::parse_fraction(s).map_err(|e| e.to_string())
}

pub(crate) fn data_choice(s: &str) -> Result<Source, String> {
    Ok(Source::parse_shorthand(s))
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// burn's pure-Rust CPU backend.
    Flex,
    /// NVIDIA GPUs (a build with `--features cuda`).
    Cuda,
    /// Any GPU through wgpu on Vulkan, Metal or DirectX 12: AMD, Intel, Apple, or Mesa's
    /// lavapipe on the CPU (a build with `--features wgpu`).
    Wgpu,
}

impl From<Backend> for byol::backend::BackendKind {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Flex => byol::backend::BackendKind::Flex,
            Backend::Cuda => byol::backend::BackendKind::Cuda,
            Backend::Wgpu => byol::backend::BackendKind::Wgpu,
        }
    }
}

/// `bench step --arch`: the references' configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    /// ResNet-18, CIFAR stem, 32×32 (r18c32).
    #[value(alias = "r18c32")]
    Resnet18Cifar,
    /// ResNet-50, 224×224 (r50i224).
    #[value(alias = "r50i224")]
    Resnet50,
    /// The `vit-cifar10-cpu` preset's ViT and recipe, 32×32 (vitc32; bench/vit_torch.py).
    #[value(alias = "vitc32")]
    VitCifar,
}

impl From<Arch> for byol::bench::StepArch {
    fn from(a: Arch) -> Self {
        match a {
            Arch::Resnet18Cifar => byol::bench::StepArch::Resnet18Cifar,
            Arch::Resnet50 => byol::bench::StepArch::Resnet50,
            Arch::VitCifar => byol::bench::StepArch::VitCifar,
        }
    }
}

/// `--precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    F32,
    Bf16,
    F16,
}

impl From<Precision> for byol::model::precision::Precision {
    fn from(p: Precision) -> Self {
        match p {
            Precision::F32 => Self::F32,
            Precision::Bf16 => Self::Bf16,
            Precision::F16 => Self::F16,
        }
    }
}

#[derive(Parser)]
#[command(
    name = "byol",
    version,
    about = "BYOL self-supervised pre-training and evaluation"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Pre-train an encoder with BYOL, then report its kNN accuracy beside a random-init encoder's.
    Pretrain(PretrainArgs),
    /// Print the resolved configuration (preset or file, plus flags) as TOML.
    DumpConfig(ConfigArgs),
    /// Evaluate a checkpoint.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Write the representation of every image (train and test splits) to a safetensors file.
    Embed(EmbedArgs),
    /// Write the encoder to a safetensors file: a ResNet under torchvision's `resnet*` tensor
    /// names, a ViT under timm's `VisionTransformer` names.
    Export(ExportArgs),
    /// Write a PNG grid of images and their two training views (the config's augmentations).
    Augment(AugmentArgs),
    /// Train and evaluate a list of variants of one config; write a table and a chart.
    Ablate(AblateArgs),
    /// Measure throughput beside a baseline in the same process.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Convert an ImageFolder into tar shards (WebDataset layout) with a manifest, for
    /// `data.source = "shards"`.
    Shard(ShardArgs),
    /// Fine-tune the encoder for a dense task (the paper's Table 4).
    #[command(subcommand)]
    Transfer(transfer::TransferCommand),
    /// Distil a fine-tuned classifier into a student on the unlabelled images (SimCLR v2's
    /// third step): the teacher's softmax at temperature T are the student's targets.
    Distill(distill::DistillArgs),
}

#[derive(Args)]
pub struct ShardArgs {
    /// The ImageFolder: `root/train/<class>/…` and `root/test/<class>/…`, or `root/<class>/…`.
    #[arg(long, required_unless_present = "verify")]
    pub input: Option<PathBuf>,
    /// Output folder; `train/` and `test/` shard folders are written in it.
    #[arg(long, required_unless_present = "verify")]
    pub out: Option<PathBuf>,
    /// Write nothing: check the shards in this folder (as `byol shard` wrote them) against
    /// their manifests, every shard's size, SHA-256 and image count; exits with 1 if any differs.
    #[arg(long, conflicts_with_all = ["input", "out"])]
    pub verify: Option<PathBuf>,
    /// Target size of a shard in MB (a shard is closed once it reaches it), 1 to 1,048,576.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub shard_mb: u64,
    /// Resize images whose shorter side is larger than this many pixels (re-encoded as JPEG);
    /// ImageNet pipelines often store 256.
    #[arg(long)]
    pub resize_shorter: Option<u32>,
    /// JPEG quality of resized images.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: u8,
    /// Seed of the order in which samples are written (and of the holdout split).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Without `train/` and `test/`: the fraction of each class written as the test split.
    #[arg(long, default_value = "0.1", value_parser = fraction)]
    pub holdout_fraction: f64,
}

#[derive(Args)]
pub struct AugmentArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output file (.png).
    #[arg(long, default_value = "views.png")]
    pub out: PathBuf,
    /// Number of images (rows).
    #[arg(long, default_value_t = 8)]
    pub count: usize,
    /// Upscaling factor of each tile (default: to about 128 pixels).
    #[arg(long)]
    pub scale: Option<usize>,
}

#[derive(Args)]
pub struct AblateArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The variants: a TOML file of `[[variant]]` tables (name, set = [overrides], random-init).
    #[arg(long)]
    pub grid: PathBuf,
    /// Where each variant's run and the reports go. Default: runs/ablate-<grid name>.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Also run the linear evaluation of each run.
    #[arg(long)]
    pub linear: bool,
    /// Run every variant at each of these seeds (`--seeds 0,1,2`); the table reports the mean
    /// and spread. Default: the config's seed.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Views per second of the batched view pipeline against the per-image host pipeline.
    Augment(BenchAugmentArgs),
    /// Samples per second of the training step on the reference's model and batch (one JSON
    /// line in the fields of shared/reference/byol_torch.py).
    Step(BenchStepArgs),
    /// Images per second of the training loader: read, decode, and the two random resized crops
    /// of the views, in batches (`bench/decode.sh` runs PyTorch's DataLoader beside it).
    Decode(BenchDecodeArgs),
}

#[derive(Args)]
pub struct BenchStepArgs {
    /// The reference's configuration.
    #[arg(long, value_enum, default_value_t = Arch::Resnet18Cifar)]
    pub arch: Arch,
    /// Samples per step (each two views). The reference uses 512 / 256 on a GPU, 64 / 8 on a CPU.
    #[arg(long, value_parser = positive())]
    pub batch: Option<usize>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    pub backend: Backend,
    /// Timed steps (median reported).
    #[arg(long, default_value_t = 20, value_parser = positive())]
    pub steps: usize,
    /// Untimed steps first, at least 1: the first (reported apart as `first_step_s`) compiles the
    /// kernels and, on a GPU, runs autotune unless the cache has its choices.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Compute type of the encoders (bf16 / f16: mixed precision, the rest in f32).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// A config field changed from the reference's: `--set model.encoder.base-width=16`
    /// (repeatable; reported in the line's `overrides`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Args)]
pub struct BenchAugmentArgs {
    /// View sides to measure; source images are 32 px for 32 and 8/7 of the side otherwise.
    #[arg(long, value_delimiter = ',', default_value = "32,224", value_parser = positive())]
    pub sizes: Vec<usize>,
    /// Images per batch (each gives two views).
    #[arg(long, default_value_t = 256, value_parser = positive())]
    pub batch: usize,
    /// Timed batches (median reported), after 2 warm-up batches.
    #[arg(long, default_value_t = 10, value_parser = positive())]
    pub reps: usize,
    /// Compute backend of the batched pipeline.
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    pub backend: Backend,
}

#[derive(Args)]
pub struct BenchDecodeArgs {
    /// An ImageFolder (all of `train/` if it has one) or `shards:FOLDER`.
    #[arg(long)]
    pub data: PathBuf,
    /// Side of the crops.
    #[arg(long, default_value_t = 224, value_parser = positive())]
    pub size: usize,
    /// Decoding threads.
    #[arg(long, default_value_t = 1, value_parser = positive())]
    pub threads: usize,
    /// Timed epochs over the images (median reported), after one untimed epoch.
    #[arg(long, default_value_t = 3, value_parser = positive())]
    pub passes: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 64, value_parser = positive())]
    pub batch: usize,
    /// Shuffle buffer of the shard stream (with `shards:`).
    #[arg(long, default_value_t = 4096)]
    pub shuffle_buffer: usize,
    /// Crop interpolation.
    #[arg(long, value_enum, default_value_t = Interp::Bilinear)]
    pub interpolation: Interp,
}

/// `--interpolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Interp {
    Bilinear,
    Bicubic,
}

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub eval: EvalArgs,
    /// Output file (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Also draw a 2-D t-SNE map of the test split's representations, coloured by class (.png).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Test images on the map (a class-balanced subset).
    #[arg(long, default_value_t = 2000)]
    pub plot_points: usize,
    /// t-SNE perplexity.
    #[arg(long, default_value_t = 30.0)]
    pub perplexity: f32,
}

#[derive(Args)]
pub struct ExportArgs {
    /// A run directory or a checkpoint file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output file (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the online projector, as PyTorch's `nn.Sequential` head under `projector.`
    /// (SimCLR v2's layout; what `eval finetune --from projector:1` starts from).
    #[arg(long)]
    pub with_projector: bool,
}

#[derive(Subcommand)]
pub enum EvalCommand {
    /// k-nearest-neighbour accuracy of a checkpoint's frozen encoder.
    Knn(KnnArgs),
    /// Linear evaluation of a checkpoint's frozen encoder (fast mode: features computed once).
    Linear(LinearArgs),
    /// Semi-supervised fine-tuning of the encoder and a classifier on a fraction of the labels.
    Finetune(FinetuneArgs),
}

#[derive(Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub eval: EvalArgs,
    /// Labelled fraction: `1%`, `10%`, `100%` (or a number in (0, 1]).
    #[arg(long, default_value = "10%", value_parser = fraction)]
    pub labels: f64,
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Learning rate, or several separated by commas (`0.5,0.05`): each is tried and the one
    /// with the best top-1 on held-out training images is kept (`eval.finetune.learning-rates`,
    /// `eval.finetune.validation-fraction`).
    #[arg(long, value_delimiter = ',', num_args = 1)]
    pub lr: Option<Vec<f64>>,
    /// Where the classifier goes: `encoder` (the paper's protocol) or `projector:1` (on the
    /// projector's first layer, fine-tuned with the encoder: SimCLR v2's). Sets
    /// `eval.finetune.from`.
    #[arg(long)]
    pub from: Option<byol::eval::FinetuneFrom>,
    /// Also write the fine-tuned encoder in torchvision's layout (as `byol export`), for
    /// `byol transfer … --encoder`.
    #[arg(long)]
    pub save_encoder: Option<PathBuf>,
    /// Also write the whole fine-tuned classifier (encoder, projector layer, head, and what it
    /// was trained on): the teacher of `byol distill`.
    #[arg(long)]
    pub save_model: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct ConfigArgs {
    #[arg(long, short, default_value = "small-cpu", help = presets_help())]
    pub config: String,
    #[command(flatten)]
    pub common: CommonArgs,
    #[arg(long)]
    pub epochs: Option<u64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per update (`train.accumulate`): the gradients of N slices of each batch
    /// averaged before one update (the paper's protocol for smaller batches; less memory).
    #[arg(long, value_name = "N")]
    pub accumulate: Option<usize>,
    /// Data parallel over these devices, one replica each: `cuda:0,cuda:1` (GPUs of this
    /// machine) or `flex:0,flex:1` (CPU replicas). Sets `train.devices`.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub devices: Option<Vec<byol::backend::DeviceId>>,
}

impl ConfigArgs {
    /// The flags as the library's typed settings.
    pub fn settings(&self) -> Settings {
        Settings {
            epochs: self.epochs,
            batch_size: self.batch_size,
            accumulate: self.accumulate,
            devices: self.devices.clone(),
            ..self.common.settings()
        }
    }
}

/// The flags of every command that makes a config from a preset or file: the data, the
/// backend, the seed and any field (`pretrain`, `dump-config`, `ablate`, `distill`, `transfer`).
#[derive(Args, Clone)]
pub struct CommonArgs {
    /// Data: `synthetic`, `cifar10`/`cifar100` (binary format, downloaded into ./data if missing),
    /// `shards:FOLDER` (tar shards in FOLDER/train and FOLDER/test, as `byol shard` writes them),
    /// or the path of an ImageFolder. `distill` takes its training split as the unlabelled images
    /// (their labels unused unless `--labelled-weight`); `transfer segment` makes its mosaics of
    /// them.
    #[arg(long, value_parser = data_choice)]
    pub data: Option<Source>,
    /// Compute backend.
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Any config field: `--set model.encoder.base-width=16` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl CommonArgs {
    /// These flags as the library's typed settings.
    pub fn settings(&self) -> Settings {
        Settings {
            set: self.sets.clone(),
            data: self.data.clone(),
            backend: self.backend.map(Into::into),
            seed: self.seed,
            ..Default::default()
        }
    }
}

#[derive(Args)]
pub struct PretrainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Run directory (checkpoints, metrics.jsonl, evals.jsonl, config.toml, run.json, eval.json). Default: runs/<config>-<time>.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, with its recorded config
    /// (--config is ignored). A flag that changes the run's trajectory (--epochs, --batch-size,
    /// --seed, --data, a --set of such a field) is refused with the old and new value; others,
    /// such as --backend or a --set of train.log-every, apply.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "run_dir")]
    pub resume: Option<PathBuf>,
    /// Skip the random-init encoder's kNN evaluation.
    #[arg(long)]
    pub no_baseline: bool,
    /// Stop with a checkpoint after this many steps in total, at least 1 (continue later with
    /// --resume).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_steps: Option<u64>,
    /// Stop after this many seconds of training (a checkpoint, then the kNN evaluation of the
    /// encoder as it is): time to accuracy, with the schedule of the full run cut short.
    #[arg(long, value_name = "SECONDS")]
    pub time_budget: Option<f64>,
}

#[derive(Args)]
pub struct EvalArgs {
    /// A run directory or a checkpoint file.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Evaluate on this data instead of the checkpoint's (same forms as `pretrain --data`):
    /// another ImageFolder with its own classes is a transfer evaluation.
    #[arg(long, value_parser = data_choice)]
    pub data: Option<Source>,
    /// Evaluate the random-init encoder of the checkpoint's architecture and seed instead.
    #[arg(long)]
    pub random_init: bool,
    /// Any config field: `--set eval.linear.epochs=20` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Args)]
pub struct KnnArgs {
    #[command(flatten)]
    pub eval: EvalArgs,
    #[arg(long)]
    pub k: Option<usize>,
    #[arg(long)]
    pub temperature: Option<f64>,
}

#[derive(Args)]
pub struct LinearArgs {
    #[command(flatten)]
    pub eval: EvalArgs,
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Learning rates to sweep, comma-separated (default: the paper's 0.4,0.3,0.2,0.1,0.05).
    #[arg(long, value_delimiter = ',')]
    pub lrs: Option<Vec<f64>>,
}

/// `--config`'s help: the embedded presets' names, from the list the binary carries.
fn presets_help() -> String {
    let names: Vec<&str> = byol::config::PRESETS.iter().map(|p| p.0).collect();
    format!("A preset name ({}) or a TOML file", names.join(", "))
}

/// A count or size of at least 1 (0 would measure nothing, or divide by it).
fn positive() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}
