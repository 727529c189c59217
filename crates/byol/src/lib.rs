//! BYOL — Bootstrap Your Own Latent (Grill et al., NeurIPS 2020, arXiv 2006.07733).
//!
//! The library knows nothing of the terminal: it exposes configs, models, the training step,
//! the training loop (which reports through [`train::Observer`]) and the evaluations.
//! Every tensor is a burn `Tensor<D>`; the backend is chosen at run time by the [`Device`].

pub mod ablate;
pub mod augment;
pub mod backend;
pub mod bench;
pub mod config;
pub mod data;
pub mod ema;
pub mod error;
pub mod eval;
pub mod image;
pub mod io;
pub mod loss;
pub mod model;
pub mod optim;
pub mod rng;
pub mod train;
pub mod workflow;

pub use burn::tensor::Device;
pub use config::ExperimentConfig;
pub use error::{Error, Result};
