"""Checks of the Python reference itself (no scalpel binary needed)."""
from __future__ import annotations

import os

import numpy as np
import pytest

import bpe
import ref_model as R
import tiny_models as tm
from conftest import requires_smol

TEXTS = [
    "Hello world",
    "  leading spaces and trailing   ",
    "multiple\n\nnewlines\n\n\n  indented",
    "digits 12345 and 2024, 365 days; x=3.14159",
    "a   1  22   333",
    "def add(a, b):\n    return a + b  # comment\n",
    "emoji 😀🎉 and accents: café, naïve, Zürich, 東京",
    "it's we're they've I'm you'll he'd",
    "<|endoftext|>special<|im_start|>user\nhi<|im_end|>\n",
    "\t tabs\t\tand\r\nCRLF",
    "non\u00a0breaking ideographic\u3000space line\u2028sep zero\u200bwidth",
    "        deep indent\ntrailing   \nnext",
    "<|im_start <|endoftext|><|endoftext|>x<|im_end|>y",
    "\u00bd and \u2155 and \u2460, \ufb01 ligature, CamelCaseHERE \u0027\u0027\u0027q\u0027\u0027\u0027",
    "",
]


def test_tiny_bpe_matches_hf_tokenizers(tiny):
    from tokenizers import Tokenizer

    for name in ("gpt2", "llama_hf"):
        path = os.path.join(tiny[name]["path"], "tokenizer.json")
        hf = Tokenizer.from_file(path)
        me = bpe.BPETokenizer.load(path)
        for t in TEXTS + [tm.SAMPLE_TEXT]:
            assert me.encode(t) == hf.encode(t, add_special_tokens=False).ids, (name, t)
            assert me.decode(me.encode(t)) == t


def test_tiny_gguf_tokenizer_pre(tiny):
    g = bpe.BPETokenizer.from_gguf(tiny["llama_f32_untied"]["path"])
    s = bpe.BPETokenizer.from_gguf(tiny["llama_q4_0_untied"]["path"])
    assert g.pre == "gpt2" and s.pre == "smollm"
    # the tiny vocabulary has digit merges ("202", "365", " 202"), so the pre-tokenizer matters
    assert [g.tokens[i] for i in g.encode("In 2024")] == ["In", "Ġ202", "4"]
    assert [s.tokens[i] for i in s.encode("In 2024")] == ["In", "Ġ", "2", "0", "2", "4"]


