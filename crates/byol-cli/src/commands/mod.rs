//! One file per command: what it runs through the library and what it prints.

pub mod ablate;
pub mod bench;
pub mod data;
pub mod distill;
pub mod eval;
pub mod pretrain;
pub mod transfer;
