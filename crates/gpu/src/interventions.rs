//! Intervention documents on the GPU: a document compiled by
//! `scalpel_interventions` (vectors and source runs resolved by the CPU
//! engine) and lowered to in-place [`Edit`]s runs here once each patch
//! source is on the GPU; sources are uploaded once per hook point.

use std::collections::HashMap;
use std::sync::Arc;

use scalpel_types::Edit;

use crate::model::{GpuEdit, GpuModel, GpuTensor};

/// The lowered `edits` (see `Interventions::lower`) with their patch sources uploaded.
pub fn upload_edits(model: &GpuModel, edits: &[Edit]) -> Vec<GpuEdit> {
    let mut uploaded: HashMap<*const Vec<f32>, GpuTensor> = HashMap::new();
    edits
        .iter()
        .map(|e| {
            e.clone().map_source(|src| {
                uploaded
                    .entry(Arc::as_ptr(&src.data))
                    .or_insert_with(|| GpuTensor {
                        buffer: model.gpu.storage_f32("patch source", &src.data),
                        start: 0,
                        rows: src.rows,
                        width: src.width,
                    })
                    .clone()
            })
        })
        .collect()
}
