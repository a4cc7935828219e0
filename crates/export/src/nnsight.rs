//! The document as an nnsight script: each TransformerLens hook becomes the
//! input or output of a Hugging Face module (the table is
//! [`module_of`], documented in docs/export.md), read and written inside
//! `model.trace(...)` in the order the forward pass reaches them (nnsight
//! requires it). `--remote` runs the same trace on NDIF.

use std::fmt::Write;

use scalpel_types::{HookPoint, Site};

use crate::plan::Plan;
use crate::py::{preamble, s, RUNTIME};
use crate::{ModelSpec, ScriptOptions};

/// Where nnsight reads a hook: a module path under the `LanguageModel`,
/// `"input"` (its first argument) or `"output"` (a tuple's first element),
/// and the head count to split a flat last axis into (per-head hooks).
#[derive(Clone, Debug, PartialEq)]
pub struct Access {
    pub path: String,
    pub kind: &'static str,
    pub heads: Option<usize>,
}

enum Family {
    /// llama, qwen2, qwen3: `model.layers[l]`, `self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`.
    Llama,
    /// gemma2, gemma3: as llama, plus post-norms around attention and MLP.
    Gemma,
    /// gpt_neox: `gpt_neox.layers[l]`, fused `attention.query_key_value`, `attention.dense`, parallel residual.
    Neox,
    /// gpt2: `transformer.h[l]`, fused `attn.c_attn`, `attn.c_proj`, `mlp.c_fc` / `mlp.c_proj`.
    Gpt2,
}

fn family(arch: &str) -> Result<Family, String> {
    Ok(match arch {
        "llama" | "qwen2" | "qwen3" => Family::Llama,
        "gemma2" | "gemma3" => Family::Gemma,
        "gpt_neox" => Family::Neox,
        "gpt2" => Family::Gpt2,
        a => return Err(format!("architecture '{a}' has no nnsight module map")),
    })
}

