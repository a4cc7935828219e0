//! In-place edits at a hook point: the form of an intervention that a
//! backend without engine hooks applies (the GPU forward pass, `edit.wgsl`).
//! `scalpel-interventions` lowers a compiled document to these; ops whose
//! value depends on the run itself have no such form.

use std::ops::Range;
use std::sync::Arc;

use crate::hooks::HookPoint;

/// One in-place edit on rows of the hook's flat width (per-head hooks are
/// `heads · d_head` wide, head-major). `S` is where a patch's values live:
/// [`Rows`] on the host, or a backend's own buffer.
#[derive(Clone, Debug)]
pub struct Edit<S = Rows> {
    /// Which compiled item it comes from (for the application counts).
    pub item: usize,
    pub point: HookPoint,
    /// Absolute positions (all when `None`).
    pub positions: Option<Range<usize>>,
    /// Columns (all when `None`).
    pub cols: Option<Range<usize>>,
    pub op: EditOp<S>,
}

#[derive(Clone, Debug)]
pub enum EditOp<S = Rows> {
    /// x += alpha · v over the columns.
    Add { v: Vec<f32>, alpha: f32 },
    /// x *= factor.
    Scale(f32),
    /// x = 0.
    Zero,
    /// x -= (x·û) û over the columns (û a unit vector).
    ProjectOut(Vec<f32>),
    /// x = the source's value at the same absolute position (the whole
    /// hook's width; the columns select what is copied). Positions past the
    /// source's rows are left alone.
    Patch(S),
}

/// A patch source on the host: `rows × width` values of a whole hook, row
/// 0 at absolute position 0, shared by every edit that reads it.
#[derive(Clone, Debug)]
pub struct Rows {
    pub rows: usize,
    pub width: usize,
    pub data: Arc<Vec<f32>>,
}

impl<S> Edit<S> {
    /// The same edit with its patch source mapped (e.g. uploaded to a GPU buffer).
    pub fn map_source<T>(self, f: impl FnOnce(S) -> T) -> Edit<T> {
        let op = match self.op {
            EditOp::Add { v, alpha } => EditOp::Add { v, alpha },
            EditOp::Scale(x) => EditOp::Scale(x),
            EditOp::Zero => EditOp::Zero,
            EditOp::ProjectOut(u) => EditOp::ProjectOut(u),
            EditOp::Patch(s) => EditOp::Patch(f(s)),
        };
        Edit { item: self.item, point: self.point, positions: self.positions, cols: self.cols, op }
    }
}
