//! Interventions are data: a versioned JSON document (docs/interventions.md)
//! compiled against a model and a prompt into an engine `Hook`. The CLI and
//! the browser worker use the same code, so a document gives the same numbers
//! in both.

pub mod apply;
pub mod patching;
pub mod probes;
pub mod readout;
pub mod run;
pub mod spec;
pub mod vectors;

pub use apply::{Interventions, ItemReport};
pub use spec::{parse, Document, Intervention, NamedPositions, Op, Positions, Vector, VectorSource, VERSION};
