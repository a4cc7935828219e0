"""Intervention documents (`--interventions FILE.json`) against the NumPy reference.

For every op of the document (add with literal / prompt_diff / mean_diff
vectors and a scale, scale, zero, mean over this prompt's positions or over
a prompt set, patch from a source prompt, project_out (also on `blocks.*`),
set_projection (value, cap, and source: 1-D subspace patching), knockout on attention scores and patterns),
with every kind of selection (positions all / prompt / list with negatives /
range; heads on per-head hooks, k/v with the kv-head count; neurons on MLP
hooks) and compositions of several in order, the reference applies the same
semantics in float64 through `ref_model.forward_hooked` and the CLI must give
the same logits and hook values (1e-4 on tiny models, 1e-3 on SmolLM2).

Semantics implemented here, independently of crates/interventions/src/apply.rs
(h is the hook's value for one sequence; "selected" = positions x heads x
neurons of the item; positions are absolute, negatives count from the end of
the prompt, a range is [start, end)):
  add            h[sel] += scale * v (v over the last axis; with neurons only
                 those units move; on per-head hooks v may also hold one
                 d_head block per head)
  scale          h[sel] *= factor
  zero           h[sel] = 0
  mean           h[sel] = mean over the prompt's positions of h (as it is at
                 that point of the document); with `over`, the mean over all
                 positions of the `over` prompts' clean runs (docs/interventions.md)
  patch          h[sel] = value at the same hook and position in a clean run
                 on `source` (same token length)
  project_out    h[sel] -= (h.u) u, u = direction / |direction|
  set_projection h[sel] += (target - h.u) u; target = value, or min(h.u, cap),
                 or h_src.u with h_src the value at the same hook and position
                 in a clean run on `source` (same token length; generated
                 positions have no source value: target = h.u, unchanged)
  knockout       scores[head, query in positions, key in keys] = -inf (before
                 the softmax); on hook_pattern the same entries = 0 (after it)
Vectors: prompt_diff = act(plus)[position] - act(minus)[position] at
`vector.hook` (default: the intervention's hook), clean runs; mean_diff = mean
over `positive` of act[position] - mean over `negative`.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import bpe
import ref_model
from conftest import close_report, hook_array, requires_smol, repro

TINY_TOL = 1e-4
SMOL_TOL = 1e-3
TINY_MODELS = ["gpt2", "llama_q8_0_untied"]
PROMPT = "The dog sleeps in the sun."
SOURCE = "The dog sweeps in the sun."  # same token length on the tiny tokenizer, differs at position 3
OTHERS = ["Hello world! The dog", "I love the sun", "def add(a, b):"]
PER_HEAD = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_z")
SCORES = ("attn.hook_attn_scores", "attn.hook_pattern")


# ---------------------------------------------------------------- reference semantics
def f32(v):
    """Numbers as the engine holds them (the document is read into f32)."""
    return np.asarray(np.asarray(v, dtype=np.float32), dtype=np.float64)


def expand(m, hook):
    if hook.startswith("blocks.*."):
        return [f"blocks.{l}.{hook[len('blocks.*.'):]}" for l in range(m.cfg["n_layers"])]
    return [hook]


def axes(name):
    """(position axis, head axis) in the reference's per-sequence layout."""
    if name.endswith(SCORES):
        return 1, 0
    if name.endswith(PER_HEAD):
        return 0, 1
    return 0, None


def resolve(p, n):
    return n + p if p < 0 else p


def pos_set(spec, n, total):
    """Absolute positions (< total) a `positions` / `keys` value covers for an n-token prompt."""
    if spec in (None, "all"):
        return set(range(total))
    if spec == "prompt":
        return set(range(min(n, total)))
    if spec == "generated":
        return set(range(n, total))
    if isinstance(spec, dict):
        return set(range(resolve(spec["start"], n), resolve(spec["end"], n))) & set(range(total))
    return {resolve(p, n) for p in spec} & set(range(total))


class RefInterventions:
    """The document compiled for the reference model and a prompt of n tokens."""

    def __init__(self, m, doc, n):
        self.m, self.n, self.items = m, n, []
        self.cache = {}
        for iv in doc["interventions"]:
            if not iv.get("enabled", True):
                continue
            it = dict(iv)
            it["points"] = expand(m, iv["hook"])
            op = iv["op"]
            if op == "add":
                it["v"] = self.vector(iv["vector"], it["points"]) * f32(iv.get("scale", 1.0))
                it["v"] = f32(it["v"])  # the engine scales in f32
            elif op in ("project_out", "set_projection"):
                d = self.vector(iv["direction"], it["points"])
                it["u"] = d / np.linalg.norm(d)
                if "source" in iv:
                    it["src"] = {p: self.act(iv["source"], p) for p in it["points"]}
            elif op == "mean" and "over" in iv:
                # docs/interventions.md: "the mean over all positions of the `over` prompts"
                it["means"] = {}
                for p in it["points"]:
                    pa, _ = axes(p)
                    it["means"][p] = np.concatenate([self.act(s, p) for s in iv["over"]], axis=pa).mean(axis=pa)
            elif op == "patch":
                it["src"] = {p: self.act(iv["source"], p) for p in it["points"]}
            self.items.append(it)

    def act(self, text, name):
        """The clean run's value at hook `name` on `text` [pos, ...]."""
        ids = self.m.tokenizer.encode(text)
        key = (tuple(ids), name)
        if key not in self.cache:
            self.cache[key] = ref_model.forward_hooked(self.m, ids, record={name}, last_only=True)[1][name]
        return self.cache[key]

    def vector(self, spec, points):
        if isinstance(spec, list):
            return f32(spec)
        hook = spec.get("hook") or points[0]
        pos = spec.get("position", -1)

        def at(text):
            a = self.act(text, hook)
            return a[resolve(pos, a.shape[0])].ravel()

        if spec["from"] == "prompt_diff":
            return at(spec["plus"]) - at(spec["minus"])
        pos_mean = np.mean([at(s) for s in spec["positive"]], axis=0)
        neg_mean = np.mean([at(s) for s in spec["negative"]], axis=0)
        return pos_mean - neg_mean

    def mask(self, it, name, shape, total):
        pa, ha = axes(name)
        sel = sorted(pos_set(it.get("positions", "all"), self.n, total))
        pm = np.zeros(shape[pa], dtype=bool)
        pm[sel] = True
        bshape = [1] * len(shape)
        bshape[pa] = shape[pa]
        m = np.broadcast_to(pm.reshape(bshape), shape).copy()
        if it.get("heads") is not None and ha is not None:
            hm = np.zeros(shape[ha], dtype=bool)
            hm[it["heads"]] = True
            b2 = [1] * len(shape)
            b2[ha] = shape[ha]
            m &= hm.reshape(b2)
        if it.get("neurons") is not None:
            nm = np.zeros(shape[-1], dtype=bool)
            nm[it["neurons"]] = True
            m &= nm
        return m

    def fn(self, total):
        """Hook function for a full pass over `total` tokens (prompt + generated)."""
        def apply(name, x):
            changed = False
            for it in self.items:
                if name not in it["points"]:
                    continue
                x = self.apply_one(it, name, x, total)
                changed = True
            return x if changed else None
        return apply

    def apply_one(self, it, name, x, total):
        op = it["op"]
        m = self.mask(it, name, x.shape, total)
        pa, _ = axes(name)
        if op == "add":
            v = it["v"]
            if name.endswith(PER_HEAD) and v.size == x.shape[1] * x.shape[2]:
                v = v.reshape(x.shape[1], x.shape[2])  # one d_head block per head
            return x + m * v
        if op == "scale":
            return np.where(m, x * f32(it["factor"]), x)
        if op == "zero":
            return np.where(m, 0.0, x)
        if op == "mean":
            if "means" in it:
                mean = np.expand_dims(it["means"][name], pa)
            else:
                mean = np.take(x, range(self.n), axis=pa).mean(axis=pa, keepdims=True)
            return np.where(m, mean, x)
        if op == "patch":
            src = it["src"][name]
            L = src.shape[pa]
            if name.endswith(SCORES):  # [head, q, k]: pad the key axis, only q < L exists in the source
                pad = np.full((x.shape[0], L, x.shape[2]), -np.inf)  # keys past the source: future, masked
                pad[:, :, :L] = src
                src = pad
            keep = np.take(x, range(L, x.shape[pa]), axis=pa)
            src = np.concatenate([src, keep], axis=pa)  # generated positions: no source value, unchanged
            return np.where(m, src, x)
        if op == "project_out":
            u = it["u"]
            return x - m * ((x @ u)[..., None] * u)
        if op == "set_projection":
            u = it["u"]
            proj = x @ u
            if "value" in it:
                target = np.full_like(proj, f32(it["value"]))
            elif "cap" in it:
                target = np.minimum(proj, f32(it["cap"]))
            else:  # the source run's projection where it has the position (axis 0), else unchanged
                src = it["src"][name] @ u
                target = proj.copy()
                target[:src.shape[0]] = src[:proj.shape[0]]
            return x + m * ((target - proj)[..., None] * u)
        if op == "knockout":
            keys = sorted(pos_set(it["keys"], self.n, x.shape[2]))
            km = np.zeros(x.shape[2], dtype=bool)
            km[keys] = True
            full = m & km[None, None, :]
            return np.where(full, -np.inf if name.endswith("hook_attn_scores") else 0.0, x)
        raise AssertionError(f"reference has no op {op}")


