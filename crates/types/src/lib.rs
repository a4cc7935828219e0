//! The plain data every Scalpel crate and the page share: hook sites and
//! hook names, the intervention document, run options, the in-place edits a
//! GPU applies, and what every readout, sweep and run returns. serde only,
//! so the page (wasm, no engine) and the CLI's JSON use the same types.

pub mod document;
pub mod edit;
pub mod features;
pub mod files;
pub mod hooks;
pub mod options;
pub mod patching;
pub mod readouts;
pub mod run;
pub mod vectors;

pub use document::{Document, Intervention, Matrix, NamedPositions, Op, Positions, Vector, VectorSource, When, VERSION};
pub use edit::{Edit, EditOp, Rows};
pub use files::{ModelFiles, ModelSource};
pub use hooks::{HookLayout, HookPoint, Site};
pub use options::{GenerateOptions, Kernels, ParseError, Precision};
