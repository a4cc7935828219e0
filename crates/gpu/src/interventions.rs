//! Intervention documents on the GPU: a document compiled by
//! `scalpel_interventions` (vectors and source runs resolved by the CPU
//! engine) and lowered to in-place edits becomes [`GpuEdit`]s; patch sources
//! are uploaded once per hook point.

use std::collections::HashMap;
use std::sync::Arc;

use scalpel_interventions::{EditSpec, EditSpecOp};

use crate::model::{EditOp, GpuEdit, GpuModel, GpuTensor};

/// The GPU edits for lowered `specs` (see `Interventions::lower`).
pub fn gpu_edits(model: &GpuModel, specs: &[EditSpec]) -> Vec<GpuEdit> {
    let mut uploaded: HashMap<*const Vec<f32>, GpuTensor> = HashMap::new();
    specs
        .iter()
        .map(|s| {
            let op = match &s.op {
                EditSpecOp::Add { v, alpha } => EditOp::Add {
                    v: v.clone(),
                    alpha: *alpha,
                },
                EditSpecOp::Scale(f) => EditOp::Scale(*f),
                EditSpecOp::Zero => EditOp::Zero,
                EditSpecOp::ProjectOut(u) => EditOp::ProjectOut(u.clone()),
                EditSpecOp::Patch { rows, width, data } => EditOp::Patch(
                    uploaded
                        .entry(Arc::as_ptr(data))
                        .or_insert_with(|| GpuTensor {
                            buffer: model.gpu.storage_f32("patch source", data),
                            start: 0,
                            rows: *rows,
                            width: *width,
                        })
                        .clone(),
                ),
            };
            GpuEdit {
                point: s.point,
                op,
                positions: s.positions.clone(),
                cols: s.cols.clone(),
            }
        })
        .collect()
}
