//! The document as a TransformerLens 4 script (`TransformerBridge`, with
//! `enable_compatibility_mode(no_processing=True)` so activations are the
//! model's own, unfolded and uncentred, as in Scalpel). Hook names are
//! TransformerLens's, so they map to themselves.

use scalpel_types::Site;

use crate::plan::Plan;
use crate::py::{preamble, RUNTIME};
use crate::{ModelSpec, ScriptOptions};

const TARGET: &str = r#"

# ---- TransformerLens 4 (TransformerBridge) ----
def load(name, device, dtype, args=None):
    from transformer_lens.model_bridge import TransformerBridge
    model = TransformerBridge.boot_transformers(name, device=device, dtype=dtype)
    # Scalpel reads the model's own activations: no LayerNorm folding, no weight centring.
    model.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    missing = sorted({iv["hook"] for iv in IV} - set(model.hook_dict))
    if missing:
        raise ValueError(f"this TransformerLens model has no hook(s) {missing}")
    model.scalpel_device = device
    return model


def tokenizer_of(model):
    return model.tokenizer


def tokens(model, text):
    return model.tokenizer(text, return_tensors="pt").input_ids.to(model.scalpel_device)


def capture(model, need):
    src = {}
    for text, hooks in need.items():
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens(model, text), names_filter=sorted(hooks))
        src[text] = {h: cache[h] for h in hooks}
    return src


def forward(model, ids, P, src):
    def hook_fn(items):
        def fn(x, hook):
            for iv in items:
                x = apply(x, iv, P, src)
            return x
        return fn
    fwd = [(name, hook_fn(items)) for name, items in by_hook().items()]
    with torch.no_grad():
        return model.run_with_hooks(ids, fwd_hooks=fwd)


if __name__ == "__main__":
    main()
"#;

/// The script text (needs `pip install transformer_lens`, 4.x); an error
/// names an intervention at `hook_resid_mid`, which TransformerBridge reads
/// at the second norm's input (editing it changes only the MLP's input).
pub fn script(plan: &Plan, spec: &ModelSpec, opts: &ScriptOptions) -> Result<String, String> {
    if let Some(st) = plan.steps.iter().find(|s| s.point.site == Site::ResidMid) {
        return Err(format!(
            "intervention {} ({}): '{}' has no TransformerLens-bridge counterpart: {}",
            st.index,
            st.op.name(),
            st.point.name(),
            crate::nnsight::RESID_MID
        ));
    }
    let how = "Needs TransformerLens 4 (`pip install transformer_lens`): the model is wrapped by\n\
               TransformerBridge with no weight processing, so every hook value is the model's own.\n\
               Run: python THIS.py [--model NAME_OR_DIR] [--prompt TEXT] [--max-new-tokens N] [--device cuda]";
    let mut o = preamble("TransformerLens", how, spec, opts, plan, &[]);
    o.push_str(RUNTIME);
    o.push_str(TARGET);
    Ok(o)
}