def ref_run(m, doc, ids, record=()):
    iv = RefInterventions(m, doc, len(ids))
    logits, rec = ref_model.forward_hooked(m, ids, iv.fn(len(ids)), record=set(record))
    return logits, rec


# ---------------------------------------------------------------- CLI side
def write_doc(tmp_path, doc, name="doc.json"):
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return str(p)


def cli_logits(scalpel, path, prompt, docfile):
    r = scalpel.json("logits", "--model", path, "--prompt", prompt, "--full", "--top-k", 3,
                     "--interventions", docfile)
    return np.array([[math.nan if v is None else v for v in row] for row in r["logits"]], dtype=np.float64), r


def cli_hook(scalpel, path, prompt, docfile, hook):
    return hook_array(scalpel.json("activations", "--model", path, "--prompt", prompt, "--hook", hook,
                                   "--interventions", docfile))


def check_close(what, got, want, tol, cmd="", rtol=0.0):
    """max |got - want| <= tol + rtol * max |want| on finite entries; NaN never; -inf where the reference has it."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} want {want.shape}"
    n_nan = int(np.isnan(got).sum())
    assert n_nan == 0, f"{what}: {n_nan} NaN of {got.size} in the CLI's output (reference: {'finite' if np.isfinite(want).all() else 'finite or -inf'}) {cmd}"
    err, same_nonfinite = close_report(got, want)
    assert same_nonfinite, f"{what}: non-finite entries differ from the reference {cmd}"
    fin = np.isfinite(want)
    bound = tol + rtol * (float(np.abs(want[fin]).max()) if fin.any() else 0.0)
    print(f"{what}: max abs err {err:.3g} (bound {bound:.3g})")
    assert err <= bound, f"{what}: max abs err {err:.3g} > {bound:.3g} {cmd}"
    return err


def compare_doc(scalpel, tmp_path, path, m, doc, prompt, reads, tol, hook_rtol=1e-5):
    """Logits (within tol) + each hook in `reads` (after the interventions; within tol + hook_rtol *
    max |hook|, the convention of test_activations.py) vs the reference."""
    ids = m.tokenizer.encode(prompt)
    want_logits, rec = ref_run(m, doc, ids, record=reads)
    assert np.isfinite(want_logits).all(), "reference logits are not finite: bad test case"
    docfile = write_doc(tmp_path, doc)
    got, r = cli_logits(scalpel, path, prompt, docfile)
    assert r["ids"] == ids, (r["ids"], ids)
    cmd = f"\nrepro: scalpel logits --model {path} --prompt {prompt!r} --full --json --interventions {docfile}\n" \
          f"doc: {json.dumps(doc)[:600]}"
    check_close("logits", got, want_logits, tol, cmd)
    plain, _ = ref_model.forward_hooked(m, ids, last_only=True)  # the unintervened last position
    for h in reads:
        check_close(h, cli_hook(scalpel, path, prompt, docfile, h), rec[h], tol, rtol=hook_rtol, cmd=
                    f"\nrepro: scalpel activations --hook {h} --model {path} --prompt {prompt!r} --json "
                    f"--interventions {docfile}")
    return got, plain, r


# ---------------------------------------------------------------- tiny-model cases
def rnd(seed, n, std=1.0):
    return [float(x) for x in np.random.default_rng(seed).standard_normal(n) * std]


def D(m):
    return m.cfg["d_model"]


def DH(m):
    return m.cfg["d_head"]


def DM(m):
    return m.cfg["d_mlp"]


def last_layer(m):
    return m.cfg["n_layers"] - 1


# Each case: (id, builder(m) -> list of interventions, hooks to read after, archs or None)
CASES = [
    ("add_literal_all", lambda m: [
        {"hook": "blocks.1.hook_resid_pre", "op": "add", "vector": rnd(1, D(m)), "scale": 2.5, "positions": "all"}],
     ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"], None),
    ("add_prompt_positions_default_scale", lambda m: [
        {"hook": "blocks.0.hook_resid_post", "op": "add", "vector": rnd(2, D(m)), "positions": "prompt"}],
     ["blocks.1.attn.hook_z"], None),
    ("add_list_negative", lambda m: [
        {"hook": "blocks.0.hook_resid_post", "op": "add", "vector": rnd(3, D(m)), "scale": -1.5,
         "positions": [0, -1, -4]}],
     ["blocks.0.hook_resid_post", "blocks.1.hook_resid_mid"], None),
    ("add_range_negative_end", lambda m: [
        {"hook": "blocks.0.hook_attn_out", "op": "add", "vector": rnd(4, D(m)), "scale": 3.0,
         "positions": {"start": 2, "end": -3}}],
     ["blocks.0.hook_attn_out", "blocks.1.hook_resid_pre"], None),
    ("add_range_past_end", lambda m: [
        {"hook": "blocks.1.hook_mlp_out", "op": "add", "vector": rnd(5, D(m)), "positions": {"start": -4, "end": 40}}],
     ["blocks.1.hook_resid_post"], None),
    ("add_prompt_diff", lambda m: [
        {"hook": "blocks.1.hook_resid_pre", "op": "add", "scale": 4.0,
         "vector": {"from": "prompt_diff", "plus": "I love the sun", "minus": "I hate the sun"}}],
     ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"], None),
    ("add_prompt_diff_other_hook_and_position", lambda m: [
        {"hook": "blocks.1.hook_resid_mid", "op": "add", "scale": 2.0, "positions": [-1, -2],
         "vector": {"from": "prompt_diff", "plus": "Hello world! The dog", "minus": "Hello there, the fox",
                    "hook": "blocks.0.hook_resid_post", "position": 3}}],
     ["blocks.1.hook_resid_mid"], None),
    ("add_mean_diff", lambda m: [
        {"hook": "blocks.0.hook_resid_post", "op": "add", "scale": 3.0,
         "vector": {"from": "mean_diff", "positive": ["I love the sun", "Hello world! The dog"],
                    "negative": ["I hate the sun", "def add(a, b):", "return a + b"], "position": -2}}],
     ["blocks.1.hook_resid_post"], None),
    ("add_neurons_mlp_post", lambda m: [
        {"hook": "blocks.0.mlp.hook_post", "op": "add", "vector": rnd(6, DM(m), 3.0), "neurons": [1, 5, 7, 40]}],
     ["blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out"], None),
    ("scale_neurons_mlp_pre", lambda m: [
        {"hook": "blocks.1.mlp.hook_pre", "op": "scale", "factor": 4.0, "neurons": [0, 3, 9, 100],
         "positions": [-1, 2]}],
     ["blocks.1.mlp.hook_pre", "blocks.1.hook_mlp_out"], None),
    ("scale_heads_z", lambda m: [
        {"hook": "blocks.0.attn.hook_z", "op": "scale", "factor": -0.5, "heads": [1, 2]}],
     ["blocks.0.attn.hook_z", "blocks.0.hook_attn_out"], None),
    ("scale_pattern_head", lambda m: [
        {"hook": "blocks.1.attn.hook_pattern", "op": "scale", "factor": 2.0, "heads": [0], "positions": [-1, -2]}],
     ["blocks.1.attn.hook_pattern", "blocks.1.attn.hook_z"], None),
    ("scale_scores_head", lambda m: [
        {"hook": "blocks.0.attn.hook_attn_scores", "op": "scale", "factor": 0.25, "heads": [3]}],
     ["blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern"], None),
    ("zero_head_z", lambda m: [
        {"hook": "blocks.1.attn.hook_z", "op": "zero", "heads": [2]}],
     ["blocks.1.attn.hook_z", "blocks.1.hook_attn_out"], None),
    ("zero_resid_position", lambda m: [
        {"hook": "blocks.0.hook_resid_pre", "op": "zero", "positions": [1]}],
     ["blocks.0.hook_resid_post"], None),
    ("zero_scores_last_query", lambda m: [
        {"hook": "blocks.0.attn.hook_attn_scores", "op": "zero", "heads": [1], "positions": [-1]}],
     ["blocks.0.attn.hook_pattern"], None),
    ("zero_v_kv_head", lambda m: [
        {"hook": "blocks.0.attn.hook_v", "op": "zero", "heads": [1]}],
     ["blocks.0.attn.hook_v", "blocks.0.attn.hook_z"], None),
    ("add_k_kv_head", lambda m: [
        {"hook": "blocks.1.attn.hook_k", "op": "add", "vector": rnd(7, DH(m), 2.0), "heads": [0],
         "positions": [1, 3]}],  # the same vector on every key would shift all scores of a query equally
     ["blocks.1.attn.hook_k", "blocks.1.attn.hook_pattern"], None),
    ("add_q_head", lambda m: [
        {"hook": "blocks.0.attn.hook_q", "op": "add", "vector": rnd(8, DH(m), 2.0), "heads": [3], "positions": [-1]}],
     ["blocks.0.attn.hook_q", "blocks.0.attn.hook_attn_scores"], None),
    ("scale_rot_k_kv_head", lambda m: [
        {"hook": "blocks.1.attn.hook_rot_k", "op": "scale", "factor": 3.0, "heads": [1]}],
     ["blocks.1.attn.hook_rot_k", "blocks.1.attn.hook_attn_scores"], {"llama"}),
    ("add_rot_q_heads", lambda m: [
        {"hook": "blocks.0.attn.hook_rot_q", "op": "add", "vector": rnd(9, DH(m), 2.0), "heads": [0, 2],
         "positions": {"start": 1, "end": 5}}],
     ["blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_z"], {"llama"}),
    ("scale_pre_linear_neurons", lambda m: [
        {"hook": "blocks.0.mlp.hook_pre_linear", "op": "scale", "factor": 0.0, "neurons": [2, 4, 6]}],
     ["blocks.0.mlp.hook_post"], {"llama"}),
    ("add_per_head_vector_z", lambda m: [
        {"hook": "blocks.1.attn.hook_z", "op": "add", "vector": rnd(23, m.cfg["n_heads"] * DH(m)), "scale": 2.0,
         "heads": [1, 3]}],
     ["blocks.1.attn.hook_z", "blocks.1.hook_attn_out"], None),
    ("add_per_kv_head_vector_v", lambda m: [
        {"hook": "blocks.0.attn.hook_v", "op": "add", "vector": rnd(24, m.cfg["n_kv_heads"] * DH(m)),
         "positions": [0, 2, 4]}],
     ["blocks.0.attn.hook_v", "blocks.0.attn.hook_z"], None),
    ("mean_mlp_out_prompt", lambda m: [
        {"hook": "blocks.0.hook_mlp_out", "op": "mean"}],
     ["blocks.0.hook_mlp_out", "blocks.1.hook_resid_pre"], None),
    ("mean_head_z_last_position", lambda m: [
        {"hook": "blocks.1.attn.hook_z", "op": "mean", "heads": [0, 3], "positions": [-1]}],
     ["blocks.1.attn.hook_z"], None),
    ("mean_over_prompts_neurons", lambda m: [
        {"hook": "blocks.0.mlp.hook_post", "op": "mean", "over": OTHERS, "neurons": [0, 1, 2, 3, 50]}],
     ["blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out"], None),
    ("mean_over_prompts_resid", lambda m: [
        {"hook": "blocks.1.hook_resid_pre", "op": "mean", "over": OTHERS, "positions": {"start": 0, "end": 3}}],
     ["blocks.1.hook_resid_pre"], None),
    ("patch_resid_position", lambda m: [
        {"hook": "blocks.0.hook_resid_post", "op": "patch", "source": SOURCE, "positions": [3]}],
     ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], None),
    ("patch_head_z_all_positions", lambda m: [
        {"hook": "blocks.1.attn.hook_z", "op": "patch", "source": SOURCE, "heads": [1]}],
     ["blocks.1.attn.hook_z"], None),
    ("patch_pattern_head", lambda m: [
        {"hook": "blocks.0.attn.hook_pattern", "op": "patch", "source": SOURCE, "heads": [0]}],
     ["blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z"], None),
    ("patch_scores_head", lambda m: [
        {"hook": "blocks.0.attn.hook_attn_scores", "op": "patch", "source": SOURCE, "heads": [2], "positions": [-1]}],
     ["blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern"], None),
    ("patch_every_layer_mlp_post_neurons", lambda m: [
        {"hook": "blocks.*.mlp.hook_post", "op": "patch", "source": SOURCE, "neurons": [3, 4, 5]}],
     ["blocks.1.mlp.hook_post"], None),
    ("project_out_positions", lambda m: [
        {"hook": "blocks.0.hook_resid_mid", "op": "project_out", "direction": rnd(10, D(m)), "positions": [1, 2, -1]}],
     ["blocks.0.hook_resid_mid", "blocks.1.hook_resid_pre"], None),
    ("project_out_every_layer", lambda m: [
        {"hook": "blocks.*.hook_resid_post", "op": "project_out", "direction": rnd(11, D(m))}],
     ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], None),
    ("project_out_head_z", lambda m: [
        {"hook": "blocks.0.attn.hook_z", "op": "project_out", "direction": rnd(12, DH(m)), "heads": [1]}],
     ["blocks.0.attn.hook_z"], None),
    ("project_out_prompt_diff_direction", lambda m: [
        {"hook": "blocks.*.hook_resid_pre", "op": "project_out",
         "direction": {"from": "prompt_diff", "plus": "I love the sun", "minus": "I hate the sun",
                       "hook": "blocks.1.hook_resid_pre"}}],
     ["blocks.1.hook_resid_pre"], None),
    ("set_projection_value", lambda m: [
        {"hook": "blocks.1.hook_resid_pre", "op": "set_projection", "direction": rnd(13, D(m)), "value": 2.0}],
     ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"], None),
    ("set_projection_value_range", lambda m: [
        {"hook": "blocks.0.hook_resid_post", "op": "set_projection", "direction": rnd(14, D(m)), "value": -5.0,
         "positions": {"start": -5, "end": -1}}],
     ["blocks.0.hook_resid_post"], None),
    ("set_projection_cap", lambda m: [
        {"hook": "blocks.0.hook_resid_post", "op": "set_projection", "direction": rnd(15, D(m)), "cap": 0.1}],
     ["blocks.0.hook_resid_post", "blocks.1.hook_resid_mid"], None),
    ("set_projection_cap_mean_diff", lambda m: [
        {"hook": "blocks.1.hook_resid_mid", "op": "set_projection", "cap": -0.2,
         "direction": {"from": "mean_diff", "positive": ["I love the sun"], "negative": ["I hate the sun"]}}],
     ["blocks.1.hook_resid_mid"], None),
    ("set_projection_source_resid", lambda m: [
        {"hook": "blocks.1.hook_resid_pre", "op": "set_projection", "direction": rnd(50, D(m)), "source": SOURCE}],
     ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"], None),
    ("set_projection_source_head_z_heads_positions", lambda m: [
        {"hook": "blocks.0.attn.hook_z", "op": "set_projection", "direction": rnd(51, DH(m), 1.0), "source": SOURCE,
         "heads": [1, 2], "positions": [3, -1]}],
     ["blocks.0.attn.hook_z", "blocks.0.hook_attn_out"], None),
    ("set_projection_source_every_layer_range", lambda m: [
        {"hook": "blocks.*.hook_resid_mid", "op": "set_projection", "direction": rnd(52, D(m)), "source": SOURCE,
         "positions": {"start": 2, "end": -1}}],
     ["blocks.0.hook_resid_mid", "blocks.1.hook_resid_mid"], None),
    ("set_projection_source_mlp_post", lambda m: [
        {"hook": "blocks.0.mlp.hook_post", "op": "set_projection", "direction": rnd(53, DM(m)), "source": SOURCE}],
     ["blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out"], None),
    ("set_projection_source_v_kv_head", lambda m: [
        {"hook": "blocks.1.attn.hook_v", "op": "set_projection", "direction": rnd(54, DH(m)), "source": SOURCE,
         "heads": [0]}],
     ["blocks.1.attn.hook_v", "blocks.1.attn.hook_z"], None),
    ("set_projection_source_prompt_diff_after_add", lambda m: [
        {"hook": "blocks.0.hook_resid_post", "op": "add", "vector": rnd(55, D(m)), "scale": 2.0},
        {"hook": "blocks.0.hook_resid_post", "op": "set_projection", "source": SOURCE, "positions": "prompt",
         "direction": {"from": "prompt_diff", "plus": "I love the sun", "minus": "I hate the sun"}}],
     ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], None),
    ("knockout_scores", lambda m: [
        {"hook": "blocks.0.attn.hook_attn_scores", "op": "knockout", "positions": [-1], "keys": [1, 2],
         "heads": [0, 2]}],
     ["blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern"], None),
    ("knockout_scores_range_all_heads", lambda m: [
        {"hook": "blocks.1.attn.hook_attn_scores", "op": "knockout", "positions": {"start": 4, "end": 13},
         "keys": {"start": 1, "end": 4}}],
     ["blocks.1.attn.hook_pattern"], None),
    ("knockout_pattern", lambda m: [
        {"hook": "blocks.1.attn.hook_pattern", "op": "knockout", "positions": {"start": 2, "end": 13},
         "keys": [0], "heads": [1]}],
     ["blocks.1.attn.hook_pattern", "blocks.1.hook_attn_out"], None),
    ("embed_and_final_norm", lambda m: [
        {"hook": "hook_embed", "op": "add", "vector": rnd(16, D(m), 0.3), "positions": [0]},
        {"hook": "ln_final.hook_normalized", "op": "scale", "factor": 1.5, "positions": [-1]}],
     ["ln_final.hook_normalized"], None),
    ("ln_normalized", lambda m: [
        {"hook": "blocks.1.ln1.hook_normalized", "op": "add", "vector": rnd(17, D(m)), "positions": [2]},
        {"hook": "blocks.0.ln2.hook_normalized", "op": "zero", "neurons": [0, 1, 2, 3]}],
     ["blocks.1.ln1.hook_normalized", "blocks.1.hook_attn_out"], None),
    ("pos_embed_zero", lambda m: [
        {"hook": "hook_pos_embed", "op": "zero", "positions": [2, 3]}],
     ["blocks.0.hook_resid_pre"], {"gpt2"}),
    ("disabled_item_is_skipped", lambda m: [
        {"hook": "blocks.0.hook_resid_pre", "op": "zero", "enabled": False},
        {"hook": "blocks.1.hook_resid_pre", "op": "add", "vector": rnd(18, D(m)), "positions": [-1]}],
     ["blocks.1.hook_resid_post"], None),
    ("compose_same_hook", lambda m: [
        {"hook": "blocks.1.hook_resid_pre", "op": "add", "vector": rnd(19, D(m)), "scale": 2.0},
        {"hook": "blocks.1.hook_resid_pre", "op": "scale", "factor": 0.5, "positions": [-1, -2, -3]},
        {"hook": "blocks.1.hook_resid_pre", "op": "set_projection", "direction": rnd(20, D(m)), "cap": 0.0},
        {"hook": "blocks.1.hook_resid_pre", "op": "mean", "positions": [0]}],
     ["blocks.1.hook_resid_pre"], None),
    ("compose_across_hooks", lambda m: [
        {"hook": "blocks.0.attn.hook_z", "op": "zero", "heads": [0]},
        {"hook": "blocks.0.hook_resid_post", "op": "patch", "source": SOURCE, "positions": [5, 6]},
        {"hook": "blocks.*.hook_resid_mid", "op": "project_out", "direction": rnd(21, D(m))},
        {"hook": "blocks.1.attn.hook_pattern", "op": "knockout", "positions": "all", "keys": [2]},
        {"hook": "blocks.1.mlp.hook_post", "op": "mean", "neurons": [7, 8]},
        {"hook": "blocks.1.hook_resid_post", "op": "add", "vector": rnd(22, D(m)), "positions": [-1]}],
     ["blocks.1.hook_resid_mid", "blocks.1.hook_resid_post"], None),
]


def _case_params():
    out = []
    for name in TINY_MODELS:
        arch = "gpt2" if name.startswith("gpt2") else "llama"
        for cid, build, reads, archs in CASES:
            if archs is None or arch in archs:
                out.append(pytest.param(name, build, reads, id=f"{name}-{cid}"))
    return out


@pytest.mark.parametrize("name,build,reads", _case_params())
def test_tiny_case(scalpel, tiny, ref, tmp_path, name, build, reads):
    path = tiny[name]["path"]
    m = ref(path)
    doc = {"version": 1, "interventions": build(m)}
    got, plain, r = compare_doc(scalpel, tmp_path, path, m, doc, PROMPT, reads, TINY_TOL)
    # the case must actually change something
    assert float(np.abs(got[-1] - plain).max()) > 1e-3, "the intervention did not change the logits: weak test case"
    # the report names each enabled intervention, the hooks it touched, and that it was applied
    applied = {a["index"]: a for a in r["interventions"]["applied"]}
    for i, iv in enumerate(doc["interventions"]):
        if not iv.get("enabled", True):
            assert i not in applied or applied[i]["applications"] == 0, f"disabled item {i} applied: {applied[i]}"
            continue
        assert i in applied, f"intervention {i} missing from the report {r['interventions']}"
        assert sorted(applied[i]["hooks"]) == sorted(expand(m, iv["hook"])), applied[i]
        assert applied[i]["op"] == iv["op"]
        assert applied[i]["applications"] >= 1, applied[i]


def test_order_matters(scalpel, tiny, ref, tmp_path):
    """add-then-scale differs from scale-then-add; each matches the reference in its own order."""
    path = tiny["llama_q8_0_untied"]["path"]
    m = ref(path)
    a = {"hook": "blocks.1.hook_resid_pre", "op": "add", "vector": rnd(30, D(m)), "scale": 3.0}
    s = {"hook": "blocks.1.hook_resid_pre", "op": "scale", "factor": -2.0}
    g1, _, _ = compare_doc(scalpel, tmp_path, path, m, {"version": 1, "interventions": [a, s]}, PROMPT, [], TINY_TOL)
    g2, _, _ = compare_doc(scalpel, tmp_path, path, m, {"version": 1, "interventions": [s, a]}, PROMPT, [], TINY_TOL)
    assert np.abs(g1 - g2).max() > 0.1


def test_empty_document_is_plain_run(scalpel, tiny, ref, tmp_path):
    path = tiny["gpt2"]["path"]
    m = ref(path)
    ids = m.tokenizer.encode(PROMPT)
    got, _ = cli_logits(scalpel, path, PROMPT, write_doc(tmp_path, {"version": 1, "interventions": []}))
    want, _ = m.forward(ids, want_hooks=False)
    check_close("logits", got, want, TINY_TOL)


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("op", [{"op": "zero"}, {"op": "scale", "factor": 0.0}, {"op": "patch", "source": SOURCE}],
                         ids=["zero", "scale0", "patch"])
def test_scores_every_query_stays_finite(scalpel, tiny, ref, tmp_path, name, op):
    """Zeroing, scaling by 0 or patching attention scores over every query must not produce NaN.

    hook_attn_scores holds -inf at the causal mask. TransformerLens applies the
    mask before the hook, so writing 0 there unmasks future keys; the other
    sensible reading keeps the mask (what `patch` should do: the source has -inf
    at the same places). Either is finite; NaN (-inf * 0) is not.
    """
    path = tiny[name]["path"]
    doc = {"version": 1, "interventions": [{"hook": "blocks.0.attn.hook_attn_scores", "heads": [1], **op}]}
    docfile = write_doc(tmp_path, doc)
    got, _ = cli_logits(scalpel, path, PROMPT, docfile)
    n_bad = int((~np.isfinite(got)).sum())
    assert n_bad == 0, (
        f"{op['op']} on every query of hook_attn_scores gives {n_bad} non-finite logits of {got.size}; "
        f"repro: scalpel logits --model {path} --prompt {PROMPT!r} --full --json --interventions {docfile}  "
        f"doc: {json.dumps(doc)}")
    if op["op"] == "patch":  # the mask is the same in both runs: the reference's answer is well defined
        m = ref(path)
        want, _ = ref_run(m, doc, m.tokenizer.encode(PROMPT))
        check_close("logits", got, want, TINY_TOL)


def test_position_zero_vector_warns(scalpel, tiny, tmp_path):
    path = tiny["gpt2"]["path"]
    doc = {"version": 1, "interventions": [
        {"hook": "blocks.1.hook_resid_pre", "op": "add",
         "vector": {"from": "prompt_diff", "plus": "I love the sun", "minus": "I hate the sun", "position": 0}}]}
    p = scalpel.run("logits", "--model", path, "--prompt", PROMPT, "--json", "--interventions", write_doc(tmp_path, doc))
    assert p.returncode == 0, p.stderr
    assert "sink" in p.stderr.lower() or "position 0" in p.stderr.lower(), p.stderr


# ---------------------------------------------------------------- 1-D subspace patching
@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("hook,pos", [("blocks.0.hook_resid_post", 3), ("blocks.1.hook_resid_mid", -1)])
def test_subspace_patch_along_the_difference_is_a_full_patch(scalpel, tiny, ref, tmp_path, name, hook, pos):
    """Along d = h_src - h (read at the same hook and position), setting the component to the source's
    moves h by <h_src - h, u> u = h_src - h: the same as `patch` at that position."""
    path = tiny[name]["path"]
    m = ref(path)
    direction = {"from": "prompt_diff", "plus": SOURCE, "minus": PROMPT, "position": pos}
    sub = {"version": 1, "interventions": [
        {"hook": hook, "op": "set_projection", "direction": direction, "source": SOURCE, "positions": [pos]}]}
    full = {"version": 1, "interventions": [{"hook": hook, "op": "patch", "source": SOURCE, "positions": [pos]}]}
    g_sub, plain, _ = compare_doc(scalpel, tmp_path, path, m, sub, PROMPT, [hook], TINY_TOL)
    g_full, _ = cli_logits(scalpel, path, PROMPT, write_doc(tmp_path, full, "full.json"))
    check_close("subspace patch along h_src - h vs full patch", g_sub, g_full, TINY_TOL)
    assert float(np.abs(g_full[-1] - plain).max()) > 1e-3, "the patch changes nothing: weak test case"


def test_subspace_patch_source_equal_to_prompt_changes_nothing(scalpel, tiny, ref, tmp_path):
    path = tiny["llama_q8_0_untied"]["path"]
    m = ref(path)
    doc = {"version": 1, "interventions": [
        {"hook": "blocks.*.attn.hook_z", "op": "set_projection", "direction": rnd(60, DH(m)), "source": PROMPT}]}
    got, _ = cli_logits(scalpel, path, PROMPT, write_doc(tmp_path, doc))
    want, _ = m.forward(m.tokenizer.encode(PROMPT), want_hooks=False)
    check_close("set_projection from the prompt itself", got, want, TINY_TOL)


def test_subspace_patch_source_length_names_both_counts(scalpel, tiny, ref, tmp_path):
    path = tiny["gpt2"]["path"]
    m = ref(path)
    short = "The dog"
    n_src, n_prompt = len(m.tokenizer.encode(short)), len(m.tokenizer.encode(PROMPT))
    assert n_src != n_prompt
    doc = one({"hook": "blocks.0.hook_resid_pre", "op": "set_projection", "direction": [1.0] * D(m), "source": short})
    expect_doc_error(scalpel, tmp_path, path, doc, ["intervention 1", "source", f"{n_src} tokens", f"has {n_prompt}"],
                     ["length", "tokens"])


# ---------------------------------------------------------------- generation
def stop_ids(m):
    types = m.tokenizer.token_types
    s = {i for i, t in enumerate(types) if t == bpe.TOKEN_CONTROL}
    if m.cfg.get("eos_id") is not None:
        s.add(m.cfg["eos_id"])
    return s


def check_generation(scalpel, tmp_path, path, m, doc, prompt, n_new, tie=1e-3):
    ids = m.tokenizer.encode(prompt)
    docfile = write_doc(tmp_path, doc)
    r = scalpel.json("generate", "--model", path, "--prompt", prompt, "--max-new-tokens", n_new, "--temperature", 0,
                     "--interventions", docfile)
    got = r["ids"]
    iv = RefInterventions(m, doc, len(ids))
    want, margins = ref_model.greedy_hooked(m, ids, n_new, iv.fn, stop_ids=stop_ids(m))
    k = next((i for i, g in enumerate(margins) if g < tie), len(margins))  # compare up to the first near-tie
    n = min(len(got), k)
    assert got[:n] == want[:n], (
        f"steered greedy ids differ: got {got} want {want} (margins {np.round(margins, 4).tolist()})\n"
        f"repro: scalpel generate --model {path} --prompt {prompt!r} --max-new-tokens {n_new} --temperature 0 "
        f"--json --interventions {docfile}\ndoc: {json.dumps(doc)[:400]}")
    if len(got) < len(want) and len(got) <= k:
        assert got and got[-1] in stop_ids(m), f"stopped early at {got}"
    return got, want


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("positions", ["all", "generated", "prompt", [-1]])
def test_tiny_steered_generation(scalpel, tiny, ref, tmp_path, name, positions):
    path = tiny[name]["path"]
    m = ref(path)
    prompt = "Hello world! The dog"
    doc = {"version": 1, "interventions": [
        {"hook": "blocks.0.hook_resid_post", "op": "add", "scale": 6.0, "positions": positions,
         "vector": {"from": "prompt_diff", "plus": "I love the sun", "minus": "I hate the sun"}}]}
    got, want = check_generation(scalpel, tmp_path, path, m, doc, prompt, 10)
    plain, _ = m.greedy(m.tokenizer.encode(prompt), 10)
    if positions in ("all", "generated"):
        assert want != plain, "steering does not change the greedy output: weak test case"


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_generation_composed(scalpel, tiny, ref, tmp_path, name):
    """Several ops at once while generating: project_out everywhere, a head zeroed, a knockout, literal add."""
    path = tiny[name]["path"]
    m = ref(path)
    doc = {"version": 1, "interventions": [
        {"hook": "blocks.*.hook_resid_mid", "op": "project_out", "direction": rnd(40, D(m))},
        {"hook": "blocks.1.attn.hook_z", "op": "zero", "heads": [3]},
        {"hook": "blocks.0.attn.hook_attn_scores", "op": "knockout", "positions": "generated", "keys": [0, 1]},
        {"hook": "blocks.1.hook_resid_pre", "op": "add", "vector": rnd(41, D(m)), "scale": 2.0, "positions": "all"}]}
    check_generation(scalpel, tmp_path, path, m, doc, "I love the sun", 10)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_generation_subspace_patch(scalpel, tiny, ref, tmp_path, name):
    """set_projection from a source prompt while generating: generated positions have no source value."""
    path = tiny[name]["path"]
    m = ref(path)
    doc = {"version": 1, "interventions": [
        {"hook": "blocks.*.hook_resid_post", "op": "set_projection", "direction": rnd(61, D(m)), "source": SOURCE,
         "positions": "all"},
        {"hook": "blocks.0.attn.hook_z", "op": "set_projection", "direction": rnd(62, DH(m)), "source": SOURCE,
         "heads": [0, 3]}]}
    check_generation(scalpel, tmp_path, path, m, doc, PROMPT, 8)


# ---------------------------------------------------------------- SmolLM2
SMOL_PROMPT = "When Mary and John went to the store, John gave a drink to"
SMOL_CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


@requires_smol
def test_smollm_actadd_steering(scalpel, smol, smol_ref, tmp_path):
    doc = {"version": 1, "interventions": [
        {"hook": "blocks.6.hook_resid_pre", "op": "add", "scale": 4.0, "positions": "all",
         "vector": {"from": "prompt_diff", "plus": "Love", "minus": "Hate", "position": -1}}]}
    got, plain, _ = compare_doc(scalpel, tmp_path, smol, smol_ref, doc, SMOL_PROMPT, ["blocks.20.hook_resid_post"],
                                SMOL_TOL, hook_rtol=2e-5)
    assert np.abs(got[-1] - plain).max() > 0.5


@requires_smol
def test_smollm_zero_head_and_mean_mlp(scalpel, smol, smol_ref, tmp_path):
    """Ablation: zero one head's z (a GQA model: 9 heads, 3 kv heads) and mean-ablate an MLP."""
    doc = {"version": 1, "interventions": [
        {"hook": "blocks.9.attn.hook_z", "op": "zero", "heads": [4]},
        {"hook": "blocks.12.hook_mlp_out", "op": "mean"}]}
    got, plain, _ = compare_doc(scalpel, tmp_path, smol, smol_ref, doc, SMOL_PROMPT,
                                ["blocks.9.hook_attn_out", "blocks.12.hook_resid_post"], SMOL_TOL, hook_rtol=2e-5)
    assert np.abs(got[-1] - plain).max() > 0.05


