//! BYOL — Bootstrap Your Own Latent (Grill et al., NeurIPS 2020, arXiv 2006.07733): a folder of
//! unlabelled images in, a trained image encoder out, with the paper's evaluations, variants
//! and baselines through the same code.
//!
//! The library knows nothing of the terminal: it reports through [`train::Observer`] and
//! [`tracing`]. Every tensor is a burn `Tensor<D>`; the backend (`flex` on the CPU, `wgpu`,
//! `cuda`) is chosen at run time by the [`Device`] a config names.
//!
//! # A guide
//!
//! - **An experiment** is an [`ExperimentConfig`]: a preset or a TOML file (one section per
//!   component, each type next to its code: [`model::ModelConfig`], [`ema::TargetConfig`],
//!   [`loss::ObjectiveConfig`], [`optim::OptimConfig`], [`data::DataConfig`],
//!   [`augment::AugmentConfig`], [`train::TrainConfig`], [`eval::EvalConfig`]), with a front
//!   end's [`workflow::Settings`] on top.
//! - **Pre-training**: [`train::pretrain`] runs the loop in a run directory (checkpoints,
//!   metrics, kNN monitor, resume); underneath, [`train::TrainState`] is the whole state and
//!   [`train::train_step`] the pure step from (state, two views, lr, τ) to the next state.
//!   [`train::checkpoint`] reads and writes states. With several devices (`train.devices`),
//!   [`train::Replicas`] runs one state per device, linked by [`collective`].
//! - **The model**: [`model::Online`] (encoder [`model::Encoder`], a ResNet or a ViT → projector
//!   → predictor) and
//!   [`model::Target`]; [`loss`] the objectives; [`ema`] the target update; [`optim`] LARS.
//! - **Data and views**: [`data::load`] gives the image sets; [`augment`] the paper's two views.
//! - **Evaluations** of an encoder: [`train::knn_of_encoder`], [`train::linear_of_encoder`],
//!   [`train::finetune_of_encoder`] with a config's protocols (the protocols themselves in
//!   [`eval`]); from a checkpoint: [`workflow::Evaluation`].
//! - **The supervised protocols** (semi-supervised fine-tuning, distillation, the dense transfer
//!   tasks) share one loop, [`supervised::Tuning`]; distillation with unlabelled images is in
//!   [`distill`], segmentation and depth estimation in [`transfer`].
//! - **Ablations** over seeds: [`ablate::ablate`].
//!
//! ```no_run
//! use byol::workflow::Settings;
//! use byol::train::{RunOptions, pretrain};
//!
//! struct Quiet;
//! impl byol::train::Observer for Quiet {}
//!
//! let settings = Settings { epochs: Some(5), ..Default::default() };
//! let cfg = settings.resolve("cifar10-cpu")?;
//! let opts = RunOptions { compare_random: true, ..Default::default() };
//! let report = pretrain(&cfg, std::path::Path::new("runs/example"), &opts, &mut Quiet)?;
//! println!("kNN top-1 {:?}, random init {:?}", report.knn, report.random_init_knn);
//! # Ok::<(), byol::Error>(())
//! ```
//!
//! The layers, and the path of one training step through the files, are in
//! `docs/ARCHITECTURE.md`.

pub mod ablate;
pub mod augment;
pub mod backend;
pub mod bench;
pub mod collective;
pub mod config;
pub mod data;
pub mod distill;
pub mod ema;
pub mod error;
pub mod eval;
pub mod events;
pub mod image;
pub mod io;
pub mod loss;
pub mod model;
pub mod optim;
pub mod rng;
pub mod supervised;
pub mod train;
pub mod transfer;
pub mod workflow;

pub use burn::tensor::Device;
pub use config::ExperimentConfig;
pub use error::{Error, Result};
