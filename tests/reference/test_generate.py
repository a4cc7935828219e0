"""`scalpel generate` against greedy decoding by full recomputation in NumPy."""
from __future__ import annotations

import numpy as np
import pytest

import bpe
from conftest import ids_arg, requires_smol
from ref_model import softmax

PROMPT_IDS = [5, 100, 260]
TIE = 1e-3  # top-2 logit margins below this are treated as ties (f32 vs f64 may break them differently)


def is_stop_token(m, i):
    return m.tokenizer.token_types[i] == bpe.TOKEN_CONTROL or i == m.cfg.get("eos_id")


def check_greedy(m, got, prompt_ids, n_new):
    want, margins = m.greedy(prompt_ids, n_new)
    k = next((i for i, g in enumerate(margins) if g < TIE), n_new)  # compare up to the first near-tie
    n = min(len(got), k)
    assert got[:n] == want[:n], f"greedy ids differ: got {got} want {want} (margins {np.round(margins, 4).tolist()})"
    if len(got) < n_new and len(got) <= k:
        assert len(got) > 0 and is_stop_token(m, got[-1]), f"stopped early at {got} without an end-of-sequence token"
    assert len(got) <= n_new
    return want


@pytest.mark.parametrize("name", ["gpt2", "gpt2_fp16", "llama_hf", "llama_q4_1_untied", "llama_f16_tied",
                                  "llama_kquant_untied"])
def test_tiny_greedy(scalpel, tiny, ref, name):
    path = tiny[name]["path"]
    m = ref(path)
    r = scalpel.json("generate", "--model", path, "--ids", ids_arg(PROMPT_IDS), "--max-new-tokens", 12,
                     "--temperature", 0)
    check_greedy(m, r["ids"], PROMPT_IDS, 12)
    text_ok = {m.tokenizer.decode(r["ids"]), m.tokenizer.decode(r["ids"], skip_special=True)}
    assert r["text"] in text_ok, (r["text"], text_ok)


def test_tiny_greedy_long(scalpel, tiny, ref):
    """Generation up to the context length (KV cache over many steps)."""
    path = tiny["llama_q8_0_tied"]["path"]
    m = ref(path)
    r = scalpel.json("generate", "--model", path, "--ids", ids_arg(PROMPT_IDS), "--max-new-tokens", 40,
                     "--temperature", 0)
    check_greedy(m, r["ids"], PROMPT_IDS, 40)


def test_tiny_chat_greedy(scalpel, tiny, ref):
    path = tiny["llama_f32_untied"]["path"]
    m = ref(path)
    msg = "Hello there"
    ids = m.tokenizer.encode(m.tokenizer.render_chat([{"role": "user", "content": msg}]))
    r = scalpel.json("generate", "--model", path, "--prompt", msg, "--chat", "--max-new-tokens", 8,
                     "--temperature", 0)
    check_greedy(m, r["ids"], ids, 8)


def _sample(scalpel, path, *extra):
    return scalpel.json("generate", "--model", path, "--ids", ids_arg(PROMPT_IDS), "--max-new-tokens", 10, *extra)


def test_sampling_is_seeded(scalpel, tiny):
    path = tiny["llama_hf"]["path"]
    a = _sample(scalpel, path, "--temperature", 1.0, "--seed", 7)
    b = _sample(scalpel, path, "--temperature", 1.0, "--seed", 7)
    assert a["ids"] == b["ids"]


def test_top_k_1_is_greedy(scalpel, tiny, ref):
    path = tiny["gpt2"]["path"]
    r = _sample(scalpel, path, "--temperature", 1.5, "--top-k", 1, "--seed", 3)
    check_greedy(ref(path), r["ids"], PROMPT_IDS, 10)


@pytest.mark.parametrize("how", ["top_k", "top_p"])
def test_samples_stay_in_the_allowed_set(scalpel, tiny, ref, how):
    """Each sampled token must be inside the reference top-k / nucleus for its prefix."""
    path = tiny["llama_hf"]["path"]
    m = ref(path)
    for seed in (1, 2, 3):
        if how == "top_k":
            r = _sample(scalpel, path, "--temperature", 1.0, "--top-k", 3, "--seed", seed)
        else:
            r = _sample(scalpel, path, "--temperature", 1.0, "--top-p", 0.5, "--seed", seed)
        ids = list(PROMPT_IDS)
        for step, tok in enumerate(r["ids"]):
            logits, _ = m.forward(ids, want_hooks=False)
            last = logits[-1]
            order = np.argsort(-last)
            if how == "top_k":
                allowed = set(order[:3].tolist())
                allowed |= {int(i) for i in order[3:] if last[order[2]] - last[i] < TIE}  # ties at the border
            else:
                p = softmax(last)[order]
                before = np.concatenate([[0.0], np.cumsum(p)[:-1]])
                allowed = {int(order[i]) for i in range(len(order)) if before[i] < 0.5 + 1e-4}
            assert tok in allowed, f"seed {seed} step {step}: token {tok} not in allowed {sorted(allowed)}"
            ids.append(tok)


@requires_smol
def test_smollm_chat_greedy(scalpel, smol, smol_ref):
    msg = "What is the capital of France?"
    ids = smol_ref.tokenizer.encode(smol_ref.tokenizer.render_chat([{"role": "user", "content": msg}]))
    r = scalpel.json("generate", "--model", smol, "--prompt", msg, "--chat", "--max-new-tokens", 8,
                     "--temperature", 0)
    want = check_greedy(smol_ref, r["ids"], ids, 8)
    print("SmolLM2 greedy:", repr(smol_ref.tokenizer.decode(want)))
