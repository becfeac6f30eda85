//! `ckpt`: LLM checkpoint compatibility.
//!
//! Inspect safetensors checkpoints (headers only), detect their architecture family, convert them
//! between naming families through declarative mapping files, prove the conversion changed nothing
//! with a built-in reference LLaMA forward pass, gate releases in CI, and diff two checkpoints.
//!
//! The library never prints, exits or panics on input: every failure is an [`Error`] naming the file
//! and, where there is one, the tensor. See `docs/ARCHITECTURE.md` for how the modules fit together.
#![deny(missing_docs)]

pub mod check;
pub mod checkpoint;
pub mod detect;
pub mod diff;
pub mod error;
pub mod json;
pub mod kernels;
pub mod mapping;
pub mod reference;
pub mod report;
pub mod synth;
pub mod tokenizer;
pub mod verify;
pub mod write;

pub use checkpoint::{Checkpoint, TensorInfo};
pub use error::{Error, ErrorKind, Result};
