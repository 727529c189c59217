//! The library's error type. The binary wraps it in `anyhow`.

use std::path::PathBuf;

/// Everything that can go wrong in the library, each variant naming the file or field at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of its allowed range or inconsistent with another.
    #[error("invalid config field `{field}`: {message}")]
    Config { field: String, message: String },
    /// A TOML file could not be parsed (unknown key, wrong type, syntax error).
    #[error("cannot parse config {path}: {message}")]
    ConfigParse { path: PathBuf, message: String },
    /// A dataset could not be used.
    #[error("data error ({path}): {message}")]
    Data { path: PathBuf, message: String },
    /// Data made or held in memory, with no file to name, cannot be used (an empty split, mosaics
    /// of too many classes); `what` says which.
    #[error("{what}: {message}")]
    Input { what: String, message: String },
    /// The threads that decode and augment the batches failed.
    #[error("batch loader: {0}")]
    Loader(String),
    /// A tensor could not be read back from its device into host memory.
    #[error("cannot read {what} back from the device: {message}")]
    Readback { what: &'static str, message: String },
    /// A checkpoint could not be read or written.
    #[error("checkpoint error ({path}): {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// A download failed.
    #[error("download of {url} failed: {message}")]
    Download { url: String, message: String },
    /// The requested backend is not compiled in or not usable.
    #[error("backend `{name}`: {message}")]
    Backend { name: String, message: String },
    /// Training produced a non-finite value; `hint` says what to change.
    #[error("non-finite {what} at step {step}; {hint}")]
    NonFinite {
        what: String,
        step: u64,
        hint: String,
    },
    /// A run without checkpoints stopped by an interrupt (Ctrl-C, SIGTERM).
    #[error("{what} interrupted at step {step}; it keeps no checkpoint: run it again")]
    Interrupted { what: String, step: u64 },
    /// Parameters that should train but would not be updated by the optimizer: they do not
    /// require a gradient, or the loss does not depend on them.
    #[error("parameters that should train got no gradient: {}", parameters.join(", "))]
    Untrained { parameters: Vec<String> },
    /// A replica of a data-parallel run failed (the others stop with it).
    #[error("replica {rank} failed: {message}")]
    Replica { rank: usize, message: String },
    /// The MPI library could not give a process what a run of several processes needs.
    #[error("MPI: {0}")]
    Mpi(String),
    /// Another process holds the run directory (`train::RunDir`).
    #[error(
        "run directory {path} is in use by {holder}; wait for it to end, or choose another --run-dir"
    )]
    RunLocked { path: PathBuf, holder: String },
    /// Any I/O error, with the path involved. The OS error is part of the message and not a
    /// `source()`: a report that prints the chain (anyhow's `{:#}`) would print it twice.
    #[error("I/O error on {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn input(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Input {
            what: what.into(),
            message: message.into(),
        }
    }

    /// A tensor's read-back failure (`into_data().try_into_vec()`'s error) for `what`.
    pub(crate) fn readback(what: &'static str, error: impl std::fmt::Debug) -> Self {
        Error::Readback {
            what,
            message: format!("{error:?}"),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }

    pub(crate) fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The message of a caught panic (`catch_unwind`'s payload), for an error that replaces it.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}
