#!/usr/bin/env python3
"""Writes a tiny Gemma 3 with Gemma 3's real vocabulary size (262,144
tokens) for the page's large-vocabulary benchmark (`big_vocab.mjs`): two
layers of width 64, random weights, saved by transformers itself; its
tokenizer.json is the tiny fixture's (tests/fixtures/arch/gemma3) with the
vocabulary padded to 262,144 entries, as large as Gemma's own.

    /path/to/python tests/bench/make_big_vocab.py models/bench-gemma3-262k

Needs torch and transformers (not CI: the model is ~70 MB, never committed).
"""

import json
import os
import sys

import torch
import transformers

VOCAB = 262_144


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    fixture = os.path.join(here, "..", "fixtures", "arch", "gemma3")
    tok = json.load(open(os.path.join(fixture, "tokenizer.json")))
    vocab = tok["model"]["vocab"]
    for i in range(len(vocab), VOCAB):
        vocab[f"<unused{i}>"] = i
    json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w"))
    for f in ["tokenizer_config.json"]:
        with open(os.path.join(fixture, f)) as src, open(os.path.join(out, f), "w") as dst:
            dst.write(src.read())
    torch.manual_seed(0)
    cfg = transformers.Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512,
        hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
        bos_token_id=2, eos_token_id=1, pad_token_id=0)
    model = transformers.Gemma3ForCausalLM(cfg).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{out}: vocab {VOCAB}, {size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
