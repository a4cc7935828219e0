#!/usr/bin/env python3
"""Converts the tiny Hugging Face checkpoints of `make_arch_fixtures.py` to
GGUF with llama.cpp's own converter, for the architectures whose GGUF
Scalpel reads besides llama (Qwen2, Qwen3, GPT-NeoX, Gemma 2, Gemma 3).

llama.cpp's converter is not a PyPI wheel, but it ships in the
`llama-cpp-python` source distribution on PyPI:

    pip download --no-deps --no-binary :all: llama-cpp-python   # or fetch the sdist
    tar xzf llama_cpp_python-*.tar.gz
    python tests/reference/make_arch_gguf.py --llama-cpp llama_cpp_python-*/vendor/llama.cpp

(needs torch, transformers, numpy, sentencepiece; CI does not run it). It
writes `tests/fixtures/arch/<name>/model-f32.gguf`.

The converter recognises a tokenizer's pre-tokenizer by hashing what it
does to a test string; the tiny tokenizers here are not in its table, so
the name is given: what each tokenizer.json does (`qwen2`: transformers 5
saved the Qwen2 one with Qwen2's digit-by-digit pre-tokenizer; `gpt-2`: the
Qwen3 one kept plain byte-level).

Two of the converter's assumptions do not hold for checkpoints saved by
transformers 5, and are bridged here without changing a number:
GPT-NeoX's converter reads `rotary_pct` (transformers 5 writes
`rope_parameters.partial_rotary_factor`), and Gemma 2's requires a
SentencePiece `tokenizer.model` (the tiny one has tokenizer.json only; it
goes through the BPE path, as the converter's Gemma 3 does).
"""

import argparse
import os
import sys

# gemma2_gguf, gemma3_gguf: their tiny tokenizer.json (no tokenizer.model) goes through
# the converter's BPE path; the test feeds transformers' ids, so only the
# weights and hyperparameters are compared (real Gemma GGUFs carry a
# SentencePiece vocabulary, checked by the spm_gguf fixture).
PRE = {"qwen2": "qwen2", "qwen3_bf16": "gpt-2", "gpt_neox": "gpt-2", "gemma2_gguf": "gpt-2", "gemma3_gguf": "gpt-2"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp's source folder (with convert_hf_to_gguf.py)")
    ap.add_argument("--fixtures", default=os.path.join(here, "..", "fixtures", "arch"))
    ap.add_argument("--only", nargs="*", help="convert only these fixtures")
    args = ap.parse_args()
    sys.path.insert(0, args.llama_cpp)
    sys.path.insert(0, os.path.join(args.llama_cpp, "gguf-py"))
    import convert_hf_to_gguf
    from conversion import base, gemma, gptneox

    neox_params = gptneox.GPTNeoXModel.set_gguf_parameters

    def neox_set_gguf_parameters(self):
        rope = self.hparams.get("rope_parameters") or {}
        self.hparams.setdefault("rotary_pct", rope.get("partial_rotary_factor", 1.0))
        neox_params(self)

    gptneox.GPTNeoXModel.set_gguf_parameters = neox_set_gguf_parameters

    def gemma2_set_vocab(self):
        self._set_vocab_gpt2()
        self.gguf_writer.add_add_space_prefix(False)

    gemma.Gemma2Model.set_vocab = gemma2_set_vocab

    for name, pre in PRE.items():
        if args.only and name not in args.only:
            continue
        base.TextModel.get_vocab_base_pre = lambda self, tokenizer, pre=pre: pre
        for outtype in ["f32"]:
            out = os.path.join(args.fixtures, name, f"model-{outtype}.gguf")
            sys.argv = ["convert_hf_to_gguf.py", os.path.join(args.fixtures, name), "--outtype", outtype, "--outfile", out]
            convert_hf_to_gguf.main()
            print(f"{name}: {out} ({os.path.getsize(out) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
