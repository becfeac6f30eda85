//! `ckpt`: LLM checkpoint compatibility.
//!
//! Inspect safetensors checkpoints (headers only), detect their architecture family, convert them
//! between naming families through declarative mapping files, prove the conversion changed nothing
//! with a built-in reference LLaMA forward pass, gate releases in CI, and diff two checkpoints.
//!
//! The library never prints, exits or panics on input: every failure is an [`Error`] naming the file
//! and, where there is one, the tensor (and, where a program can advise, a [`Cause`]). See
//! `docs/ARCHITECTURE.md` for how the modules fit together; `examples/` has a short program per
//! task.
//!
//! # Inspect and detect
//!
//! [`Checkpoint::open`] reads headers only; [`detect::detect`] scores every family of a
//! [`mapping::Registry`].
//!
//! ```
//! use ckpt::{Checkpoint, mapping::Registry};
//!
//! let ck = Checkpoint::open(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/yi"))?;
//! assert_eq!(ck.tensors.len(), 21);
//! let registry = Registry::builtin()?;
//! let d = ckpt::detect::detect(&ck, &registry);
//! assert_eq!(d.winner.as_deref(), Some("yi"));
//! # Ok::<(), ckpt::Error>(())
//! ```
//!
//! # Convert
//!
//! [`detect::open_view`] reads a checkpoint through its family as a view under canonical LLaMA
//! names; [`write::write_view`] writes any view crash-safely.
//!
//! ```
//! use ckpt::{Checkpoint, mapping::Registry, write};
//!
//! let ck = Checkpoint::open(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/yi"))?;
//! let registry = Registry::builtin()?;
//! let (llama, family) = ckpt::detect::open_view(&ck, &registry, None, &[])?;
//! assert_eq!(family, "yi");
//! assert!(llama.get("model.layers.0.input_layernorm.weight").is_some());
//!
//! let out = tempfile::tempdir().map_err(|e| ckpt::Error::io(".", "tempdir", e))?;
//! let dst = out.path().join("yi-llama");
//! let summary = write::write_view(&llama, &dst, &write::WriteOptions::default())?;
//! assert_eq!(summary.tensors, 21);
//! let converted = Checkpoint::open(&dst)?;
//! assert!(converted.get("model.layers.0.input_layernorm.weight").is_some());
//! # Ok::<(), ckpt::Error>(())
//! ```
//!
//! # Verify
//!
//! [`verify::verify`] compares two views: structure, bytes, and the logits of the reference forward
//! pass ([`reference::forward`]).
//!
//! ```
//! use ckpt::{Checkpoint, mapping::Registry, verify};
//!
//! let src = Checkpoint::open(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/yi"))?;
//! let registry = Registry::builtin()?;
//! let (a, _) = ckpt::detect::open_view(&src, &registry, None, &[])?;
//! // Convert, then prove the result computes what the source computes.
//! let out = tempfile::tempdir().map_err(|e| ckpt::Error::io(".", "tempdir", e))?;
//! ckpt::write::write_view(&a, &out.path().join("o"), &Default::default())?;
//! let converted = Checkpoint::open(out.path().join("o"))?;
//! let (b, family) = ckpt::detect::open_view(&converted, &registry, None, &[])?;
//! assert_eq!(family, "llama");
//! let opts = verify::Options {
//!     level: verify::Level::Logits,
//!     atol: 0.0,
//!     rtol: 0.0,
//!     sequences: verify::default_sequences(256, 2, 8),
//!     isa: ckpt::kernels::active_isa(),
//! };
//! let report = verify::verify(&a, &b, &opts)?;
//! assert!(report.equivalent);
//! # Ok::<(), ckpt::Error>(())
//! ```
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

pub use checkpoint::{Checkpoint, OpenOptions, TensorInfo};
pub use error::{Cause, Error, ErrorKind, Result};
