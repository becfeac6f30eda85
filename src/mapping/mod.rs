//! Family mapping files, the rules they compile to, and views of a checkpoint through them.
//!
//! See `mappings/README.md` for the file format and DESIGN.md §1-3 for the hub-and-spoke idea: each
//! family file says how that family's tensors relate to the canonical Hugging Face LLaMA names, so N
//! files give N x N conversions (A -> canonical -> B).

pub mod view;

pub use view::{Segment, View, ViewTensor};
