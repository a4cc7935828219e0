//! vllm-lens (github.com/UKGovernmentBEIS/vllm-lens, read at commit
//! 7d252f7): a vLLM plugin whose requests carry steering vectors in
//! `vllm_xargs.apply_steering_vectors`, a JSON string of `SteeringVector`
//! dumps (`vllm_lens/_helpers/types.py`, `client.py`): `activations`
//! (a tensor as `{"data": base64, "dtype", "original_dtype", "shape"}`,
//! `_helpers/_serialize.py`; without `"compression": "zstd"` the bytes are
//! read raw), `layer_indices`, `scale`, `norm_match`, `position_indices`.
//! A vector at layer L is added to the output of decoder layer L (a
//! forward hook, `_worker_ext.py`), i.e. `blocks.L.hook_resid_post`, at
//! every token of the request when `activations` is 2-D.

use serde_json::{json, Value};

use crate::llama_cpp::{disabled_notes, steering};
use crate::plan::Plan;
use crate::{ModelSpec, ScriptOptions};

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() {
                B64[(n >> shift & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// The `/v1/completions` request body, and what was left out.
pub fn request(plan: &Plan, spec: &ModelSpec, opts: &ScriptOptions) -> Result<(Value, Vec<String>), String> {
    let st = steering(plan, "vllm-lens")?;
    let mut bytes = Vec::with_capacity(st.layers.len() * spec.d_model * 4);
    for (_, v) in &st.layers {
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    let d = st.layers[0].1.len();
    let sv = json!([{
        "activations": {"data": base64(&bytes), "dtype": "float32", "original_dtype": "torch.float32", "shape": [st.layers.len(), d]},
        "layer_indices": st.layers.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        "scale": st.scale,
        "norm_match": false,
        "position_indices": null,
    }]);
    let body = json!({
        "model": spec.name,
        "prompt": opts.prompt,
        "max_tokens": opts.max_new_tokens.max(1),
        "temperature": 0.0,
        "vllm_xargs": {"apply_steering_vectors": sv.to_string()},
    });
    Ok((body, disabled_notes(plan)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }
}
