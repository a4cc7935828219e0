//! Hook edits and sampling as GPU dispatches: the ops a forward call adds
//! at hook sites and after the logits.

use std::collections::HashMap;

use scalpel_engine::{HookPoint, Site};
use scalpel_types::EditOp;

use super::plan::{f32_bits, Op, Workgroups};
use super::{GpuEdit, GpuModel, SampleStep};
use crate::device::{params, Kernel};
use crate::{GpuError, Result};

impl GpuModel {
    /// One `edit` dispatch (its own small uniform and bind group) per edit,
    /// grouped by hook point; positions are absolute, so the ops serve every
    /// later call (decode steps) unchanged.
    pub(super) fn edit_ops(&self, list: &[GpuEdit]) -> Result<HashMap<HookPoint, Vec<Op>>> {
        let gpu = &self.gpu;
        // Edits: one small uniform + source buffer + bind group each.
        let mut edits: HashMap<HookPoint, Vec<Op>> = HashMap::new();
        for e in list {
            let view = self.site_view(e.point).ok_or_else(|| self.unsupported(e.point))?;
            let (target, width) = (view.buf, view.width);
            if e.point.site == Site::LnFinalNormalized {
                return Err(GpuError::Input("ln_final.hook_normalized can be read but not edited on the GPU path".into()));
            }
            let cols = e.cols.clone().unwrap_or(0..width);
            if cols.start >= cols.end || cols.end > width {
                return Err(GpuError::Input(format!("{}: column range {cols:?} is outside 0..{width}", e.point.name())));
            }
            let ncols = cols.len();
            let pos = e.positions.clone().unwrap_or(0..usize::MAX);
            let (mode, alpha, src, src_pos0, src_rows) = match &e.op {
                EditOp::Add { v, alpha } => {
                    if v.len() != ncols {
                        return Err(GpuError::Input(format!("{}: add vector has {} values, expected {ncols}", e.point.name(), v.len())));
                    }
                    (0u32, *alpha, gpu.storage_f32("edit vec", v), 0, 0)
                }
                EditOp::Scale(f) => (1, *f, self.weights.dummy.clone(), 0, 0),
                EditOp::Zero => (2, 0.0, self.weights.dummy.clone(), 0, 0),
                EditOp::ProjectOut(dir) => {
                    if dir.len() != ncols {
                        return Err(GpuError::Input(format!("{}: direction has {} values, expected {ncols}", e.point.name(), dir.len())));
                    }
                    let n = dir.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
                    if !(n > 0.0 && n.is_finite()) {
                        return Err(GpuError::Input(format!("{}: project_out direction has norm {n}", e.point.name())));
                    }
                    let u: Vec<f32> = dir.iter().map(|x| (*x as f64 / n) as f32).collect();
                    (3, 0.0, gpu.storage_f32("edit dir", &u), 0, 0)
                }
                EditOp::Patch(src) => {
                    // Kept from this site (whole rows) or uploaded (the hook's own width).
                    if src.width != view.row && src.width != width {
                        return Err(GpuError::Input(format!("{}: patch source has width {}, expected {width}", e.point.name(), src.width)));
                    }
                    (4, 0.0, src.buffer.clone(), src.start as u32, src.rows as u32)
                }
            };
            let (src_width, src_off) = match &e.op {
                EditOp::Patch(src) if src.width != view.row => (width, view.off),
                _ => (view.row, 0),
            };
            let p = [
                view.row as u32,
                mode,
                pos.start.min(u32::MAX as usize) as u32,
                pos.end.min(u32::MAX as usize) as u32,
                (view.off + cols.start) as u32,
                (view.off + cols.end) as u32,
                src_pos0,
                src_rows,
                f32_bits(alpha),
                src_width as u32,
                src_off as u32,
            ];
            let pb = gpu.uniform("edit params", &params(&p));
            let bind_group = gpu.bind(Kernel::Edit, &self.step, &pb, &[&src, target]);
            edits.entry(e.point).or_default().push(Op { kernel: Kernel::Edit, bind_group, workgroups: Workgroups::Rows(1) });
        }
        Ok(edits)
    }

    /// The `sample` dispatch for these settings (row 0, or the last of `t`
    /// rows when every row's logits were computed).
    pub(super) fn sample_op(&self, smp: &SampleStep, all_rows: bool) -> Result<Op> {
        if !(smp.temperature.is_finite() && smp.temperature > 0.0) {
            return Err(GpuError::Input(format!("sampling temperature {} must be a finite number > 0 (0 is greedy: argmax)", smp.temperature)));
        }
        if smp.top_k == Some(0) {
            return Err(GpuError::Input("top_k must be at least 1".into()));
        }
        if let Some(tp) = smp.top_p {
            if !(tp > 0.0 && tp <= 1.0) {
                return Err(GpuError::Input(format!("top_p {tp} must be in (0, 1]")));
            }
        }
        if !(0.0..1.0).contains(&smp.uniform) {
            return Err(GpuError::Input(format!("the sampler's uniform number {} must be in [0, 1)", smp.uniform)));
        }
        let v = self.config.d_vocab;
        let top_k = smp.top_k.map_or(v, |k| k.min(v)) as u32;
        let p = [v as u32, all_rows as u32, f32_bits(smp.temperature), top_k, f32_bits(smp.top_p.unwrap_or(1.0))];
        let pb = self.gpu.uniform("sample params", &params(&p));
        let work = &self.work;
        let bind_group = self.gpu.bind(Kernel::Sample, &self.step, &pb, &[&work.logits, &work.rnd, &work.ids, &work.probs]);
        Ok(Op { kernel: Kernel::Sample, bind_group, workgroups: Workgroups::Fixed(1) })
    }
}