/// The nnsight access for a hook point of this model; an error names a hook
/// that is not a module's input or output in Hugging Face's implementation.
pub fn module_of(point: HookPoint, spec: &ModelSpec) -> Result<Access, String> {
    let fam = family(&spec.arch)?;
    let no = |why: &str| Err(format!("'{}' has no nnsight counterpart on {}: {why}", point.name(), spec.arch));
    let acc = |path: String, kind: &'static str| Ok(Access { path, kind, heads: None });
    let heads = |path: String, kind: &'static str, n: usize| {
        Ok(Access {
            path,
            kind,
            heads: Some(n),
        })
    };
    let attn_internal = "it is computed inside the attention function, not by a module (use the TransformerLens export)";
    let (root, blk) = match fam {
        Family::Llama | Family::Gemma => ("model", "model.layers"),
        Family::Neox => ("gpt_neox", "gpt_neox.layers"),
        Family::Gpt2 => ("transformer", "transformer.h"),
    };
    let Some(l) = point.layer else {
        return match (point.site, &fam) {
            (Site::Embed, Family::Llama) => acc(format!("{root}.embed_tokens"), "output"),
            (Site::Embed, Family::Neox) => acc(format!("{root}.embed_in"), "output"),
            (Site::Embed, Family::Gpt2) => acc(format!("{root}.wte"), "output"),
            (Site::PosEmbed, Family::Gpt2) => acc(format!("{root}.wpe"), "output"),
            (Site::Embed, Family::Gemma) => no("Gemma scales the embeddings by sqrt(d_model) outside a module"),
            (Site::LnFinalNormalized, Family::Llama | Family::Gemma) => acc(format!("{root}.norm"), "output"),
            (Site::LnFinalNormalized, Family::Neox) => acc(format!("{root}.final_layer_norm"), "output"),
            (Site::LnFinalNormalized, Family::Gpt2) => acc(format!("{root}.ln_f"), "output"),
            _ => no("not a module's input or output"),
        };
    };
    let b = format!("{blk}.{l}");
    let (nh, nkv) = (spec.n_heads, spec.n_kv_heads);
    match fam {
        Family::Llama | Family::Gemma => {
            let gemma = matches!(fam, Family::Gemma);
            let ln2 = if gemma {
                "pre_feedforward_layernorm"
            } else {
                "post_attention_layernorm"
            };
            match point.site {
                Site::ResidPre => acc(b, "input"),
                Site::Ln1Normalized => acc(format!("{b}.input_layernorm"), "output"),
                Site::Q => heads(format!("{b}.self_attn.q_proj"), "output", nh),
                Site::K => heads(format!("{b}.self_attn.k_proj"), "output", nkv),
                Site::V => heads(format!("{b}.self_attn.v_proj"), "output", nkv),
                Site::QNorm => acc(format!("{b}.self_attn.q_norm"), "output"),
                Site::KNorm => acc(format!("{b}.self_attn.k_norm"), "output"),
                Site::Z => heads(format!("{b}.self_attn.o_proj"), "input", nh),
                Site::Ln1Post | Site::AttnOut if gemma => acc(format!("{b}.post_attention_layernorm"), "output"),
                Site::AttnOut => acc(format!("{b}.self_attn"), "output"),
                Site::ResidMid => no(RESID_MID),
                Site::Ln2Normalized => acc(format!("{b}.{ln2}"), "output"),
                Site::MlpPre => acc(format!("{b}.mlp.gate_proj"), "output"),
                Site::MlpPreLinear => acc(format!("{b}.mlp.up_proj"), "output"),
                Site::MlpPost => acc(format!("{b}.mlp.down_proj"), "input"),
                Site::Ln2Post | Site::MlpOut if gemma => acc(format!("{b}.post_feedforward_layernorm"), "output"),
                Site::MlpOut => acc(format!("{b}.mlp"), "output"),
                Site::ResidPost => acc(b, "output"),
                Site::RotQ | Site::RotK | Site::AttnScores | Site::Pattern => no(attn_internal),
                _ => no("not a module's input or output"),
            }
        }
        Family::Neox | Family::Gpt2 => {
            let neox = matches!(fam, Family::Neox);
            let (ln1, ln2, attn, o, up, down) = if neox {
                (
                    "input_layernorm",
                    "post_attention_layernorm",
                    "attention",
                    "attention.dense",
                    "mlp.dense_h_to_4h",
                    "mlp.dense_4h_to_h",
                )
            } else {
                ("ln_1", "ln_2", "attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
            };
            match point.site {
                Site::ResidPre => acc(b, "input"),
                Site::Ln1Normalized => acc(format!("{b}.{ln1}"), "output"),
                Site::Q | Site::K | Site::V => no("queries, keys and values come out of one fused projection"),
                Site::Z => heads(format!("{b}.{o}"), "input", nh),
                Site::AttnOut => acc(format!("{b}.{attn}"), "output"),
                Site::ResidMid => no(RESID_MID),
                Site::Ln2Normalized => acc(format!("{b}.{ln2}"), "output"),
                Site::MlpPre => acc(format!("{b}.{up}"), "output"),
                Site::MlpPost => acc(format!("{b}.{down}"), "input"),
                Site::MlpOut => acc(format!("{b}.mlp"), "output"),
                Site::ResidPost => acc(b, "output"),
                Site::RotQ | Site::RotK | Site::AttnScores | Site::Pattern => no(attn_internal),
                _ => no("not a module's input or output"),
            }
        }
    }
}

/// Why `hook_resid_mid` is refused (here and by the TransformerLens export).
pub(crate) const RESID_MID: &str = "Hugging Face's block keeps the residual in a local variable; the value at the second norm's input is a copy, so editing it would change only the MLP's input, not the residual stream (edit hook_attn_out instead)";

/// Forward order: embeddings, then block by block in site order, then the final norm.
type Order = (usize, usize, Site);

fn order(p: HookPoint) -> Order {
    match p.layer {
        Some(l) => (1, l, p.site),
        None if p.site == Site::LnFinalNormalized => (2, 0, p.site),
        None => (0, 0, p.site),
    }
}

const TARGET: &str = r#"