@requires_smol
def test_smollm_directional_ablation(scalpel, smol, smol_ref, tmp_path):
    """Arditi et al.: remove a direction from every residual stream activation (pre, mid, post) at every layer."""
    direction = {"from": "prompt_diff", "plus": "Sure, here is", "minus": "I cannot help", "hook": "blocks.14.hook_resid_pre"}
    doc = {"version": 1, "interventions": [
        {"hook": f"blocks.*.{h}", "op": "project_out", "direction": direction}
        for h in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")]}
    got, plain, r = compare_doc(scalpel, tmp_path, smol, smol_ref, doc, SMOL_PROMPT, ["blocks.29.hook_resid_post"],
                                SMOL_TOL, hook_rtol=2e-5)
    assert np.abs(got[-1] - plain).max() > 0.05
    assert sum(a["applications"] for a in r["interventions"]["applied"]) == 90


@requires_smol
def test_smollm_subspace_patch_logit_diff_direction(scalpel, smol, smol_ref, tmp_path):
    """1-D subspace patching along the logit-difference direction d = W_U[Mary] - W_U[John].

    At ln_final.hook_normalized the logit difference is <h, d>, so setting the component along d
    to the clean run's moves the corrupted run's logit difference exactly to the clean one's
    (normalised metric 1) and leaves every direction orthogonal to d alone. At a middle layer the
    same patch moves the metric by what the reference says."""
    m = smol_ref
    tok = m.tokenizer
    a, w = tok.encode(" Mary")[0], tok.encode(" John")[0]
    assert len(tok.encode(SMOL_PROMPT)) == len(tok.encode(SMOL_CORRUPT))
    wu = m.w["lm_head"]
    d = [float(x) for x in np.asarray(wu[a], np.float64) - np.asarray(wu[w], np.float64)]
    ld = lambda x: float(x[-1][a] - x[-1][w])  # noqa: E731
    clean, _ = m.forward(tok.encode(SMOL_PROMPT), want_hooks=False)
    corrupt, _ = m.forward(tok.encode(SMOL_CORRUPT), want_hooks=False)
    assert abs(ld(clean) - ld(corrupt)) > 0.5, "the prompt pair does not move the logit difference: weak test"
    doc = {"version": 1, "interventions": [
        {"hook": "ln_final.hook_normalized", "op": "set_projection", "direction": d, "source": SMOL_PROMPT,
         "positions": [-1]}]}
    got, plain, _ = compare_doc(scalpel, tmp_path, smol, m, doc, SMOL_CORRUPT, [], SMOL_TOL)
    print(f"LD clean {ld(clean):.4f} corrupt {ld(corrupt):.4f} subspace-patched {ld(got):.4f}")
    assert abs(ld(got) - ld(clean)) <= SMOL_TOL, (ld(got), ld(clean))
    doc["interventions"][0]["hook"] = "blocks.20.hook_resid_post"
    got20, _, _ = compare_doc(scalpel, tmp_path, smol, m, doc, SMOL_CORRUPT, [], SMOL_TOL)
    norm = (ld(got20) - ld(corrupt)) / (ld(clean) - ld(corrupt))
    print(f"blocks.20.hook_resid_post: normalised logit difference {norm:.4f}")
    assert abs(ld(got20) - ld(corrupt)) > 1e-2, "the middle-layer subspace patch changes nothing"


@requires_smol
def test_smollm_subspace_patching_example(scalpel, smol, smol_ref, tmp_path):
    """docs/examples/subspace_patching.json as shipped, on the corrupted IOI prompt."""
    import os
    from conftest import REPO
    with open(os.path.join(REPO, "docs", "examples", "subspace_patching.json")) as fh:
        doc = json.load(fh)
    assert doc["interventions"][0]["source"] == SMOL_PROMPT
    got, plain, _ = compare_doc(scalpel, tmp_path, smol, smol_ref, doc, SMOL_CORRUPT, [], SMOL_TOL)
    assert np.abs(got[-1] - plain).max() > 0.05


@requires_smol
def test_smollm_steered_generation(scalpel, smol, smol_ref, tmp_path):
    doc = {"version": 1, "interventions": [
        {"hook": "blocks.8.hook_resid_pre", "op": "add", "scale": 6.0, "positions": "generated",
         "vector": {"from": "prompt_diff", "plus": "I love weddings", "minus": "I hate weddings", "position": -1}}]}
    check_generation(scalpel, tmp_path, smol, smol_ref, doc, "I went up to my friend and said", 5)


# ---------------------------------------------------------------- bad input
def expect_doc_error(scalpel, tmp_path, path, doc_text, where, what, cmd="logits"):
    p = tmp_path / "bad.json"
    p.write_text(doc_text if isinstance(doc_text, str) else json.dumps(doc_text))
    args = [cmd, "--model", path, "--prompt", PROMPT, "--interventions", str(p), "--json"]
    if cmd == "activations":
        args += ["--hook", "blocks.0.hook_resid_pre"]
    if cmd == "generate":
        args += ["--max-new-tokens", 2]
    r = scalpel.run(*args, timeout=60)
    shown = f"repro: {repro(r.cmd)}\ndoc: {p.read_text()[:300]}\nstderr: {r.stderr.strip()[:600]}"
    assert r.returncode != 0, f"exit 0 on a bad document\n{shown}"
    assert "panicked" not in r.stderr, f"panic\n{shown}"
    low = r.stderr.lower()
    for w in where:
        assert w.lower() in low, f"stderr does not name {w!r}\n{shown}"
    assert any(w.lower() in low for w in what), f"stderr names none of {what}\n{shown}"


def one(item):
    return {"version": 1, "interventions": [{"hook": "blocks.0.hook_resid_pre", "op": "zero"}, item]}


BAD = [
    ("unknown_hook", one({"hook": "blocks.0.hook_nonsense", "op": "zero"}), ["intervention 1", "hook"], ["nonsense", "unknown"]),
    ("unknown_global_hook", one({"hook": "hook_everything", "op": "zero"}), ["intervention 1", "hook"], ["hook_everything", "unknown"]),
    ("layer_out_of_range", one({"hook": "blocks.7.hook_resid_post", "op": "zero"}), ["intervention 1", "hook"], ["range", "layer", "7"]),
    ("star_not_layer", one({"hook": "blocks.0.*", "op": "zero"}), ["intervention 1", "hook"], ["*"]),
    ("head_out_of_range", one({"hook": "blocks.0.attn.hook_z", "op": "zero", "heads": [4]}), ["intervention 1", "heads"], ["range", "4"]),
    ("heads_on_resid", one({"hook": "blocks.0.hook_resid_pre", "op": "zero", "heads": [0]}), ["intervention 1", "heads"], ["no heads", "head"]),
    ("neuron_out_of_range", one({"hook": "blocks.0.mlp.hook_post", "op": "zero", "neurons": [100000]}), ["intervention 1", "neurons"], ["range", "100000"]),
    ("vector_wrong_size", one({"hook": "blocks.0.hook_resid_pre", "op": "add", "vector": [1.0, 2.0, 3.0]}), ["intervention 1", "vector"], ["3 numbers", "size", "length", "64"]),
    ("head_vector_wrong_size", one({"hook": "blocks.0.attn.hook_z", "op": "add", "vector": [0.0] * 17, "heads": [0]}), ["intervention 1", "vector"], ["17 numbers", "16"]),
    ("direction_wrong_size", one({"hook": "blocks.0.hook_resid_pre", "op": "project_out", "direction": [1.0] * 65}), ["intervention 1", "direction"], ["65"]),
    ("direction_zero", one({"hook": "blocks.0.hook_resid_pre", "op": "project_out", "direction": [0.0] * 64}), ["intervention 1", "direction"], ["zero", "norm"]),
    # JSON has no NaN / Infinity; serde_json rejects them (and 1e999) as a syntax error with a line and
    # column. The contract still asks for the intervention's index and field, and what is wrong.
    ("nan_literal", '{"version": 1, "interventions": [{"hook": "blocks.0.hook_resid_pre", "op": "scale", "factor": NaN}]}', ["intervention 0", "factor"], ["nan", "finite"]),
    ("infinity_literal", '{"version": 1, "interventions": [{"hook": "blocks.0.hook_resid_pre", "op": "add", "vector": [Infinity], "scale": 1}]}', ["intervention 0", "vector"], ["infinity", "finite"]),
    ("huge_number_1e999", '{"version": 1, "interventions": [{"hook": "blocks.0.hook_resid_pre", "op": "scale", "factor": 1e999}]}', ["intervention 0", "factor"], ["range", "1e999", "finite"]),
    ("f32_overflow_in_vector", '{"version": 1, "interventions": [{"hook": "blocks.0.hook_resid_pre", "op": "add", "vector": [' + ",".join(["0.5"] * 10 + ["1e39"] + ["0.5"] * 53) + ']}]}', ["intervention 0", "vector"], ["finite", "index 10", "1e39", "range"]),
    ("f32_overflow_in_scale", one({"hook": "blocks.0.hook_resid_pre", "op": "add", "vector": [0.5] * 64, "scale": 1e39}), ["intervention 1", "scale"], ["finite", "range"]),
    ("f32_overflow_in_factor", one({"hook": "blocks.0.hook_resid_pre", "op": "scale", "factor": -1e39}), ["intervention 1", "factor"], ["finite", "range"]),
    ("f32_overflow_in_value", one({"hook": "blocks.0.hook_resid_pre", "op": "set_projection", "direction": [1.0] * 64, "value": 1e40}), ["intervention 1", "value"], ["finite", "range"]),
    ("empty_over", one({"hook": "blocks.0.hook_mlp_out", "op": "mean", "over": []}), ["intervention 1", "over"], ["empty"]),
    ("empty_positive_set", one({"hook": "blocks.0.hook_resid_pre", "op": "add", "vector": {"from": "mean_diff", "positive": [], "negative": ["I hate the sun"]}}), ["intervention 1", "positive"], ["empty", "at least one"]),
    ("over_prompt_tokenizes_to_nothing", one({"hook": "blocks.0.hook_mlp_out", "op": "mean", "over": ["I love", ""]}), ["intervention 1", "over"], ["nothing", "empty"]),
    ("prompt_diff_plus_tokenizes_to_nothing", one({"hook": "blocks.0.hook_resid_pre", "op": "add", "vector": {"from": "prompt_diff", "plus": "", "minus": "I hate"}}), ["intervention 1", "plus"], ["nothing", "empty"]),
    ("mean_diff_negative_tokenizes_to_nothing", one({"hook": "blocks.0.hook_resid_pre", "op": "add", "vector": {"from": "mean_diff", "positive": ["a b"], "negative": [""]}}), ["intervention 1", "negative"], ["nothing", "empty"]),
    ("vector_position_out_of_range", one({"hook": "blocks.0.hook_resid_pre", "op": "add", "vector": {"from": "prompt_diff", "plus": "I love", "minus": "I hate", "position": 40}}), ["intervention 1", "position"], ["past the end", "range"]),
    ("unknown_version", {"version": 2, "interventions": []}, ["version"], ["2", "not supported", "unknown"]),
    ("missing_version", {"interventions": []}, ["version"], ["missing"]),
    ("unknown_top_level_field", {"version": 1, "interventions": [], "extra": 1}, ["extra"], ["unknown"]),
    ("unknown_field", one({"hook": "blocks.0.hook_resid_pre", "op": "zero", "factor": 2.0}), ["intervention 1", "factor"], ["unknown"]),
    ("misspelled_positions", one({"hook": "blocks.0.hook_resid_pre", "op": "zero", "position": [1]}), ["intervention 1", "position"], ["unknown"]),
    ("unknown_field_in_vector_source", one({"hook": "blocks.0.hook_resid_pre", "op": "add", "vector": {"from": "prompt_diff", "plus": "a", "minus": "b", "layer": 3}}), ["intervention 1", "layer"], ["unknown"]),
    ("unknown_field_in_range", one({"hook": "blocks.0.hook_resid_pre", "op": "zero", "positions": {"start": 0, "end": 2, "step": 2}}), ["intervention 1", "step"], ["unknown"]),
    ("unknown_named_positions", one({"hook": "blocks.0.hook_resid_pre", "op": "zero", "positions": "last"}), ["intervention 1", "positions"], ["'last'", "all, prompt", "'all'"]),
    ("unknown_op", one({"hook": "blocks.0.hook_resid_pre", "op": "ablate"}), ["intervention 1", "op"], ["ablate", "unknown"]),
    ("missing_op_field", one({"hook": "blocks.0.hook_resid_pre", "op": "scale"}), ["intervention 1", "factor"], ["missing"]),
    ("set_projection_value_and_cap", one({"hook": "blocks.0.hook_resid_pre", "op": "set_projection", "direction": [1.0] * 64, "value": 1, "cap": 2}), ["intervention 1"], ["value", "cap"]),
    ("set_projection_neither", one({"hook": "blocks.0.hook_resid_pre", "op": "set_projection", "direction": [1.0] * 64}), ["intervention 1"], ["value", "cap"]),
    ("position_before_start", one({"hook": "blocks.0.hook_resid_pre", "op": "zero", "positions": [-20]}), ["intervention 1", "positions"], ["before the start", "-20"]),
    ("empty_positions_list", one({"hook": "blocks.0.hook_resid_pre", "op": "zero", "positions": []}), ["intervention 1", "positions"], ["empty"]),
    ("empty_range", one({"hook": "blocks.0.hook_resid_pre", "op": "zero", "positions": {"start": 3, "end": 3}}), ["intervention 1", "positions"], ["empty"]),
    ("knockout_on_resid", one({"hook": "blocks.0.hook_resid_pre", "op": "knockout", "keys": [0]}), ["intervention 1"], ["attention", "knockout"]),
    ("mean_on_scores", one({"hook": "blocks.0.attn.hook_attn_scores", "op": "mean"}), ["intervention 1"], ["scores", "pattern", "does not apply"]),
    ("neurons_with_project_out", one({"hook": "blocks.0.mlp.hook_post", "op": "project_out", "direction": [1.0] * 256, "neurons": [0]}), ["intervention 1", "neurons"], ["project_out", "direction"]),
    ("set_projection_value_and_source", one({"hook": "blocks.0.hook_resid_pre", "op": "set_projection", "direction": [1.0] * 64, "value": 1, "source": SOURCE}), ["intervention 1", "source", "value"], ["exactly one"]),
    ("set_projection_cap_and_source", one({"hook": "blocks.0.hook_resid_pre", "op": "set_projection", "direction": [1.0] * 64, "cap": 1, "source": SOURCE}), ["intervention 1", "source", "cap"], ["exactly one"]),
    ("set_projection_source_not_text", one({"hook": "blocks.0.hook_resid_pre", "op": "set_projection", "direction": [1.0] * 64, "source": 3}), ["intervention 1", "source"], ["string", "prompt"]),
    ("set_projection_source_empty", one({"hook": "blocks.0.hook_resid_pre", "op": "set_projection", "direction": [1.0] * 64, "source": ""}), ["intervention 1", "source"], ["0 tokens"]),
    ("set_projection_source_on_scores", one({"hook": "blocks.0.attn.hook_attn_scores", "op": "set_projection", "direction": [1.0] * 16, "source": SOURCE}), ["intervention 1"], ["takes no vectors", "does not apply"]),
    ("set_projection_source_head_out_of_range", one({"hook": "blocks.0.attn.hook_z", "op": "set_projection", "direction": [1.0] * 16, "source": SOURCE, "heads": [4]}), ["intervention 1", "heads"], ["range"]),
    ("patch_source_other_length", one({"hook": "blocks.0.hook_resid_pre", "op": "patch", "source": "The dog"}), ["intervention 1", "source"], ["tokens", "length"]),
    ("every_layer_vector_needs_hook", one({"hook": "blocks.*.hook_resid_pre", "op": "add", "vector": {"from": "prompt_diff", "plus": "a", "minus": "b"}}), ["intervention 1", "vector.hook"], ["required", "every layer"]),
    ("not_json", "{version: 1", [], ["json"]),
    ("not_an_object", "[1, 2]", [], ["object"]),
    ("item_not_object", {"version": 1, "interventions": [3]}, ["intervention 0"], ["object"]),
]


@pytest.mark.parametrize("doc,where,what", [pytest.param(d, w, x, id=i) for i, d, w, x in BAD])
def test_bad_document(scalpel, tiny, tmp_path, doc, where, what):
    expect_doc_error(scalpel, tmp_path, tiny["gpt2"]["path"], doc, where, what)


@pytest.mark.parametrize("cmd", ["logits", "activations", "generate"])
def test_bad_document_kv_head(scalpel, tiny, tmp_path, cmd):
    """hook_k has the kv-head count (2 on the tiny llama, 4 query heads)."""
    expect_doc_error(scalpel, tmp_path, tiny["llama_q8_0_untied"]["path"],
                     one({"hook": "blocks.0.attn.hook_k", "op": "zero", "heads": [2]}), ["intervention 1", "heads"],
                     ["range"], cmd=cmd)


def test_missing_document_file(scalpel, tiny, tmp_path):
    p = scalpel.run("logits", "--model", tiny["gpt2"]["path"], "--prompt", PROMPT, "--json",
                    "--interventions", str(tmp_path / "nope.json"))
    assert p.returncode != 0 and "nope.json" in p.stderr and "panicked" not in p.stderr, p.stderr