@requires_smol
def test_smollm_bpe_matches_hf_digits_pipeline(smol):
    """Third implementation: HF `tokenizers` with the pre-tokenizer SmolLM2's
    own tokenizer.json uses (Digits(individual_digits) + ByteLevel)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, AddedToken

    me = bpe.BPETokenizer.from_gguf(smol)
    vocab = {t: i for i, t in enumerate(me.tokens)}
    merges = [tuple(k) for k, _ in sorted(me.ranks.items(), key=lambda kv: kv[1])]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in sorted(me.special)])
    for t in TEXTS + ["total:    42", "x\n 2", "   7", "١٢٣ ½ ²"]:
        assert me.encode(t) == tk.encode(t, add_special_tokens=False).ids, t


@requires_smol
def test_transformers_gguf_tokenizer_ignores_smollm_pre(smol):
    """Documented finding: transformers' GGUF tokenizer conversion has no
    entry for tokenizer.ggml.pre = "smollm" and falls back to plain GPT-2
    ByteLevel, so it differs from SmolLM2's real tokenizer (and llama.cpp)
    on whitespace runs before digits. bpe.py follows llama.cpp / the HF
    tokenizer.json (Digits(individual_digits=True) first)."""
    pytest.importorskip("transformers")
    import gguf
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer

    r = gguf.GGUFReader(smol)
    d = {name: r.fields["tokenizer." + key].contents() for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items()
         if "tokenizer." + key in r.fields}
    backend, _ = convert_gguf_tokenizer("llama", d)
    me = bpe.BPETokenizer.from_gguf(smol)
    import regex

    for t in TEXTS:
        if not regex.search(r"\s\p{N}", t):  # they agree except where whitespace precedes a \p{N} char
            assert backend.encode(t, add_special_tokens=False).ids == me.encode(t), t
    t = "a   1"
    assert me.encode(t) == [me.vocab["a"], me.vocab["ĠĠĠ"], me.vocab["1"]]
    assert backend.encode(t, add_special_tokens=False).ids == [me.vocab["a"], me.vocab["ĠĠ"], me.vocab["Ġ"], me.vocab["1"]]


@requires_smol
def test_smollm_vocab_has_no_multidigit_tokens(smol):
    """Evidence that SmolLM2 was trained with individual digit splitting."""
    me = bpe.BPETokenizer.from_gguf(smol)
    import regex

    for i, t in enumerate(me.tokens):
        if i in range(17):
            continue
        s = me.token_bytes(i).decode("utf-8", errors="replace")
        if regex.search(r"\p{N}", s):
            assert len(s) == 1, (i, t)


def test_gguf_layout_equals_hf_layout(tiny):
    ids = [5, 100, 260, 37, 299, 12, 80, 255, 1, 301, 7, 44]
    for hf_name, gg in (("llama_hf", "llama_f32_untied"), ("llama_hf_tied", "llama_f32_tied")):
        a = R.load(tiny[hf_name]["path"])
        b = R.load(tiny[gg]["path"])
        la, ha = a.forward(ids)
        lb, hb = b.forward(ids)
        assert np.abs(la - lb).max() < 1e-9
        assert set(ha) == set(hb)
        for k in ha:
            fin = np.isfinite(ha[k])
            assert np.array_equal(fin, np.isfinite(hb[k])), k
            assert np.abs(ha[k][fin] - hb[k][fin]).max() < 1e-9, k


def test_rope_conventions_agree():
    rng = np.random.default_rng(0)
    H, d, P = 3, 16, 7
    x_hf = rng.standard_normal((P, H, d))
    # GGUF order = inverse of gguf_to_hf_order
    x_gg = x_hf.reshape(P, H, 2, d // 2).swapaxes(-1, -2).reshape(P, H, d)
    assert np.allclose(R.gguf_to_hf_order(x_gg), x_hf)
    assert np.allclose(R.gguf_to_hf_order(R.rope_interleaved(x_gg, 10000.0)), R.rope_half(x_hf, 10000.0))
    # the weight permutation used by convert_hf_to_gguf.py agrees with the activation order
    W = rng.standard_normal((H * d, 5))
    Wg = tm.permute_qk(W, H)
    assert np.allclose(R.gguf_to_hf_order((Wg @ np.ones(5)).reshape(H, d)), (W @ np.ones(5)).reshape(H, d))


def test_gpt2_variants_identical(tiny):
    ids = [3, 77, 150, 260, 303, 9]
    base, _ = R.load(tiny["gpt2"]["path"]).forward(ids)
    for v in ("gpt2_prefixed", "gpt2_buffers", "gpt2_sharded"):
        lg, _ = R.load(tiny[v]["path"]).forward(ids)
        assert np.array_equal(lg, base), v
    lg, _ = R.load(tiny["gpt2_fp16"]["path"]).forward(ids)
    assert np.abs(lg - base).max() < 0.5


@pytest.mark.parametrize("qt", ["Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"])
def test_quant_round_trip(qt):
    import gguf

    rng = np.random.default_rng(1)
    a = rng.standard_normal((8, 512)).astype(np.float32)
    q, t = tm.quantize(a, qt)
    deq = gguf.quants.dequantize(q, t)
    rel = np.abs(deq - a).max() / np.abs(a).max()
    bound = {"Q8_0": 0.01, "Q6_K": 0.03, "Q4_0": 0.15, "Q4_1": 0.1, "Q4_K": 0.1}[qt]
    assert rel < bound, rel
    # packing is exact: re-quantizing the dequantized values is a fixed point for our K-quant packers
    if qt in ("Q4_K", "Q6_K"):
        q2, _ = tm.quantize(deq, qt)
        assert np.abs(gguf.quants.dequantize(q2, t) - deq).max() <= 1e-6 * np.abs(deq).max() + 1e-7


def test_safetensors_reader_matches_library(tiny):
    from safetensors.numpy import load_file

    p = os.path.join(tiny["gpt2"]["path"], "model.safetensors")
    mine, lib = tm.read_safetensors(p), load_file(p)
    assert set(mine) == set(lib)
    for k in lib:
        assert np.array_equal(mine[k], lib[k])


def test_tokenizer_json_loads_in_transformers(tiny):
    pytest.importorskip("transformers")
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(tiny["gpt2"]["path"], "tokenizer.json"))
    me = bpe.BPETokenizer.load(tiny["gpt2"]["path"])
    assert tok.encode("The dog in 2024", add_special_tokens=False) == me.encode("The dog in 2024")


@requires_smol
def test_smollm_reference_sane(smol_ref):
    ids = smol_ref.tokenizer.encode("The capital of France is")
    assert ids == [504, 3575, 282, 4649, 314]
    logits, hooks = smol_ref.forward(ids)
    assert smol_ref.tokenizer.token_text(int(logits[-1].argmax())) == " Paris"
    assert hooks["blocks.29.hook_resid_post"].shape == (5, 576)
    assert hooks["blocks.0.attn.hook_k"].shape == (5, 3, 64)
    assert hooks["blocks.0.mlp.hook_post"].shape == (5, 1536)
