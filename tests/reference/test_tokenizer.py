"""`scalpel tokenize` against the pure-Python BPE (bpe.py)."""
from __future__ import annotations

import pytest

import bpe
from conftest import requires_smol

SMOL_TEXTS = [
    "The capital of France is",
    "Hello  world,   three   spaces and a trailing space ",
    "line one\nline two\n\n\nafter three newlines\n",
    "digits 12345 and 2024; pi=3.14159; a   1",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "emoji 😀🎉👍🏽 and flags 🇫🇷",
    "accents: café naïve Zürich Ångström São Paulo, 東京 and Ελληνικά",
    "it's we're I'm they'll DON'T",
    "\ttab\t\tand CRLF\r\nend",
    "non\u00a0breaking ideographic\u3000space zero\u200bwidth \u00bd \u2460 \ufb01",
    "        deep indent\ntrailing   \nnext   ",
    "<|im_start <|endoftext|><|endoftext|>x<|im_end|>y",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
]


def _check(scalpel, model_path, tok: bpe.BPETokenizer, text, extra=()):
    r = scalpel.json("tokenize", "--model", model_path, "--prompt", text, *extra)
    want = tok.encode(text)
    assert r["ids"] == want, f"{text!r}: got {r['ids']} want {want}"
    want_tokens = [tok.token_text(i) for i in want]
    assert r["tokens"] == want_tokens, f"{text!r}: tokens {r['tokens']} want {want_tokens}"


@requires_smol
@pytest.mark.parametrize("text", SMOL_TEXTS, ids=range(len(SMOL_TEXTS)))
def test_tokenize_smollm(scalpel, smol, smol_ref, text):
    _check(scalpel, smol, smol_ref.tokenizer, text)


@requires_smol
def test_tokenize_default_model_is_smollm(scalpel, smol_ref):
    text = "The capital of France is"
    r = scalpel.json("tokenize", "--model", "default", "--prompt", text)
    assert r["ids"] == smol_ref.tokenizer.encode(text)


@requires_smol
def test_tokenize_smollm_chat(scalpel, smol, smol_ref):
    """--chat renders the GGUF chat template (jinja) around a user message."""
    msg = "What is the capital of France?"
    text = smol_ref.tokenizer.render_chat([{"role": "user", "content": msg}], add_generation_prompt=True)
    r = scalpel.json("tokenize", "--model", smol, "--prompt", msg, "--chat")
    assert r["ids"] == smol_ref.tokenizer.encode(text)


TINY_TEXTS = [
    "The quick brown fox in 2024 had 365 days",
    "Hello  there   the the  2025\n\n  dog",
    "<|im_start|>user\nhello<|im_end|>\n<|endoftext|>",
    "émoji 😀 x=3.5",
]


@pytest.mark.parametrize("name", ["gpt2", "llama_hf", "llama_f32_untied", "llama_q4_0_untied"])
def test_tokenize_tiny(scalpel, tiny, name):
    """llama_q4_0_* carries tokenizer.ggml.pre = "smollm" (digits split one by
    one), the others "gpt2"; the tiny vocabulary has digit merges so the two differ."""
    path = tiny[name]["path"]
    tok = bpe.BPETokenizer.load(path)
    for text in TINY_TEXTS:
        _check(scalpel, path, tok, text)


def test_tokenize_add_bos(scalpel, tiny):
    """tokenizer.ggml.add_bos_token = true: the BOS id is prepended."""
    path = tiny["llama_f32_bos"]["path"]
    tok = bpe.BPETokenizer.from_gguf(path)
    assert tok.add_bos
    r = scalpel.json("tokenize", "--model", path, "--prompt", "The dog")
    assert r["ids"] == tok.encode("The dog")
    assert r["ids"][0] == tok.bos_id


def test_tokenize_hf_dir_chat(scalpel, tiny):
    """Llama HF directory: the chat template comes from tokenizer_config.json."""
    import tiny_models

    path = tiny["llama_hf"]["path"]
    tok = bpe.BPETokenizer.load(path)
    tok.chat_template = tiny_models.CHAT_TEMPLATE
    r = scalpel.json("tokenize", "--model", path, "--prompt", "hello", "--chat")
    assert r["ids"] == tok.encode(tok.render_chat([{"role": "user", "content": "hello"}]))


def test_chat_without_template(scalpel, tiny):
    """The GPT-2 tiny directory has no chat template: --chat must fail clearly (or not at all), never panic."""
    p = scalpel.run("tokenize", "--model", tiny["gpt2"]["path"], "--prompt", "hello", "--chat", "--json", timeout=30)
    assert "panicked" not in p.stderr
    if p.returncode != 0:
        assert "template" in p.stderr.lower(), p.stderr
