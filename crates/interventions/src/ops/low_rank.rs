//! `low_rank`: replace a weight matrix of the block(s) by its rank-`rank`
//! approximation (LASER) for the run; `run.rs` applies and restores it.

use scalpel_engine::Matrix;
use scalpel_types::document::{Intervention, Op};

use super::{no_check, Compiled, OpDef};
use crate::context::Cx;
use crate::Res;

pub(crate) const DEF: OpDef = OpDef { name: "low_rank", fields: &["matrix", "rank"], check: no_check, compile };

/// A rank reduction of one weight matrix.
#[derive(Clone, Debug)]
pub struct LowRank {
    pub index: usize,
    pub layer: usize,
    pub matrix: Matrix,
    pub rank: usize,
}

fn compile(cx: &mut Cx, i: usize, iv: &Intervention) -> Res<Compiled> {
    let Op::LowRank { matrix, rank } = &iv.op else { unreachable!("registered for low_rank") };
    let n_layers = cx.model.config.n_layers;
    let hook = iv.hook.as_deref().ok_or(format!("intervention {i}: missing field 'hook' (e.g. 'blocks.5' or 'blocks.*')"))?;
    let layers: Vec<usize> = if hook == "blocks.*" {
        (0..n_layers).collect()
    } else {
        let l = hook.strip_prefix("blocks.").and_then(|x| x.parse::<usize>().ok()).ok_or(format!(
            "intervention {i}: field 'hook': op 'low_rank' names a block ('blocks.5' or 'blocks.*'), not '{hook}'"
        ))?;
        if l >= n_layers {
            return Err(format!("intervention {i}: field 'hook': layer {l} is out of range (the model has {n_layers} layers)"));
        }
        vec![l]
    };
    if *rank == 0 {
        return Err(format!("intervention {i}: field 'rank' must be at least 1"));
    }
    if *matrix == Matrix::Gate && !cx.model.config.gated_mlp {
        return Err(format!("intervention {i}: field 'matrix': this model's MLP has no gate matrix"));
    }
    Ok(Compiled::LowRanks(layers.into_iter().map(|layer| LowRank { index: i, layer, matrix: *matrix, rank: *rank }).collect()))
}
