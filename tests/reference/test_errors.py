"""Bad input must fail fast and clearly: non-zero exit within a few seconds,
a stderr message naming the file / field and the problem, and no panic."""
from __future__ import annotations


import pytest

import bad_inputs
from conftest import ids_arg

FAST = 10  # seconds


def expect_error(scalpel, args, where, what, timeout=FAST):
    p = scalpel.run(*args, "--json", timeout=60)
    cmd = " ".join(repr(a) if " " in str(a) or not str(a) else str(a) for a in p.cmd)
    assert p.returncode != 0, f"exit 0 on bad input: {cmd}\nstdout: {p.stdout[:500]}"
    err = p.stderr
    assert "panicked" not in err, f"panic: {cmd}\n{err[-1500:]}"
    assert err.strip(), f"empty stderr: {cmd}"
    low = err.lower()
    assert any(w.lower() in low for w in where), f"stderr names none of {where}: {cmd}\nstderr: {err.strip()[:800]}"
    assert any(w.lower() in low for w in what), f"stderr names none of {what}: {cmd}\nstderr: {err.strip()[:800]}"
    assert p.elapsed < timeout, f"took {p.elapsed:.1f}s (> {timeout}s): {cmd}"
    return err


def _case_names():
    # names only, for parametrize ids; the files are made by the session fixture
    return ["truncated_header.gguf", "truncated_data.gguf", "bad_magic.gguf", "bad_version.gguf",
            "huge_tensor_count.gguf", "huge_kv_count.gguf", "huge_string_len.gguf", "huge_array_len.gguf",
            "huge_tensor_dims.gguf", "huge_n_dims.gguf", "unknown_tensor_type.gguf", "unsupported_tensor_type.gguf",
            "tensor_out_of_bounds.gguf", "misaligned_tensor.gguf", "unsupported_arch.gguf", "missing_tensor.gguf",
            "empty.gguf", "nonexistent.gguf", "st_header_too_long", "st_bad_json", "st_offsets_oob",
            "st_missing_tensor", "missing_tokenizer", "missing_config", "unsupported_arch_hf", "bad_tokenizer_json"]


@pytest.mark.parametrize("case", _case_names())
def test_bad_model_file(scalpel, bad_cases, case):
    c = {c["name"]: c for c in bad_cases}[case]
    expect_error(scalpel, ["logits", "--model", c["path"], "--ids", "1,2,3"], c["where"], c["what"])


def test_bad_cases_complete(bad_cases):
    assert sorted(c["name"] for c in bad_cases) == sorted(_case_names())


@pytest.fixture(scope="module")
def llama(tiny):
    return tiny["llama_q8_0_untied"]["path"]


def test_empty_prompt(scalpel, llama):
    expect_error(scalpel, ["logits", "--model", llama, "--prompt", ""], ["prompt", "input"], ["empty", "no tokens"])


def test_prompt_longer_than_context(scalpel, tiny):
    ids = ids_arg([5] * 100)
    for name in ("llama_q8_0_untied", "gpt2", "llama_hf"):
        expect_error(scalpel, ["logits", "--model", tiny[name]["path"], "--ids", ids],
                     ["context", "n_ctx", "positions", "64"], ["100", "long", "exceed", "too many", "context"])


def test_generate_past_context(scalpel, tiny):
    """60-token prompt + 10 new tokens on a 64-token context: either an error or at most 4 tokens."""
    p = scalpel.run("generate", "--model", tiny["gpt2"]["path"], "--ids", ids_arg([5] * 60), "--max-new-tokens", 10,
                    "--json", timeout=60)
    assert "panicked" not in p.stderr, p.stderr[-1500:]
    if p.returncode == 0:
        import json

        assert len(json.loads(p.stdout)["ids"]) <= 4
    else:
        assert "context" in p.stderr.lower() or "64" in p.stderr


def test_unknown_hook(scalpel, llama):
    expect_error(scalpel, ["activations", "--model", llama, "--ids", "1,2", "--hook", "blocks.0.hook_nonsense"],
                 ["blocks.0.hook_nonsense", "hook_nonsense"], ["unknown", "no hook", "not a hook", "invalid", "hook"])


def test_hook_layer_out_of_range(scalpel, llama):
    expect_error(scalpel, ["activations", "--model", llama, "--ids", "1,2", "--hook", "blocks.99.hook_resid_pre"],
                 ["99", "blocks.99"], ["layer", "range", "only", "2"])


def test_token_id_out_of_range(scalpel, llama):
    expect_error(scalpel, ["logits", "--model", llama, "--ids", "1,99999"], ["99999"], ["range", "vocab"])


def test_bad_ids_syntax(scalpel, llama):
    expect_error(scalpel, ["logits", "--model", llama, "--ids", "1,two,3"], ["two", "--ids"], ["token id", "invalid", "parse"])


def test_bad_precision(scalpel, llama):
    expect_error(scalpel, ["logits", "--model", llama, "--ids", "1", "--precision", "f8"], ["f8", "precision"],
                 ["f32", "quantized", "unknown", "invalid", "unsupported"])


def test_unknown_default_name(scalpel):
    expect_error(scalpel, ["logits", "--model", "no-such-model-name", "--ids", "1"], ["no-such-model-name"],
                 bad_inputs.MISSING + ["unknown", "not a"])
