//! Interventions are data: a versioned JSON document (docs/interventions.md,
//! types in `scalpel_types::document`) compiled against a model and a
//! prompt into an engine `Hook`, or lowered to in-place GPU edits. The CLI
//! and the browser worker use the same code, so a document gives the same
//! numbers in both.
//!
//! - `parse.rs`: the document with messages naming the item and field;
//! - `compile.rs`: the compiled document and its hook; `context.rs`: what
//!   every op compiles with (model, checked hook, selections);
//! - `ops/`: one file per op (its fields, checks, compile, apply, lowering);
//! - `select.rs`: positions, heads and units as masks;
//! - `lower.rs`: the document as GPU edits; `run.rs`: a forward pass or a
//!   generation under a document;
//! - `vectors/`: the directions documents steer with.

mod compile;
mod context;
mod lower;
mod ops;
mod parse;
pub mod run;
mod select;
pub mod vectors;

/// Errors are messages for the user, naming the item and field.
pub(crate) type Res<T> = Result<T, String>;

pub use compile::{ConditionalTrace, Interventions, ItemReport};
pub use context::{never, Stop, STOPPED};
pub use ops::{Insert, KvAdd, LowRank};
pub use parse::{parse, parse_value};
pub use scalpel_types::document::{Document, Intervention, NamedPositions, Op, Positions, Vector, VectorSource, VERSION};
