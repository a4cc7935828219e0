"""`scalpel activations --hook NAME` against the NumPy reference.

Layout contract: q / k / rot_q / rot_k are in Hugging Face head-dim order for
every model, GGUF included (the reference converts its GGUF-layout values).
Masked attention scores are -inf (JSON null is accepted as the encoding).
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import close_report, hook_array, ids_arg, requires_smol

TINY_IDS = [5, 100, 260, 37, 299, 12, 80, 255, 1]


def compare_hook(scalpel, path, m, ids, hooks_ref, name, atol, rtol):
    r = scalpel.json("activations", "--model", path, "--ids", ids_arg(ids), "--hook", name)
    assert r["hook"] == name
    want = hooks_ref[name]
    assert list(r["shape"]) == list(want.shape), f"{name}: shape {r['shape']} want {list(want.shape)}"
    got = hook_array(r)
    err, nonfinite_ok = close_report(got, want)
    assert nonfinite_ok, f"{name}: masked (-inf) entries differ from the reference"
    bound = atol + rtol * float(np.abs(want[np.isfinite(want)]).max())
    print(f"{name}: max abs err {err:.3g} (bound {bound:.3g}, max |ref| {np.abs(want[np.isfinite(want)]).max():.3g})")
    assert err <= bound, f"{name}: max abs err {err:.3g} > {bound:.3g}"


def tiny_hook_names(m):
    names = ["hook_embed", "ln_final.hook_normalized"]
    if m.arch == "gpt2":
        names.append("hook_pos_embed")
    for l in range(m.cfg["n_layers"]):
        p = f"blocks.{l}."
        names += [p + s for s in ("hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k",
                                  "attn.hook_v", "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z",
                                  "hook_attn_out", "hook_resid_mid", "ln2.hook_normalized", "mlp.hook_pre",
                                  "mlp.hook_post", "hook_mlp_out", "hook_resid_post")]
        if m.arch == "llama":
            names += [p + "attn.hook_rot_q", p + "attn.hook_rot_k", p + "mlp.hook_pre_linear"]
    return names


TINY_HOOK_MODELS = ["llama_q8_0_untied", "llama_f32_tied", "llama_hf", "gpt2"]


@pytest.mark.parametrize("name", TINY_HOOK_MODELS)
def test_tiny_hooks(scalpel, tiny, ref, name):
    path = tiny[name]["path"]
    m = ref(path)
    _, hooks = m.forward(TINY_IDS)
    failures = []
    for h in tiny_hook_names(m):
        try:
            compare_hook(scalpel, path, m, TINY_IDS, hooks, h, atol=1e-4, rtol=1e-5)
        except AssertionError as e:
            failures.append(str(e).splitlines()[0])
    assert not failures, f"{len(failures)} hook(s) differ on {name}:\n" + "\n".join(failures)


@pytest.mark.parametrize("name", ["llama_q8_0_untied", "gpt2"])
def test_hook_names_listed(scalpel, tiny, ref, name):
    """`scalpel info --json` lists every TransformerLens hook the reference computes."""
    path = tiny[name]["path"]
    info = scalpel.json("info", "--model", path)
    missing = sorted(set(tiny_hook_names(ref(path))) - set(info["hooks"]))
    assert not missing, f"hooks missing from `info`: {missing}"


SMOL_HOOKS = [
    "hook_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.attn.hook_q",
    "blocks.0.attn.hook_k",
    "blocks.0.attn.hook_v",
    "blocks.0.attn.hook_attn_scores",
    "blocks.3.attn.hook_rot_q",
    "blocks.3.attn.hook_rot_k",
    "blocks.15.hook_resid_pre",
    "blocks.15.attn.hook_pattern",
    "blocks.15.attn.hook_z",
    "blocks.15.mlp.hook_pre",
    "blocks.29.mlp.hook_post",
    "blocks.29.hook_resid_post",
    "ln_final.hook_normalized",
]


@requires_smol
def test_smollm_hooks(scalpel, smol, smol_ref):
    ids = smol_ref.tokenizer.encode("The capital of France is Paris, and the capital of Germany is")
    _, hooks = smol_ref.forward(ids)
    failures = []
    for h in SMOL_HOOKS:
        try:
            compare_hook(scalpel, smol, smol_ref, ids, hooks, h, atol=1e-3, rtol=2e-5)
        except AssertionError as e:
            failures.append(str(e).splitlines()[0])
    assert not failures, f"{len(failures)} hook(s) differ on SmolLM2:\n" + "\n".join(failures)
