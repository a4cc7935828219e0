"""`scalpel logits` (f32 precision) against the NumPy reference."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import ids_arg, requires_smol

TINY_IDS = [5, 100, 260, 37, 299, 12, 80, 255, 1, 301, 7, 44, 290, 120]
TINY_MODELS = [
    "gpt2", "gpt2_prefixed", "gpt2_buffers", "gpt2_fp16", "gpt2_sharded",
    "llama_hf", "llama_hf_tied", "llama_hf_bf16",
    *[f"llama_{t}_{k}" for t in ("f32", "f16", "q8_0", "q4_0", "q4_1") for k in ("untied", "tied")],
    "llama_kquant_untied", "llama_kquant_tied",
]
TINY_TOL = 1e-4
SMOL_TOL = 1e-3


def check_logits(r, ref_logits, ids, tol, top_k):
    """Compare a `logits --full --json` response with reference logits [pos, vocab]."""
    assert r["ids"] == list(ids)
    got = np.array(r["logits"], dtype=np.float64)
    assert got.shape == ref_logits.shape, (got.shape, ref_logits.shape)
    err = np.abs(got - ref_logits).max(axis=1)
    worst = int(err.argmax())
    print(f"max |logit - ref| = {err.max():.3g} (tol {tol})")
    assert err.max() <= tol, f"max |logit - ref| = {err.max():.3g} (> {tol}) at position {worst}, per position {np.round(err, 6).tolist()}"
    # argmax per position: must agree wherever the reference top-2 margin exceeds the tolerance
    srt = np.sort(ref_logits, axis=1)
    margin = srt[:, -1] - srt[:, -2]
    ref_arg = ref_logits.argmax(1)
    for p in range(len(ids)):
        if margin[p] > 2 * tol:
            assert r["argmax"][p] == int(ref_arg[p]), f"argmax at {p}: {r['argmax'][p]} vs {ref_arg[p]}"
        assert r["argmax"][p] == int(np.argmax(got[p]))
    last = ref_logits[-1]
    lse = float(np.log(np.exp(last - last.max()).sum()) + last.max())
    assert abs(r["logsumexp"] - lse) <= tol, (r["logsumexp"], lse)
    top = r["top"]
    assert len(top) == top_k
    vals = [t["logit"] for t in top]
    assert vals == sorted(vals, reverse=True), "top is not sorted by logit, descending"
    ref_top = np.sort(last)[::-1][:top_k]
    assert np.abs(np.array(vals) - ref_top).max() <= tol
    for t in top:
        assert abs(t["logit"] - last[t["id"]]) <= tol


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_logits(scalpel, tiny, ref, name):
    path = tiny[name]["path"]
    m = ref(path)
    want, _ = m.forward(TINY_IDS)
    r = scalpel.json("logits", "--model", path, "--ids", ids_arg(TINY_IDS), "--full", "--top-k", 5)
    check_logits(r, want, TINY_IDS, TINY_TOL, 5)
    for t in r["top"]:
        assert t["token"] == m.tokenizer.token_text(t["id"])


@pytest.mark.parametrize("name", ["gpt2", "llama_hf", "llama_q8_0_untied"])
def test_tiny_logits_from_prompt(scalpel, tiny, ref, name):
    path = tiny[name]["path"]
    m = ref(path)
    text = "The quick brown fox in 2024 jumps"
    ids = m.tokenizer.encode(text)
    want, _ = m.forward(ids)
    r = scalpel.json("logits", "--model", path, "--prompt", text, "--full", "--top-k", 3)
    check_logits(r, want, ids, TINY_TOL, 3)


def test_tiny_logits_single_token_and_full_context(scalpel, tiny, ref):
    """Edge lengths: 1 token, and exactly the context length (64)."""
    path = tiny["llama_f32_untied"]["path"]
    m = ref(path)
    for ids in ([42], [int(x) for x in np.random.default_rng(3).integers(0, m.cfg["vocab"], 64)]):
        want, _ = m.forward(ids)
        r = scalpel.json("logits", "--model", path, "--ids", ids_arg(ids), "--full", "--top-k", 2)
        check_logits(r, want, ids, TINY_TOL, 2)
    path = tiny["gpt2"]["path"]
    m = ref(path)
    ids = [int(x) for x in np.random.default_rng(4).integers(0, m.cfg["vocab"], 64)]
    want, _ = m.forward(ids)
    r = scalpel.json("logits", "--model", path, "--ids", ids_arg(ids), "--full", "--top-k", 2)
    check_logits(r, want, ids, TINY_TOL, 2)


SMOL_PROMPTS = [
    "The capital of France is Paris, and the capital of Germany is",
    "def fibonacci(n):\n    return",
]


@requires_smol
@pytest.mark.parametrize("prompt", SMOL_PROMPTS, ids=["capitals", "code"])
def test_smollm_logits(scalpel, smol, smol_ref, prompt):
    ids = smol_ref.tokenizer.encode(prompt)
    assert 6 <= len(ids) <= 14
    want, _ = smol_ref.forward(ids, want_hooks=False)
    r = scalpel.json("logits", "--model", smol, "--ids", ids_arg(ids), "--full", "--top-k", 10)
    check_logits(r, want, ids, SMOL_TOL, 10)
    for t in r["top"]:
        assert t["token"] == smol_ref.tokenizer.token_text(t["id"])


def test_logits_add_bos_prompt(scalpel, tiny, ref):
    """With add_bos_token = true, --prompt input gets the BOS id and the logits cover it."""
    path = tiny["llama_f32_bos"]["path"]
    m = ref(path)
    ids = m.tokenizer.encode("The dog in 2024")
    assert ids[0] == m.tokenizer.bos_id
    want, _ = m.forward(ids)
    r = scalpel.json("logits", "--model", path, "--prompt", "The dog in 2024", "--full", "--top-k", 3)
    check_logits(r, want, ids, TINY_TOL, 3)


def test_logits_threads(scalpel, tiny, ref):
    """More worker threads must not change the result beyond f32 noise."""
    path = tiny["llama_kquant_untied"]["path"]
    want, _ = ref(path).forward(TINY_IDS)
    r = scalpel.json("logits", "--model", path, "--ids", ids_arg(TINY_IDS), "--full", "--top-k", 5, "--threads", 2)
    check_logits(r, want, TINY_IDS, TINY_TOL, 5)
