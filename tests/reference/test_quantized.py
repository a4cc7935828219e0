"""`--precision quantized` (fast path) against the exact f32 reference:
reports top-1 agreement and KL(f32 || quantized); asserts loose bounds."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import ids_arg, requires_smol
from ref_model import kl_divergence


def report(tag, got, want):
    top1 = float((got.argmax(1) == want.argmax(1)).mean())
    kl = kl_divergence(want, got)
    maxdiff = float(np.abs(got - want).max())
    print(f"\n{tag}: positions {len(want)}, top-1 agreement {top1:.3f}, KL mean {kl.mean():.4g} "
          f"max {kl.max():.4g}, max |dlogit| {maxdiff:.3g}")
    return top1, kl


@requires_smol
def test_smollm_quantized_vs_f32(scalpel, smol, smol_ref):
    text = ("<|im_start|>user\nWrite one sentence about the history of Paris and its river.<|im_end|>\n"
            "<|im_start|>assistant\nParis grew up on the banks of the Seine, where")
    ids = smol_ref.tokenizer.encode(text)
    want, _ = smol_ref.forward(ids, want_hooks=False)
    r = scalpel.json("logits", "--model", smol, "--precision", "quantized", "--ids", ids_arg(ids), "--full")
    got = np.array(r["logits"], dtype=np.float64)
    assert got.shape == want.shape
    top1, kl = report("SmolLM2 quantized vs f32 reference", got, want)
    # the exact path on the same (33-token) input, for contrast
    f = np.array(scalpel.json("logits", "--model", smol, "--ids", ids_arg(ids), "--full")["logits"], dtype=np.float64)
    report("SmolLM2 engine f32 vs f32 reference", f, want)
    assert np.abs(f - want).max() <= 1e-3
    assert top1 >= 0.8
    assert kl.mean() < 0.1


@pytest.mark.parametrize("name", ["gpt2", "llama_hf", "llama_q8_0_untied", "llama_q4_0_tied", "llama_kquant_untied"])
def test_tiny_quantized_close(scalpel, tiny, ref, name):
    path = tiny[name]["path"]
    m = ref(path)
    ids = [5, 100, 260, 37, 299, 12, 80, 255, 1, 301, 7, 44, 290, 120]
    want, _ = m.forward(ids, want_hooks=False)
    r = scalpel.json("logits", "--model", path, "--precision", "quantized", "--ids", ids_arg(ids), "--full")
    got = np.array(r["logits"], dtype=np.float64)
    top1, kl = report(f"{name} quantized vs f32 reference", got, want)
    assert np.isfinite(got).all()
    assert top1 >= 0.5
    assert kl.mean() < 0.1


GPT2_PROJ = {  # output hook: (input hook, function(layer weights, x) -> exact output)
    "attn.hook_q": ("ln1.hook_normalized", lambda L, x, d: (x @ L["attn.c_attn.weight"][:, :d] + L["attn.c_attn.bias"][:d])),
    "attn.hook_k": ("ln1.hook_normalized",
                    lambda L, x, d: (x @ L["attn.c_attn.weight"][:, d:2 * d] + L["attn.c_attn.bias"][d:2 * d])),
    "attn.hook_v": ("ln1.hook_normalized",
                    lambda L, x, d: (x @ L["attn.c_attn.weight"][:, 2 * d:] + L["attn.c_attn.bias"][2 * d:])),
    "hook_attn_out": ("attn.hook_z", lambda L, x, d: x.reshape(len(x), -1) @ L["attn.c_proj.weight"] + L["attn.c_proj.bias"]),
    "mlp.hook_pre": ("ln2.hook_normalized", lambda L, x, d: x @ L["mlp.c_fc.weight"] + L["mlp.c_fc.bias"]),
    "hook_mlp_out": ("mlp.hook_post", lambda L, x, d: x @ L["mlp.c_proj.weight"] + L["mlp.c_proj.bias"]),
}


@pytest.mark.parametrize("hook", list(GPT2_PROJ))
def test_gpt2_quantized_projections(scalpel, tiny, ref, hook):
    """Each GPT-2 projection in the quantized path, fed the engine's own
    (quantized-path) input, stays within 10% (of the largest value) of the
    exact product. Localizes errors such as a wrong split of the fused c_attn."""
    from conftest import hook_array

    path = tiny["gpt2"]["path"]
    m = ref(path)
    ids = [5, 100, 260, 37, 299, 12]
    src, fn = GPT2_PROJ[hook]
    q = lambda name: hook_array(scalpel.json("activations", "--model", path, "--precision", "quantized",  # noqa: E731
                                             "--ids", ids_arg(ids), "--hook", "blocks.0." + name))
    x, got = q(src), q(hook)
    want = fn(m.w["layers"][0], x, m.cfg["d_model"]).reshape(got.shape)
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    print(f"blocks.0.{hook}: quantized relative max error {rel:.4f}")
    assert rel < 0.1, f"blocks.0.{hook}: quantized path off by {rel:.0%} of max |value| (given its own input)"
