#!/usr/bin/env python3
"""Runs `scalpel export`'s nnsight and TransformerLens scripts on the tiny
architecture fixtures and compares their logits with the Scalpel CLI's on
the same document and prompt (docs/export.md, "Verification").

    /work/torchenv/bin/python tests/reference/verify_exports.py [--bin target/release/scalpel] [--arch llama,qwen2,gpt_neox]

Needs torch, transformers, nnsight and transformer_lens (4.x). For each
architecture it writes four documents (steering, ablation, patching,
attention knockout) with seeded vectors sized from the fixture's
config.json, runs `scalpel logits --full` under each, exports each to both
targets, imports the script and calls its `load` and `run`. It prints, per
document and target, the largest |logit difference| over every position
and vocabulary entry, next to how far the document moves the logits from
the clean run (so a no-op export could not pass). An export the target
cannot express must be refused by `scalpel export` with an error.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPT = "The cat sat on the mat and"
SOURCE_CANDIDATES = ["The dog sat on the mat and", "The cat ran on the mat and", "A cat sat on the mat and",
                     "The cat sat in the hat and", "The dog ran to the car and"]


def vec(rng, n, scale=1.0):
    return [round(float(x), 6) for x in rng.standard_normal(n) * scale]


def documents(cfg, source):
    """Steering, ablation, patching and knockout documents for this config."""
    rng = np.random.default_rng(0)
    d = cfg["hidden_size"]
    L = cfg["num_hidden_layers"]
    nh = cfg["num_attention_heads"]
    dh = cfg.get("head_dim") or d // nh
    dmlp = cfg["intermediate_size"]
    steer = {"version": 1, "interventions": [
        {"hook": "blocks.1.hook_resid_post", "op": "add", "vector": vec(rng, d), "scale": 4.0},
        {"hook": f"blocks.{L - 1}.hook_resid_pre", "op": "add", "vector": vec(rng, d), "scale": 4.0},
    ]}
    ablate = {"version": 1, "interventions": [
        {"hook": "blocks.0.attn.hook_z", "op": "zero", "heads": [1]},
        {"hook": "blocks.1.mlp.hook_post", "op": "mean", "neurons": [0, 3, 5, 7]},
        {"hook": f"blocks.{L - 1}.attn.hook_z", "op": "scale", "factor": 0.25, "heads": [0, nh - 1], "positions": [0, -1]},
        {"hook": "blocks.*.hook_resid_post", "op": "project_out", "direction": vec(rng, d)},
        {"hook": "blocks.1.hook_attn_out", "op": "set_projection",
         "direction": vec(rng, d), "cap": 0.1, "positions": {"start": 1, "end": -1}},
        {"hook": "blocks.0.hook_mlp_out", "op": "add", "vector": vec(rng, d), "scale": 3.0, "positions": "prompt"},
        {"hook": "blocks.0.hook_resid_post", "op": "zero", "enabled": False},
    ]}
    patch = {"version": 1, "interventions": [
        {"hook": "blocks.1.hook_resid_pre", "op": "patch", "source": source, "positions": [1, -1]},
        {"hook": "blocks.1.attn.hook_z", "op": "set_projection", "direction": vec(rng, dh), "source": source, "heads": [2]},
        {"hook": "blocks.0.hook_mlp_out", "op": "mean", "over": [source, "Hello world"]},
        {"hook": "blocks.2.mlp.hook_post", "op": "set_projection", "direction": vec(rng, dmlp), "value": 2.0},
    ]}
    knockout = {"version": 1, "interventions": [
        {"hook": "blocks.1.attn.hook_attn_scores", "op": "knockout", "keys": [0, 1], "positions": [-1]},
        {"hook": "blocks.0.attn.hook_pattern", "op": "knockout", "keys": [0], "heads": [0, 1]},
    ]}
    return {"steer": steer, "ablate": ablate, "patch": patch, "knockout": knockout}


def scalpel_logits(bin_, model, prompt, doc_path):
    args = [bin_, "logits", "--model", model, "--prompt", prompt, "--json", "--full"]
    if doc_path:
        args += ["--interventions", doc_path]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    v = json.loads(out)
    return v["ids"], np.array(v["logits"], dtype=np.float64)


def import_script(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3].replace("-", "_"), path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("SCALPEL_BIN", os.path.join(ROOT, "target/release/scalpel")))
    ap.add_argument("--arch", default="llama,qwen2,gpt_neox")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    from transformers import AutoTokenizer

    import nnsight
    import transformer_lens
    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
          f"nnsight {nnsight.__version__}, transformer_lens {__import__('importlib.metadata').metadata.version('transformer_lens')}")
    tmp = tempfile.mkdtemp(prefix="scalpel-export-")
    worst = 0.0
    failures = []
    print(f"{'arch':<9} {'document':<9} {'target':<17} {'max|Δ| vs scalpel':>18} {'doc moves logits by':>20}")
    for arch in a.arch.split(","):
        model = os.path.join(ROOT, "tests/fixtures/arch", arch)
        cfg = json.load(open(os.path.join(model, "config.json")))
        tok = AutoTokenizer.from_pretrained(model)
        n = len(tok(PROMPT).input_ids)
        source = next(s for s in SOURCE_CANDIDATES if len(tok(s).input_ids) == n)
        _, clean = scalpel_logits(a.bin, model, PROMPT, None)
        for name, doc in documents(cfg, source).items():
            doc_path = os.path.join(tmp, f"{arch}-{name}.json")
            json.dump(doc, open(doc_path, "w"))
            ids, ref = scalpel_logits(a.bin, model, PROMPT, doc_path)
            moved = np.abs(ref - clean).max()
            for target in ["nnsight", "transformer-lens"]:
                script = os.path.join(tmp, f"{arch}_{name}_{target.replace('-', '_')}.py")
                r = subprocess.run([a.bin, "export", "--to", target, "--doc", doc_path, "--model", model,
                                    "--prompt", PROMPT, "--out", script], capture_output=True, text=True)
                if r.returncode != 0:
                    msg = r.stderr.strip().splitlines()[-1]
                    print(f"{arch:<9} {name:<9} {target:<17} refused: {msg[msg.find('cannot export'):][:110]}")
                    if not (name == "knockout" and target == "nnsight"):
                        failures.append(f"{arch} {name} {target}: unexpected refusal")
                    continue
                mod = import_script(script)
                m = mod.load(model, "cpu", torch.float32, argparse.Namespace(remote=False))
                got_ids, logits = mod.run(m, PROMPT)
                if got_ids[0].tolist() != ids:
                    failures.append(f"{arch} {name} {target}: token ids differ {got_ids[0].tolist()} vs {ids}")
                    continue
                diff = np.abs(logits[0].detach().double().numpy() - ref).max()
                worst = max(worst, diff)
                print(f"{arch:<9} {name:<9} {target:<17} {diff:>18.2e} {moved:>20.3f}")
                if not diff < 1e-4:
                    failures.append(f"{arch} {name} {target}: max |Δ| {diff:.2e}")
    print(f"worst max|Δ| {worst:.2e}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
