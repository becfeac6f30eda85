//! Family mapping files, the rules they compile to, and views of a checkpoint through them.
//!
//! See `mappings/README.md` for the file format and DESIGN.md §1-3 for the hub-and-spoke idea: each
//! family file says how that family's tensors relate to the canonical Hugging Face LLaMA names, so N
//! files give N x N conversions (A -> canonical -> B).
//!
//! - [`pattern`]: `{i}` name templates and the ad-hoc `--rename` regex rules;
//! - [`family`]: compiled rules, [`Family`] and the [`Registry`] (file parsing and validation in `loader`);
//! - [`apply`]: [`canonical_view`] and its inverse [`to_family`] (row-gather transforms);
//! - [`configmap`]: config.json / params.json to and from LLaMA's config;
//! - [`portable`]: the LLaMA config every loader reads the same way (both RoPE spellings, bos/eos, dropped keys);
//! - [`view`]: the virtual checkpoint both produce.

pub mod apply;
pub mod configmap;
pub mod family;
mod loader;
pub mod math;
pub mod pattern;
pub mod portable;
pub mod view;

pub use apply::{Quantities, canonical_view, identity_renamed, to_family};
pub use family::{ConfigFormat, Family, Quantity, Registry, Rule, RuleEntry};
pub use pattern::{Pattern, RenameRule};
pub use view::{Segment, View, ViewTensor};