# ---- nnsight ----
REMOTE = False


def load(name, device, dtype, args=None):
    global REMOTE
    from nnsight import LanguageModel
    REMOTE = bool(args is not None and args.remote)
    if REMOTE:
        return LanguageModel(name)
    return LanguageModel(name, device_map=device, dispatch=True, dtype=dtype)


def tokenizer_of(model):
    return model.tokenizer


def tokens(model, text):
    return model.tokenizer(text, return_tensors="pt").input_ids


def module(model, path):
    m = model
    for part in path.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return m


def capture(model, need):
    src = {}
    for text, hooks in need.items():
        saved = {}
        with model.trace(tokens(model, text), remote=REMOTE):
            for path, kind, nh, names in SITES:
                if any(n in hooks for n in names):
                    mod = module(model, path)
                    raw = mod.input if kind == "input" else mod.output
                    x = raw[0] if isinstance(raw, tuple) else raw
                    saved[(path, kind)] = x.save()
        src[text] = {}
        for path, kind, nh, names in SITES:
            for n in names:
                if n in hooks:
                    x = saved[(path, kind)]
                    src[text][n] = x if nh is None else x.view(*x.shape[:-1], nh, -1)
    return src


def forward(model, ids, P, src):
    hooks = by_hook()
    with model.trace(ids, remote=REMOTE):
        for path, kind, nh, names in SITES:
            mod = module(model, path)
            raw = mod.input if kind == "input" else mod.output
            x = raw[0] if isinstance(raw, tuple) else raw
            x = x if nh is None else x.view(*x.shape[:-1], nh, -1)
            for name in names:
                for iv in hooks[name]:
                    x = apply(x, iv, P, src)
            x = x if nh is None else x.reshape(*x.shape[:-2], -1)
            if kind == "input":
                mod.input = x
            else:
                mod.output = (x,) + tuple(raw[1:]) if isinstance(raw, tuple) else x
        logits = model.output.logits.save()
    return logits


if __name__ == "__main__":
    main([("--remote", dict(action="store_true", help="run on NDIF (needs an NDIF API key)"))])
"#;

/// The script text; an error names the intervention whose hook has no
/// nnsight counterpart.
pub fn script(plan: &Plan, spec: &ModelSpec, opts: &ScriptOptions) -> Result<String, String> {
    // (order, access, hook names)
    let mut sites: Vec<(Order, Access, Vec<String>)> = Vec::new();
    for st in &plan.steps {
        let a = module_of(st.point, spec).map_err(|e| format!("intervention {} ({}): {e}", st.index, st.op.name()))?;
        let name = st.point.name();
        match sites.iter_mut().find(|(_, x, _)| x.path == a.path && x.kind == a.kind) {
            Some((o, _, names)) => {
                *o = (*o).min(order(st.point));
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            None => sites.push((order(st.point), a, vec![name])),
        }
    }
    sites.sort_by_key(|a| a.0);
    let how = "Needs nnsight (`pip install nnsight`). Runs locally, or on NDIF with --remote\n\
               (an NDIF API key; the model must be one NDIF hosts).\n\
               Run: python THIS.py [--model NAME_OR_DIR] [--prompt TEXT] [--max-new-tokens N] [--remote]";
    let mut o = preamble("nnsight", how, spec, opts, plan, &[]);
    o.push_str("# Where nnsight reads each hook, in the order the forward pass reaches it:\n");
    o.push_str("# (module path, \"input\" or \"output\", heads to split the last axis into, hook names).\n");
    o.push_str("SITES = [\n");
    for (_, a, names) in &sites {
        let names: Vec<String> = names.iter().map(|n| s(n)).collect();
        let heads = a.heads.map(|h| h.to_string()).unwrap_or_else(|| "None".into());
        writeln!(o, "    ({}, {}, {heads}, [{}]),", s(&a.path), s(a.kind), names.join(", ")).unwrap();
    }
    o.push_str("]\n\n");
    o.push_str(RUNTIME);
    o.push_str(TARGET);
    Ok(o)
}
