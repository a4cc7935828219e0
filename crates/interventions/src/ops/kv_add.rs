//! `kv_add`: add `scale · vector` to the cached keys (`attn.hook_rot_k`,
//! after RoPE) or values (`attn.hook_v`) of the prompt, once, after the
//! prompt is processed (KV-cache steering). `run.rs` applies it.

use scalpel_engine::Site;
use scalpel_types::document::{Intervention, Op};

use super::{no_check, Compiled, OpDef};
use crate::context::{check_finite, Cx};
use crate::Res;
use crate::select::Sel;

pub(crate) const DEF: OpDef = OpDef { name: "kv_add", fields: &["vector", "scale"], check: no_check, compile };

/// A KV-cache edit applied once after the prompt.
#[derive(Clone, Debug)]
pub struct KvAdd {
    pub index: usize,
    pub layer: usize,
    pub values: bool,
    pub heads: Option<Vec<usize>>,
    pub positions: Vec<usize>,
    pub vector: Vec<f32>,
}

fn compile(cx: &mut Cx, i: usize, iv: &Intervention) -> Res<Compiled> {
    let Op::KvAdd { vector, scale } = &iv.op else { unreachable!("registered for kv_add") };
    let target = cx.target(i, iv)?;
    if !matches!(target.site, Site::RotK | Site::V) {
        return Err(format!(
            "intervention {i}: op 'kv_add' edits the KV cache: use 'blocks.L.attn.hook_rot_k' (keys as cached, after RoPE) or 'blocks.L.attn.hook_v', not '{}'",
            target.hook
        ));
    }
    check_finite(i, "scale", &[*scale])?;
    let v = cx.vector(i, "vector", vector, &target.points)?;
    let v: Vec<f32> = v.iter().map(|x| x * scale).collect();
    // One vector for every selected head, or one d_head block per KV head.
    let (d, n_kv) = (cx.model.config.d_head, cx.model.config.n_kv_heads);
    let per_head: Vec<(Option<Vec<usize>>, Vec<f32>)> = if v.len() == d * n_kv {
        (0..n_kv)
            .filter(|h| iv.heads.as_ref().is_none_or(|hs| hs.contains(h)))
            .map(|h| (Some(vec![h]), v[h * d..(h + 1) * d].to_vec()))
            .collect()
    } else {
        target.need_len("vector", &v)?;
        vec![(iv.heads.clone(), v)]
    };
    let n = cx.prompt_len;
    let positions: Vec<usize> = match &target.select.positions {
        Sel::All | Sel::Prompt(_) => (0..n).collect(),
        Sel::Generated(_) => {
            return Err(format!("intervention {i}: 'kv_add' edits the prompt's cache; positions 'generated' do not apply"))
        }
        Sel::Set(s) => {
            if let Some(&p) = s.iter().find(|&&p| p >= n) {
                return Err(format!(
                    "intervention {i}: field 'positions': {p} is not a prompt position (the prompt has {n} tokens)"
                ));
            }
            s.iter().copied().collect()
        }
        Sel::Range(r) => {
            if r.end > n {
                return Err(format!(
                    "intervention {i}: field 'positions': {}..{} goes past the prompt (the prompt has {n} tokens)",
                    r.start, r.end
                ));
            }
            r.clone().collect()
        }
    };
    let mut out = Vec::new();
    for p in &target.points {
        for (heads, vector) in &per_head {
            out.push(KvAdd {
                index: i,
                layer: p.layer.expect("a block hook"),
                values: target.site == Site::V,
                heads: heads.clone(),
                positions: positions.clone(),
                vector: vector.clone(),
            });
        }
    }
    Ok(Compiled::KvAdds(out))
}
