//! `byol distill`'s flags.

use super::CommonArgs;
use byol::model::Arch;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct DistillArgs {
    /// The teacher: a fine-tuned classifier (`byol eval finetune --save-model FILE`). With
    /// `--resume`, the run's own teacher when left out.
    #[arg(long, required_unless_present = "resume")]
    pub teacher: Option<PathBuf>,
    /// A preset or TOML file for the data, the seed and the `[distill]` settings (the
    /// architecture and image size come from the teacher).
    #[arg(long, short, default_value = "cifar10-cpu")]
    pub config: String,
    /// The data, the backend, the seed, `--set` (the training split of the data is the
    /// unlabelled set, its test split scores teacher and student).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Run directory (checkpoints, metrics.jsonl, config.toml, then student.safetensors and
    /// distill.json). Default: runs/distill-<time>.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the distillation in this directory from its last checkpoint, with its recorded
    /// config and teacher (a change of settings that alters the run is refused).
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "run_dir")]
    pub resume: Option<PathBuf>,
    /// Epochs over the unlabelled images (`distill.epochs`).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// `distill.batch-size`.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// `distill.learning-rate`.
    #[arg(long)]
    pub lr: Option<f64>,
    /// The softmax temperature T of teacher and student (`distill.temperature`).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Add the cross-entropy on the teacher's labelled subset with this weight
    /// (`distill.labelled-weight`).
    #[arg(long)]
    pub labelled_weight: Option<f64>,
    /// A smaller or larger student: its base width (`distill.student.base-width`; default the
    /// teacher's: self-distillation).
    #[arg(long)]
    pub student_base_width: Option<usize>,
    /// The student's depth, `resnet18`, `resnet34`, `resnet50`, … (`distill.student.arch`).
    #[arg(long, value_parser = arch)]
    pub student_arch: Option<Arch>,
    /// Stop with a checkpoint after this many steps in total, at least 1 (continue with
    /// --resume).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_steps: Option<u64>,
}

fn arch(s: &str) -> Result<Arch, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        format!("`{s}`: expected resnet18, resnet34, resnet50, resnet101, resnet152 or resnet200")
    })
}
