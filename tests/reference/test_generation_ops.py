"""Generation-time ops, weight edits and attribution patching against independent NumPy references.

Semantics, from docs/interventions.md, implemented here independently of
crates/interventions/src/{apply,run,patching}.rs (n = prompt length, positions
absolute, greedy decoding by full recomputation in float64):

low_rank   the block's weight (q k v o gate up down; [out, in]) is replaced by its
           rank-k SVD truncation (numpy.linalg.svd) for the run; `blocks.*` = every
           layer. rank > full rank and a matrix the model lacks are errors.
kv_add     scale*v is added to the cached keys (`attn.hook_rot_k`: post-RoPE, the
           vector in the head-dim order hooks show, i.e. Hugging Face order even for
           GGUF) or values (`attn.hook_v`) of the selected prompt positions and KV
           heads (one d_head vector for every selected head, or one block per KV
           head). The prefix's entries are edited before the last prompt token runs,
           that token's own entry right after its pass. So a query at position q
           reads key/value j edited iff j is selected, q >= n-1 and j < q. The
           reference applies that inside attention: scores[h, q, j] +=
           rot_q[q, h].dk / sqrt(d_head), z[q, h] += sum_j pattern[h, q, j] dv.
insert     before generated token number `at_step` (counting every generated
           token, inserted ones too), or right after each sampled token that
           makes the generated ids end with the ids of `after` (at most `times`),
           the ids of `text` are appended; they count as generated tokens.
conditional  each pass (the prompt, then one token) reads the newest token's
           projection on the unit direction at the monitor hook; `then` applies to
           that pass's positions at the monitor hook (after the reading) and at later
           hooks while the reading is above (below) the threshold. So prompt
           positions are steered iff the last prompt token's reading crosses, a
           generated position iff its own reading crosses. With backtrack N, the
           first pass whose reading crosses (at position f) sends the sequence back
           to length max(f + 1 - N, n); the token before that point is re-run and
           every later position is steered ("then always on").
attribution  estimate[l][c] = metric(base) + d/de metric(base + e * (source - base)
           at cell (l, c)) at e = 0, the directional derivative taken by central
           finite differences in float64 (exactly the first-order term g . delta).

Tolerances: 1e-4 on tiny models, 1e-3 on SmolLM2. Generated ids are compared up
to the first near-tie (top-2 logit margin or |projection - threshold| < 1e-3).
"""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

import ref_model
from conftest import close_report, hook_array, repro, requires_smol

TINY_TOL = 1e-4
SMOL_TOL = 1e-3
TIE = 1e-3
GPT2 = "gpt2"
LLAMA = "llama_q8_0_untied"
TINY = [GPT2, LLAMA]
PROMPT = "The dog sleeps in the sun."
GEN_PROMPT = "Hello world! The dog"
MATRICES = ["q", "k", "v", "o", "gate", "up", "down"]
_doc_counter = itertools.count()


# ---------------------------------------------------------------- small helpers
def f32(v):
    """Numbers as the engine holds them (documents are read into f32)."""
    return np.asarray(np.asarray(v, dtype=np.float32), dtype=np.float64)


def rnd(seed, n, std=1.0):
    """A random vector whose numbers are exact in f32 (so the JSON means the same to both sides)."""
    return [float(x) for x in f32(np.random.default_rng(seed).standard_normal(n) * std)]


def write_doc(tmp_path, doc):
    p = tmp_path / f"doc{next(_doc_counter)}.json"
    p.write_text(json.dumps(doc))
    return str(p)


def check_close(what, got, want, tol, cmd="", rtol=0.0):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} want {want.shape} {cmd}"
    assert not np.isnan(got).any(), f"{what}: NaN in the CLI's output {cmd}"
    err, same_nonfinite = close_report(got, want)
    assert same_nonfinite, f"{what}: non-finite entries differ from the reference {cmd}"
    fin = np.isfinite(want)
    bound = tol + rtol * (float(np.abs(want[fin]).max()) if fin.any() else 0.0)
    print(f"{what}: max abs err {err:.3g} (bound {bound:.3g})")
    assert err <= bound, f"{what}: max abs err {err:.3g} > {bound:.3g} {cmd}"
    return err


def cli_logits(scalpel, path, prompt, docfile=None):
    args = ["logits", "--model", path, "--prompt", prompt, "--full", "--top-k", 3]
    if docfile:
        args += ["--interventions", docfile]
    r = scalpel.json(*args)
    return np.array([[math.nan if v is None else v for v in row] for row in r["logits"]], np.float64), r


def cli_generate(scalpel, path, prompt, n_new, docfile=None):
    args = ["generate", "--model", path, "--prompt", prompt, "--max-new-tokens", n_new, "--temperature", 0]
    if docfile:
        args += ["--interventions", docfile]
    return scalpel.json(*args)


def gen_repro(path, prompt, n_new, docfile, doc):
    return (f"\nrepro: scalpel generate --model {path} --prompt {prompt!r} --max-new-tokens {n_new} "
            f"--temperature 0 --json --interventions {docfile}\ndoc: {json.dumps(doc)[:700]}")


_EOS: dict = {}


def eos_ids(scalpel, path, m):
    """The end-of-sequence ids generation stops at (`scalpel info`); the reference's eos id must be among them."""
    if path not in _EOS:
        _EOS[path] = set(scalpel.json("info", "--model", path)["eos_ids"])
        if m.cfg.get("eos_id") is not None:
            assert m.cfg["eos_id"] in _EOS[path], (m.cfg["eos_id"], _EOS[path])
    return _EOS[path]


def layers_of(m, hook):
    """`blocks.*.x` / `blocks.L.x` / `blocks.*` / `blocks.L` -> layer list."""
    part = hook.split(".")[1]
    return list(range(m.cfg["n_layers"])) if part == "*" else [int(part)]


def resolve(p, n):
    return n + p if p < 0 else p


def pos_mask(spec, n, total):
    """Boolean [total] mask of the positions a `positions` value covers (n = prompt length)."""
    m = np.zeros(total, bool)
    if spec in (None, "all"):
        m[:] = True
    elif spec == "prompt":
        m[:n] = True
    elif spec == "generated":
        m[n:] = True
    elif isinstance(spec, dict):
        m[resolve(spec["start"], n):max(resolve(spec["end"], n), 0)] = True
    else:
        for p in spec:
            if 0 <= resolve(p, n) < total:
                m[resolve(p, n)] = True
    return m


def last_logits(m, ids, fn=None):
    logits, _ = ref_model.forward_hooked(m, ids, fn, last_only=True)
    return logits


# ---------------------------------------------------------------- reference generation loop
def ref_generate(m, prompt, n_new, eos, make_fn=None, inserts=(), on_pass=None):
    """Greedy decoding by full recomputation with the engine's documented loop.

    make_fn(total) -> hook function for a pass over `total` tokens (or None).
    inserts: [{"ids", "at_step" | "after" (ids), "times", "index"}].
    on_pass(seq) is called after each pass (before sampling) and may return a new
    (shorter) length to roll back to plus the event to record, or None.
    Returns (generated ids, events, tie flags per event).
    """
    n = len(prompt)
    seq = list(prompt)
    events, ties = [], []
    left = [ins.get("times", 1) for ins in inserts]
    n_ctx = m.cfg["n_ctx"]
    while len(seq) - n < n_new and len(seq) < n_ctx:
        step = len(seq) - n
        k = next((i for i, ins in enumerate(inserts) if left[i] > 0 and ins.get("at_step") == step), None)
        if k is not None:
            left[k] -= 1
            seq += inserts[k]["ids"]
            events.append({"event": "inserted", "ids": list(inserts[k]["ids"]), "index": inserts[k]["index"]})
            ties.append(False)
            continue
        last = last_logits(m, seq, make_fn(len(seq)) if make_fn else None)
        if on_pass is not None:
            back = on_pass(seq)
            if back is not None:
                new_len, event, tie = back
                if event is not None:
                    events.append(event)
                    ties.append(tie)
                del seq[new_len:]
                continue
        order = np.argsort(-last, kind="stable")
        nxt = int(order[0])
        seq.append(nxt)
        events.append({"event": "token", "id": nxt})
        ties.append(bool(last[order[0]] - last[order[1]] < TIE))
        if nxt in eos:
            break
        gen = seq[n:]
        k = next((i for i, ins in enumerate(inserts)
                  if left[i] > 0 and ins.get("after") is not None and gen[-len(ins["after"]):] == ins["after"]), None)
        if k is not None:
            left[k] -= 1
            seq += inserts[k]["ids"]
            events.append({"event": "inserted", "ids": list(inserts[k]["ids"]), "index": inserts[k]["index"]})
            ties.append(False)
    return seq[n:], events, ties


def ids_of(events):
    """Final generated ids from events (tokens and insertions, minus backtracked ones)."""
    out = []
    for e in events:
        if e["event"] == "token":
            out.append(e["id"])
        elif e["event"] == "inserted":
            out += e["ids"]
        elif e["event"] == "backtrack":
            del out[len(out) - e["removed"]:]
    return out


def compare_events(got, want_events, want_ties, cmd):
    """Events equal up to the first near-tie of the reference (exclusive); ids follow from the events."""
    cut = next((i for i, t in enumerate(want_ties) if t), len(want_events))
    print(f"events compared: {cut} of {len(want_events)} ({sum(e['event'] != 'token' for e in want_events)} "
          f"insert/backtrack); got {got['events']}")
    assert got["events"][:cut] == want_events[:cut], (
        f"events differ (compared up to event {cut} of {len(want_events)}):\n got  {got['events']}\n want "
        f"{want_events}{cmd}")
    assert ids_of(got["events"]) == got["ids"], f"'ids' disagree with the events: {got['ids']} {cmd}"
    if cut == len(want_events):
        assert got["events"] == want_events, f"events differ:\n got  {got['events']}\n want {want_events}{cmd}"
        assert got["ids"] == ids_of(want_events), f"ids differ: {got['ids']} want {ids_of(want_events)}{cmd}"
    return cut


def plain_generate(m, prompt, n_new, eos):
    return ref_generate(m, prompt, n_new, eos)


# ================================================================ low_rank (LASER)
def expected_low_rank(m, items):
    """The reference model with each low_rank item applied in order (a later item approximates the
    already-replaced weight, as a sequence of edits does)."""
    for it in items:
        for l in layers_of(m, it["hook"]):
            w = ref_model.block_weight(m, l, it["matrix"])
            m = ref_model.with_block_weight(m, l, it["matrix"], ref_model.low_rank_approx(w, it["rank"]))
    return m


def low_rank_case(scalpel, tmp_path, path, m, items, prompt=PROMPT, tol=TINY_TOL, min_change=1e-3):
    doc = {"version": 1, "interventions": items}
    docfile = write_doc(tmp_path, doc)
    ids = m.tokenizer.encode(prompt)
    got, r = cli_logits(scalpel, path, prompt, docfile)
    assert r["ids"] == ids, (r["ids"], ids)
    want, _ = ref_model.forward_hooked(expected_low_rank(m, items), ids)
    plain, _ = ref_model.forward_hooked(m, ids)
    cmd = f"\nrepro: scalpel logits --model {path} --prompt {prompt!r} --full --json --interventions {docfile}\n" \
          f"doc: {json.dumps(doc)}"
    check_close("logits", got, want, tol, cmd)
    assert np.abs(want - plain).max() > min_change, "the rank reduction does not change the logits: weak test case"
    applied = r["interventions"]["applied"]
    for i, it in enumerate(items):
        hooks = sorted(h for a in applied if a["index"] == i for h in a["hooks"])
        assert hooks == sorted(f"blocks.{l}" for l in layers_of(m, it["hook"])), (i, applied)
        assert all(a["op"] == "low_rank" for a in applied if a["index"] == i), applied
    return got, want, plain


def _lr_params():
    out = []
    for name in TINY:
        for mat in MATRICES:
            if name == GPT2 and mat == "gate":
                continue
            out.append(pytest.param(name, mat, id=f"{name}-{mat}"))
    return out


@pytest.mark.parametrize("name,matrix", _lr_params())
def test_low_rank_each_matrix(scalpel, tiny, ref, tmp_path, name, matrix):
    path = tiny[name]["path"]
    m = ref(path)
    layer = 1 if matrix in ("q", "o", "up") else 0
    low_rank_case(scalpel, tmp_path, path, m, [{"hook": f"blocks.{layer}", "op": "low_rank", "matrix": matrix, "rank": 3}])


@pytest.mark.parametrize("name", TINY)
def test_low_rank_every_layer_and_composed(scalpel, tiny, ref, tmp_path, name):
    """`blocks.*`, two matrices, and a hook intervention in the same document."""
    path = tiny[name]["path"]
    m = ref(path)
    items = [{"hook": "blocks.*", "op": "low_rank", "matrix": "down", "rank": 5},
             {"hook": "blocks.0", "op": "low_rank", "matrix": "v", "rank": 2}]
    low_rank_case(scalpel, tmp_path, path, m, items)
    # with a steering add after it: the add applies on top of the edited weights
    vec = rnd(3, m.cfg["d_model"])
    doc = {"version": 1, "interventions": items + [{"hook": "blocks.1.hook_resid_pre", "op": "add", "vector": vec,
                                                    "positions": [-1]}]}
    got, _ = cli_logits(scalpel, path, PROMPT, write_doc(tmp_path, doc))
    lr = expected_low_rank(m, items)
    ids = m.tokenizer.encode(PROMPT)

    def fn(nm, x):
        if nm == "blocks.1.hook_resid_pre":
            x = x.copy()
            x[-1] += f32(vec)
            return x
        return None

    want, _ = ref_model.forward_hooked(lr, ids, fn)
    check_close("logits (low_rank + add)", got, want, TINY_TOL)


@pytest.mark.parametrize("name", TINY)
def test_low_rank_full_rank_is_identity_and_above_is_error(scalpel, tiny, ref, tmp_path, name):
    path = tiny[name]["path"]
    m = ref(path)
    w = ref_model.block_weight(m, 0, "k")
    full = min(w.shape)
    # rank == full rank: the SVD reproduces the matrix (to rounding)
    doc = {"version": 1, "interventions": [{"hook": "blocks.0", "op": "low_rank", "matrix": "k", "rank": full}]}
    got, _ = cli_logits(scalpel, path, PROMPT, write_doc(tmp_path, doc))
    plain, _ = m.forward(m.tokenizer.encode(PROMPT), want_hooks=False)
    check_close("logits at full rank", got, plain, TINY_TOL)
    # rank > full rank: an error naming the intervention, the rank and the full rank
    for hook in ("blocks.0", "blocks.*"):
        bad = {"version": 1, "interventions": [
            {"hook": "blocks.1.hook_resid_pre", "op": "scale", "factor": 2.0},
            {"hook": hook, "op": "low_rank", "matrix": "k", "rank": full + 1}]}
        for cmd in ("logits", "generate", "activations"):
            extra = {"generate": ["--max-new-tokens", 2], "activations": ["--hook", "blocks.0.hook_resid_pre"]}.get(cmd, [])
            p = scalpel.run(cmd, "--model", path, "--prompt", PROMPT, "--json", "--interventions",
                            write_doc(tmp_path, bad), *extra)
            msg = f"repro: {repro(p.cmd)}\ndoc: {json.dumps(bad)}\nstderr: {p.stderr.strip()[:500]}"
            assert p.returncode != 0 and "panicked" not in p.stderr, msg
            low = p.stderr.lower()
            assert "intervention 1" in low and "rank" in low and str(full + 1) in low and str(full) in low, msg


@pytest.mark.parametrize("doc_item,where,what", [
    ({"hook": "blocks.0", "op": "low_rank", "matrix": "q", "rank": 0}, ["intervention 0", "rank"], ["at least 1"]),
    ({"hook": "blocks.2", "op": "low_rank", "matrix": "q", "rank": 2}, ["intervention 0", "hook"], ["range", "2"]),
    ({"hook": "blocks.0.hook_resid_pre", "op": "low_rank", "matrix": "q", "rank": 2}, ["intervention 0", "hook"], ["block"]),
    ({"hook": "blocks.0", "op": "low_rank", "matrix": "qkv", "rank": 2}, ["intervention 0", "matrix"], ["qkv", "unknown"]),
], ids=["rank0", "layer_out_of_range", "not_a_block", "unknown_matrix"])
def test_low_rank_bad_document(scalpel, tiny, tmp_path, doc_item, where, what):
    p = scalpel.run("logits", "--model", tiny[LLAMA]["path"], "--prompt", PROMPT, "--json", "--interventions",
                    write_doc(tmp_path, {"version": 1, "interventions": [doc_item]}))
    msg = f"repro: {repro(p.cmd)}\ndoc item: {json.dumps(doc_item)}\nstderr: {p.stderr.strip()[:500]}"
    assert p.returncode != 0 and "panicked" not in p.stderr, msg
    low = p.stderr.lower()
    assert all(w.lower() in low for w in where) and any(w.lower() in low for w in what), msg


@pytest.mark.parametrize("cmd", ["logits", "generate"])
def test_low_rank_gate_on_gpt2_is_an_error(scalpel, tiny, tmp_path, cmd):
    """GPT-2's MLP has no gate: an error that, like every document error (docs/interventions.md, "Bad
    input"), names the intervention and the field."""
    doc = {"version": 1, "interventions": [{"hook": "blocks.0.hook_resid_pre", "op": "zero", "positions": [0]},
                                           {"hook": "blocks.1", "op": "low_rank", "matrix": "gate", "rank": 2}]}
    extra = ["--max-new-tokens", 2] if cmd == "generate" else []
    p = scalpel.run(cmd, "--model", tiny[GPT2]["path"], "--prompt", PROMPT, "--json", "--interventions",
                    write_doc(tmp_path, doc), *extra)
    msg = f"repro: {repro(p.cmd)}\ndoc: {json.dumps(doc)}\nstderr: {p.stderr.strip()[:500]}"
    assert p.returncode != 0 and "panicked" not in p.stderr, msg
    low = p.stderr.lower()
    assert "gate" in low, msg
    assert "intervention 1" in low, "the error does not name the intervention\n" + msg
    assert "matrix" in low, "the error does not name the field ('matrix')\n" + msg


@pytest.mark.parametrize("name", TINY)
def test_low_rank_activations_then_plain_run(scalpel, tiny, ref, tmp_path, name):
    """`activations` under the document shows the edited weights' values; a run without the document
    afterwards is the plain model (each CLI call is its own process: this checks the edit is applied per
    run and nothing persists on disk)."""
    path = tiny[name]["path"]
    m = ref(path)
    items = [{"hook": "blocks.0", "op": "low_rank", "matrix": "o", "rank": 2}]
    docfile = write_doc(tmp_path, {"version": 1, "interventions": items})
    ids = m.tokenizer.encode(PROMPT)
    _, rec = ref_model.forward_hooked(expected_low_rank(m, items), ids, record={"blocks.0.hook_attn_out"})
    got = hook_array(scalpel.json("activations", "--model", path, "--prompt", PROMPT, "--hook",
                                  "blocks.0.hook_attn_out", "--interventions", docfile))
    check_close("blocks.0.hook_attn_out", got, rec["blocks.0.hook_attn_out"], TINY_TOL, rtol=1e-5)
    got_plain, _ = cli_logits(scalpel, path, PROMPT)
    plain, _ = m.forward(ids, want_hooks=False)
    check_close("logits without the document", got_plain, plain, TINY_TOL)


@pytest.mark.parametrize("name", TINY)
def test_low_rank_generation(scalpel, tiny, ref, tmp_path, name):
    path = tiny[name]["path"]
    m = ref(path)
    items = [{"hook": "blocks.1", "op": "low_rank", "matrix": "up", "rank": 2}]
    doc = {"version": 1, "interventions": items}
    docfile = write_doc(tmp_path, doc)
    prompt = m.tokenizer.encode(GEN_PROMPT)
    eos = eos_ids(scalpel, path, m)
    r = cli_generate(scalpel, path, GEN_PROMPT, 8, docfile)
    want_ev, ties = ref_generate(expected_low_rank(m, items), prompt, 8, eos)[1:]
    compare_events(r, want_ev, ties, gen_repro(path, GEN_PROMPT, 8, docfile, doc))
    assert ids_of(want_ev) != plain_generate(m, prompt, 8, eos)[0], "weak test case"


@requires_smol
def test_smollm_low_rank(scalpel, smol, smol_ref, tmp_path):
    items = [{"hook": "blocks.3", "op": "low_rank", "matrix": "down", "rank": 8},
             {"hook": "blocks.5", "op": "low_rank", "matrix": "k", "rank": 4}]
    low_rank_case(scalpel, tmp_path, smol, smol_ref, items, prompt="The capital of France is", tol=SMOL_TOL,
                  min_change=0.05)


# ================================================================ kv_add (KV-cache steering)
def kv_edits(m, items, n):
    """[(layer, values?, {kv head: d_head vector (HF order)}, selected prompt positions mask [n])]."""
    KV, hd = m.cfg["n_kv_heads"], m.cfg["d_head"]
    out = []
    for it in items:
        if not it.get("enabled", True):
            continue
        v = f32(f32(it["vector"]) * f32(it.get("scale", 1.0)))
        heads = it.get("heads")
        hs = [h for h in range(KV) if heads is None or h in heads]
        per = {h: v[h * hd:(h + 1) * hd] for h in hs} if v.size == KV * hd else {h: v for h in hs}
        sel = pos_mask(it.get("positions", "all"), n, n)
        for l in layers_of(m, it["hook"]):
            out.append((l, it["hook"].endswith("attn.hook_v"), per, sel))
    return out


def kv_make_fn(m, edits, n, variant="doc"):
    """Hook function factory applying the KV edits inside attention (see the module docstring).

    variant "doc": query q reads edited entry j iff sel[j], q >= n-1 and j < q (the documented timing).
    variant "after_prompt": only queries after the prompt (q >= n) read edited entries (a one-shot edit
    after the whole prompt); "self": the last prompt token also reads its own edited entry (j <= q).
    variant "stored_order": the key vector is taken in GGUF's stored (interleaved) order instead of the
    hooks' order (what forgetting the layout mapping would do)."""
    H, KV, hd = m.cfg["n_heads"], m.cfg["n_kv_heads"], m.cfg["d_head"]
    rep = H // KV
    by_layer = {}
    for e in edits:
        by_layer.setdefault(e[0], []).append(e)

    def make(T):
        q_i, k_i = np.arange(T)[:, None], np.arange(T)[None, :]
        state = {}

        def region(sel):
            s = np.zeros(T, bool)
            s[:n] = sel
            if variant == "after_prompt":
                return s[None, :] & (q_i >= n) & (k_i < q_i)
            if variant == "self":
                return s[None, :] & (q_i >= n - 1) & (k_i <= q_i)
            return s[None, :] & (q_i >= n - 1) & (k_i < q_i)

        def fn(name, x):
            if not name.startswith("blocks."):
                return None
            parts = name.split(".")
            l, rest = int(parts[1]), ".".join(parts[2:])
            mine = by_layer.get(l)
            if not mine:
                return None
            if rest == "attn.hook_rot_q":
                state["q"] = x
            elif rest == "attn.hook_attn_scores":
                out, changed = x.copy(), False
                for _, values, per, sel in mine:
                    if values:
                        continue
                    reg = region(sel)
                    for h in range(H):
                        if h // rep not in per:
                            continue
                        dk = per[h // rep]
                        if variant == "stored_order":
                            dk = ref_model.gguf_to_hf_order(dk)
                        delta = state["q"][:, h] @ dk / np.sqrt(hd)  # [T]
                        out[h] = np.where(reg, out[h] + delta[:, None], out[h])
                        changed = True
                return out if changed else None
            elif rest == "attn.hook_pattern":
                state["pat"] = x
            elif rest == "attn.hook_z":
                out, changed = x.copy(), False
                for _, values, per, sel in mine:
                    if not values:
                        continue
                    reg = region(sel)
                    for h in range(H):
                        if h // rep not in per:
                            continue
                        wsum = (state["pat"][h] * reg).sum(-1)  # [T]: attention mass on edited entries
                        out[:, h] += wsum[:, None] * per[h // rep]
                        changed = True
                return out if changed else None
            return None

        return fn

    return make


def kv_case(scalpel, tmp_path, path, m, items, prompt_text, n_new, eos, variants=()):
    doc = {"version": 1, "interventions": items}
    docfile = write_doc(tmp_path, doc)
    prompt = m.tokenizer.encode(prompt_text)
    n = len(prompt)
    r = cli_generate(scalpel, path, prompt_text, n_new, docfile)
    edits = kv_edits(m, items, n)
    want, want_ev, ties = ref_generate(m, prompt, n_new, eos, kv_make_fn(m, edits, n))
    cut = compare_events(r, want_ev, ties, gen_repro(path, prompt_text, n_new, docfile, doc))
    applied = r["interventions"]["applied"]
    for i, it in enumerate(items):
        hooks = {h for a in applied if a["index"] == i for h in a["hooks"]}
        site = "hook_v" if it["hook"].endswith("hook_v") else "hook_rot_k"
        assert hooks == {f"blocks.{l}.attn.{site}" for l in layers_of(m, it["hook"])}, applied
    alts = {v: ref_generate(m, prompt, n_new, eos, kv_make_fn(m, edits, n, v))[0] for v in variants}
    return want, cut, alts


def kv_items(m, case):
    KV, hd, L = m.cfg["n_kv_heads"], m.cfg["d_head"], m.cfg["n_layers"] - 1
    return {
        "rot_k_one_vector_all_positions": [
            {"hook": "blocks.0.attn.hook_rot_k", "op": "kv_add", "vector": rnd(1, hd), "scale": 3.0}],
        "rot_k_per_head_positions": [
            {"hook": f"blocks.{L}.attn.hook_rot_k", "op": "kv_add", "vector": rnd(2, KV * hd, 2.0),
             "positions": [0, 2, -3]}],
        "rot_k_heads_every_layer": [
            {"hook": "blocks.*.attn.hook_rot_k", "op": "kv_add", "vector": rnd(3, hd, 3.0), "heads": [1],
             "positions": {"start": 1, "end": -1}}],
        "v_one_vector_heads": [
            {"hook": "blocks.0.attn.hook_v", "op": "kv_add", "vector": rnd(4, hd), "scale": 4.0, "heads": [1],
             "positions": [1, 2, 3]}],
        "v_per_head_every_layer": [
            {"hook": "blocks.*.attn.hook_v", "op": "kv_add", "vector": rnd(5, KV * hd, 3.0), "positions": "prompt"}],
        "k_and_v_with_add": [
            {"hook": f"blocks.{L}.attn.hook_v", "op": "kv_add", "vector": rnd(6, KV * hd, 2.0), "heads": [0],
             "positions": [-2, -4]},
            {"hook": "blocks.0.hook_resid_post", "op": "add", "vector": rnd(7, m.cfg["d_model"], 0.5),
             "positions": "generated"},
            {"hook": "blocks.0.attn.hook_rot_k", "op": "kv_add", "vector": rnd(8, hd, 3.0), "positions": [3, 4]}],
    }[case]


KV_CASES = ["rot_k_one_vector_all_positions", "rot_k_per_head_positions", "rot_k_heads_every_layer",
            "v_one_vector_heads", "v_per_head_every_layer", "k_and_v_with_add"]


def _kv_params():
    out = []
    for name in TINY:
        for case in KV_CASES:
            if name == GPT2 and case in ("rot_k_one_vector_all_positions", "rot_k_per_head_positions",
                                         "rot_k_heads_every_layer", "k_and_v_with_add"):
                continue  # GPT-2 has no RoPE and no hook_rot_k (see test_kv_add_gpt2_keys)
            out.append(pytest.param(name, case, id=f"{name}-{case}"))
    return out


def add_fn_wrap(make, m, items, n):
    """Adds the plain `add` items of a document (full-sequence semantics) on top of another factory."""
    adds = [it for it in items if it["op"] == "add"]
    if not adds:
        return make

    def make2(T):
        inner = make(T)

        def fn(name, x):
            y = inner(name, x)
            x = x if y is None else y
            changed = y is not None
            for it in adds:
                if name == it["hook"]:
                    x = x + pos_mask(it.get("positions", "all"), n, T)[:, None] * f32(f32(it["vector"]) * f32(it.get("scale", 1.0)))
                    changed = True
            return x if changed else None

        return fn

    return make2


@pytest.mark.parametrize("name,case", _kv_params())
def test_kv_add_generation(scalpel, tiny, ref, tmp_path, name, case):
    path = tiny[name]["path"]
    m = ref(path)
    items = kv_items(m, case)
    eos = eos_ids(scalpel, path, m)
    prompt = m.tokenizer.encode(GEN_PROMPT)
    n = len(prompt)
    n_new = 10
    doc = {"version": 1, "interventions": items}
    docfile = write_doc(tmp_path, doc)
    r = cli_generate(scalpel, path, GEN_PROMPT, n_new, docfile)
    kv = [it for it in items if it["op"] == "kv_add"]
    make = add_fn_wrap(kv_make_fn(m, kv_edits(m, kv, n), n), m, items, n)
    want, want_ev, ties = ref_generate(m, prompt, n_new, eos, make)
    compare_events(r, want_ev, ties, gen_repro(path, GEN_PROMPT, n_new, docfile, doc))
    plain = plain_generate(m, prompt, n_new, eos)[0]
    assert want != plain, "the KV edit does not change the greedy output: weak test case"


def test_kv_add_key_order_and_timing(scalpel, tiny, ref, tmp_path):
    """The cases that tell the documented semantics from plausible mistakes: the key vector in the hooks'
    (Hugging Face) head-dim order, not GGUF's stored order; the prefix edited before the last prompt token
    runs (so the first generated token already changes); the last token's own entry only after its pass."""
    path = tiny[LLAMA]["path"]
    m = ref(path)
    eos = eos_ids(scalpel, path, m)
    prompt = m.tokenizer.encode(GEN_PROMPT)
    plain = plain_generate(m, prompt, 10, eos)[0]
    hd = m.cfg["d_head"]
    # keys, prefix positions only: first token changes; stored order would give other ids
    items = [{"hook": "blocks.1.attn.hook_rot_k", "op": "kv_add", "vector": rnd(13, hd, 4.0),
              "positions": [0, 2, 4]}]
    want, cut, alts = kv_case(scalpel, tmp_path, path, m, items, GEN_PROMPT, 10, eos,
                              variants=("stored_order", "after_prompt"))
    assert want[0] != plain[0], "prefix-only key edit does not change the first token: weak case"
    assert alts["stored_order"] != want, "key order not discriminated: weak case"
    assert alts["after_prompt"] != want, "timing not discriminated: weak case"
    # values, the last prompt token only: invisible to the first token, visible afterwards
    items = [{"hook": "blocks.0.attn.hook_v", "op": "kv_add", "vector": rnd(12, m.cfg["n_kv_heads"] * hd, 4.0),
              "positions": [-1]}]
    want, cut, alts = kv_case(scalpel, tmp_path, path, m, items, GEN_PROMPT, 10, eos, variants=("self",))
    assert want[0] == plain[0] and want != plain, (want, plain)
    assert alts["self"] != want, "timing of the last token's own entry not discriminated: weak case"


@pytest.mark.parametrize("name", TINY)
def test_kv_add_one_token_prompt(scalpel, tiny, ref, tmp_path, name):
    """A one-token prompt: its entry is edited right after its pass."""
    path = tiny[name]["path"]
    m = ref(path)
    eos = eos_ids(scalpel, path, m)
    hook = "blocks.0.attn.hook_v"
    items = [{"hook": hook, "op": "kv_add", "vector": rnd(13, m.cfg["d_head"], 5.0)}]
    want, _, _ = kv_case(scalpel, tmp_path, path, m, items, "The", 8, eos)
    plain = plain_generate(m, m.tokenizer.encode("The"), 8, eos)[0]
    assert want[0] == plain[0] and want != plain, (want, plain)


def test_kv_add_gpt2_keys(scalpel, tiny, ref, tmp_path):
    """GPT-2 has no RoPE: its cached keys are `attn.hook_k`. The engine must either edit them (and match
    the reference) or refuse with an error naming the intervention and the hook; never ignore it."""
    path = tiny[GPT2]["path"]
    m = ref(path)
    eos = eos_ids(scalpel, path, m)
    hd = m.cfg["d_head"]
    for hook in ("blocks.1.attn.hook_k", "blocks.1.attn.hook_rot_k"):
        items = [{"hook": hook, "op": "kv_add", "vector": rnd(14, hd, 4.0), "positions": [0, 1, 2]}]
        docfile = write_doc(tmp_path, {"version": 1, "interventions": items})
        p = scalpel.run("generate", "--model", path, "--prompt", GEN_PROMPT, "--max-new-tokens", 6, "--temperature", 0,
                        "--json", "--interventions", docfile)
        msg = f"repro: {repro(p.cmd)}\ndoc: {json.dumps(items)}\nstderr: {p.stderr.strip()[:400]}"
        assert "panicked" not in p.stderr, msg
        if p.returncode != 0:
            assert "intervention 0" in p.stderr.lower() and "hook" in p.stderr.lower(), msg
            continue
        # accepted: must edit the keys like a rot_k edit on a rope-free model
        prompt = m.tokenizer.encode(GEN_PROMPT)
        n = len(prompt)
        edits = [(1, False, {h: f32(items[0]["vector"]) for h in range(m.cfg["n_kv_heads"])}, pos_mask([0, 1, 2], n, n))]

        def make(T, inner=kv_make_fn(m, edits, n)):
            f = inner(T)

            def fn(name, x):
                if name == "blocks.1.attn.hook_q":  # GPT-2: the rope-free query plays rot_q's part
                    return f("blocks.1.attn.hook_rot_q", x)
                return f(name, x)

            return fn

        want_ev, ties = ref_generate(m, prompt, 6, eos, make)[1:]
        compare_events(json.loads(p.stdout), want_ev, ties, "\n" + msg)


@requires_smol
def test_smollm_kv_add(scalpel, smol, smol_ref, tmp_path):
    """GQA (9 heads, 3 KV heads, d_head 64), GGUF interleaved key layout: per-KV-head key vectors on two
    heads and a value vector, against the reference."""
    m = smol_ref
    eos = eos_ids(scalpel, smol, m)
    hd, KV = m.cfg["d_head"], m.cfg["n_kv_heads"]
    prompt_text = "I went up to my friend and said"
    items = [{"hook": "blocks.4.attn.hook_rot_k", "op": "kv_add", "vector": rnd(21, KV * hd, 3.0),
              "heads": [0, 2], "positions": [1, 3, -1]},
             {"hook": "blocks.9.attn.hook_v", "op": "kv_add", "vector": rnd(22, hd, 2.0), "scale": 2.0,
              "positions": {"start": 2, "end": -1}}]
    want, cut, _ = kv_case(scalpel, tmp_path, smol, m, items, prompt_text, 3, eos)
    plain = cli_generate(scalpel, smol, prompt_text, 3)["ids"]
    assert want != plain, f"the KV edit does not change SmolLM2's greedy output: weak test case ({want})"


@requires_smol
def test_smollm_kv_steering_example(scalpel, smol, smol_ref, tmp_path):
    """docs/examples/kv_steering.json as shipped (a prompt_diff vector read at the hook it edits)."""
    import os

    from conftest import REPO

    m = smol_ref
    eos = eos_ids(scalpel, smol, m)
    with open(os.path.join(REPO, "docs", "examples", "kv_steering.json")) as fh:
        doc = json.load(fh)
    items = []
    for it in doc["interventions"]:
        it = dict(it)
        v = it["vector"]
        if isinstance(v, dict):  # ActAdd: act(plus) - act(minus) at the hook (default: the item's) and position
            assert v["from"] == "prompt_diff" and "*" not in it["hook"], v
            hook = v.get("hook", it["hook"])

            def act(text, hook=hook, pos=v.get("position", -1)):
                rec = ref_model.forward_hooked(m, m.tokenizer.encode(text), record={hook}, last_only=True)[1][hook]
                return rec[pos].ravel()

            it["vector"] = [float(x) for x in act(v["plus"]) - act(v["minus"])]
        items.append(it)
    prompt_text = "I think you are"
    prompt = m.tokenizer.encode(prompt_text)
    n = len(prompt)
    docfile = os.path.join(REPO, "docs", "examples", "kv_steering.json")
    r = cli_generate(scalpel, smol, prompt_text, 4, docfile)
    want_ev, ties = ref_generate(m, prompt, 4, eos, kv_make_fn(m, kv_edits(m, items, n), n))[1:]
    compare_events(r, want_ev, ties, gen_repro(smol, prompt_text, 4, docfile, doc))


# ================================================================ insert
def insert_specs(m, items):
    out = []
    for i, it in enumerate(items):
        if it["op"] != "insert":
            continue
        s = {"ids": m.tokenizer.encode(it["text"]), "times": it.get("times", 1), "index": i}
        if "at_step" in it:
            s["at_step"] = it["at_step"]
        else:
            s["after"] = m.tokenizer.encode(it["after"])
        out.append(s)
    return out


def trigger_candidates(m, gen):
    """Generated tokens, early ones first, that are their own text's whole encoding (usable as `after`)."""
    tok = m.tokenizer
    out = []
    for t in gen:
        txt = tok.decode([t])
        if t not in out and txt and "\ufffd" not in txt and tok.encode(txt) == [t]:
            out.append(t)
    return [tok.decode([t]) for t in out]


def insert_items(m, case, trig, seed=100):
    return {
        "at_step_0": [{"op": "insert", "text": " the dog", "at_step": 0}],
        "at_step_3": [{"op": "insert", "text": "Hello world", "at_step": 3}],
        "at_step_past_end": [{"op": "insert", "text": "Hello", "at_step": 30}],
        # steering that makes the model repeat itself, so the trigger comes back after an insertion
        "after_trigger_twice": [{"op": "insert", "text": "!", "after": trig, "times": 2},
                                {"hook": "blocks.1.hook_resid_pre", "op": "add", "vector": rnd(seed, m.cfg["d_model"], 4.0)}],
        "after_and_at_step_with_steering": [
            {"op": "insert", "text": " return a + b", "at_step": 2},
            {"op": "insert", "text": "!", "after": trig, "times": 3},
            {"hook": "blocks.1.hook_resid_pre", "op": "add", "vector": rnd(31, m.cfg["d_model"], 0.5),
             "positions": "generated"}],
        "fills_the_budget": [{"op": "insert", "text": "Interpretability of the model", "at_step": 5}],
    }[case]


INSERT_CASES = ["at_step_0", "at_step_3", "at_step_past_end", "after_trigger_twice",
                "after_and_at_step_with_steering", "fills_the_budget"]


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("case", INSERT_CASES)
def test_insert(scalpel, tiny, ref, tmp_path, name, case):
    path = tiny[name]["path"]
    m = ref(path)
    eos = eos_ids(scalpel, path, m)
    prompt = m.tokenizer.encode(GEN_PROMPT)
    n, n_new = len(prompt), 10

    def reference(items):
        make = None
        if any(it["op"] == "add" for it in items):
            make = add_fn_wrap(lambda T: (lambda name, x: None), m, items, n)
        return ref_generate(m, prompt, n_new, eos, make, insert_specs(m, items))

    # `after` cases: the first trigger token (from the plain run) with which the reference inserts after it
    # as often as the case needs (twice for times=2, at least once for the other)
    need = {"after_trigger_twice": 2, "after_and_at_step_with_steering": 1}.get(case, 0)
    trig, seed = None, 100
    for seed in range(100, 110) if need else ():
        steer = [it for it in insert_items(m, case, "x", seed) if it["op"] == "add"]
        for t in trigger_candidates(m, reference(steer)[0]):
            ev = reference(insert_items(m, case, t, seed))[1]
            if sum(e["event"] == "inserted" and e["index"] == (0 if case == "after_trigger_twice" else 1)
                   for e in ev) >= need:
                trig = t
                break
        if trig is not None:
            break
    assert trig is not None or not need, "no trigger token makes the insertion happen: weak test case"
    items = insert_items(m, case, trig, seed)
    doc = {"version": 1, "interventions": items}
    docfile = write_doc(tmp_path, doc)
    r = cli_generate(scalpel, path, GEN_PROMPT, n_new, docfile)
    want, want_ev, ties = reference(items)
    compare_events(r, want_ev, ties, gen_repro(path, GEN_PROMPT, n_new, docfile, doc))
    n_inserted = sum(e["event"] == "inserted" for e in want_ev)
    if case != "at_step_past_end":
        assert n_inserted >= 1, f"no insertion happened in the reference: weak test case ({want_ev})"
    else:
        assert n_inserted == 0


@pytest.mark.parametrize("name", TINY)
def test_insert_up_to_the_context_length(scalpel, tiny, ref, tmp_path, name):
    """Insertions that run into the context length (64 on the tiny models): generation stops there."""
    path = tiny[name]["path"]
    m = ref(path)
    eos = eos_ids(scalpel, path, m)
    prompt = m.tokenizer.encode(GEN_PROMPT)
    items = [{"op": "insert", "text": "In 2024 there were 365 days; in 2025 there were 365 days too. " * 2, "at_step": 3}]
    doc = {"version": 1, "interventions": items}
    docfile = write_doc(tmp_path, doc)
    r = cli_generate(scalpel, path, GEN_PROMPT, 80, docfile)
    want, want_ev, ties = ref_generate(m, prompt, 80, eos, None, insert_specs(m, items))
    compare_events(r, want_ev, ties, gen_repro(path, GEN_PROMPT, 80, docfile, doc))
    assert len(prompt) + len(r["ids"]) <= m.cfg["n_ctx"] or r["ids"][-1] not in eos


# ================================================================ conditional
class RefConditional:
    """A conditional item: monitor + `then` (add items) + backtrack, for the reference loop."""

    def __init__(self, m, item, n):
        self.m, self.n = m, n
        self.monitor = item["hook"]
        d = f32(item["direction"])
        self.u = d / np.linalg.norm(d)
        self.thr = float(f32(item["threshold"]))
        self.above = item.get("when", "above") == "above"
        self.backtrack = item.get("backtrack", 0)
        self.then = []
        for t in item["then"]:
            assert t["op"] == "add", "the reference's `then` supports add"
            self.then.append({"points": [t["hook"]], "v": f32(f32(t["vector"]) * f32(t.get("scale", 1.0))),
                              "positions": t.get("positions", "all")})
        self.proj = None        # projections of the latest pass [T]
        self.forced_from = None  # after a backtrack: every position >= this is steered
        self.fired = None       # first firing position (backtrack mode)

    def crosses(self, p):
        return p > self.thr if self.above else p < self.thr

    def make(self, T):
        n = self.n
        state = {}

        def fn(name, x):
            changed = False
            if name == self.monitor:
                proj = x.reshape(x.shape[0], -1) @ self.u
                self.proj = proj
                cross = self.crosses(proj)
                on = np.empty(T, bool)
                on[:n] = cross[n - 1]  # the prompt is one pass: its last token's reading decides
                on[n:] = cross[n:]  # then one pass per token
                if self.forced_from is not None:
                    on[self.forced_from:] = True
                state["on"] = on
            for t in self.then:
                if name in t["points"]:
                    assert "on" in state, "the reference supports `then` hooks at or after the monitor hook"
                    mask = state["on"] & pos_mask(t["positions"], n, T)
                    x = x + mask[:, None] * t["v"]
                    changed = True
            return x if changed else None

        return fn

    def on_pass(self, seq):
        """Backtracking: the first pass whose reading crosses rolls the sequence back."""
        if self.backtrack == 0 or self.fired is not None:
            return None
        f = len(seq) - 1
        if not self.crosses(self.proj[f]):
            return None
        self.fired = f
        new_len = max(f + 1 - self.backtrack, self.n)
        removed = len(seq) - new_len
        # the last prompt token's reading fired: the whole prompt pass was steered already
        self.forced_from = 0 if f == self.n - 1 else new_len - 1
        tie = bool(abs(self.proj[f] - self.thr) < TIE)
        event = {"event": "backtrack", "index_fired_at": f, "removed": removed} if removed else None
        return new_len, event, tie


def cond_reference(m, item, prompt, n_new, eos):
    """-> (ids, events, ties, readings [(pos, proj)], fired, near-threshold flags per reading)."""
    n = len(prompt)
    c = RefConditional(m, item, n)
    gen, events, ties = ref_generate(m, prompt, n_new, eos, c.make, on_pass=c.on_pass)
    # one more pass over the final sequence (minus the last sampled token, never run) gives every reading:
    # a reading at hook H cannot depend on `then` (applied at H after reading, or later)
    seq = list(prompt) + gen
    final = seq[:-1] if gen else seq  # the last sampled token is never run
    last_logits(m, final, c.make(len(final)))
    proj = c.proj
    readings = [(p, float(proj[p])) for p in range(n - 1, len(final))]
    near = [abs(r - c.thr) < TIE for _, r in readings]
    if c.backtrack:
        fired = [c.fired] if c.fired is not None else []
    else:
        fired, prev = [], False
        for p, r in readings:
            on = c.crosses(r)
            if on and not prev:
                fired.append(p)
            prev = on
        # without backtracking, event k is the token sampled after the pass whose reading is k: a reading
        # within TIE of the threshold may switch `then` either way, like a logit near-tie
        ties = [t or (k < len(near) and near[k]) for k, t in enumerate(ties)]
    return gen, events, ties, readings, fired, near


def choose_threshold(m, prompt, eos, monitor, u, first_after=2, n_plain=10, make_fn=None, first_reading=None):
    """(threshold, when) such that, on the unsteered greedy run (under make_fn if given), the prompt's
    reading(s) (from position first_reading, default n-1) do not cross, the first crossing comes at
    generated position >= first_after, and every reading is >= 0.05 from the threshold (no near-ties)."""
    n = len(prompt)
    first_reading = n - 1 if first_reading is None else first_reading
    gen = ref_generate(m, prompt, n_plain, eos, make_fn)[0]
    seq = list(prompt) + gen[:-1]
    _, rec = ref_model.forward_hooked(m, seq, make_fn(len(seq)) if make_fn else None, record={monitor},
                                      last_only=True)
    proj = rec[monitor].reshape(len(seq), -1) @ (u / np.linalg.norm(u))
    first_after += n - 1 - first_reading
    r = proj[first_reading:]
    best = None
    for when in ("above", "below"):
        s = r if when == "above" else -r
        for t in sorted(set(s)):
            thr = t - 1e-9  # cross = s > thr: readings >= t cross
            cross = s > thr
            idx = np.flatnonzero(cross)
            if cross[0] or len(idx) == 0 or idx[0] < first_after + 1 or idx[0] > len(r) - 3:
                continue
            below = s[~cross].max()
            thr = (below + t) / 2
            gap = min(np.abs(s - thr))
            if best is None or gap > best[0]:
                best = (gap, thr if when == "above" else -thr, when)
    if best is None or best[0] <= 0.05:
        return None, None
    return float(f32(best[1])), best[2]


def conditional_case(scalpel, tmp_path, path, m, eos, monitor, then_hook, then_positions, backtrack, seed,
                     n_new=10, then_scale=1.0, threshold=None, when=None):
    prompt = m.tokenizer.encode(GEN_PROMPT)
    d = m.cfg["d_model"]
    direction = rnd(seed, d)
    if threshold is None:
        for k in range(8):  # a direction whose readings allow a clean threshold (see choose_threshold)
            direction = rnd(seed + 1000 * k, d)
            threshold, when = choose_threshold(m, prompt, eos, monitor, f32(direction))
            if threshold is not None:
                break
        assert threshold is not None, "no direction with a usable threshold: weak test case"
    item = {"hook": monitor, "op": "conditional", "direction": direction, "threshold": threshold, "when": when,
            "backtrack": backtrack,
            "then": [{"hook": then_hook, "op": "add", "vector": rnd(seed + 1, d, 2.0), "scale": then_scale,
                      "positions": then_positions}]}
    doc = {"version": 1, "interventions": [item]}
    docfile = write_doc(tmp_path, doc)
    r = cli_generate(scalpel, path, GEN_PROMPT, n_new, docfile)
    cmd = gen_repro(path, GEN_PROMPT, n_new, docfile, doc)
    gen, events, ties, readings, fired, near = cond_reference(m, item, prompt, n_new, eos)
    cut = compare_events(r, events, ties, cmd)
    (trace,) = r["conditional"]
    assert trace["index"] == 0 and trace["backtrack"] == backtrack, trace
    if cut == len(events) and not any(near):
        got_pos = [p for p, _ in trace["readings"]]
        assert got_pos == [p for p, _ in readings], f"reading positions {got_pos} want {[p for p, _ in readings]}{cmd}"
        check_close("projections", [v for _, v in trace["readings"]], [v for _, v in readings], TINY_TOL, cmd,
                    rtol=1e-5)
        assert trace["fired"] == fired, f"fired at {trace['fired']}, want {fired}{cmd}"
    else:  # compare what precedes the first near-tie
        k = next((i for i, x in enumerate(near) if x), len(near))
        got = trace["readings"][:k]
        check_close("projections (prefix)", [v for _, v in got], [v for _, v in readings[:len(got)]], TINY_TOL, cmd,
                    rtol=1e-5)
    applied = r["interventions"]["applied"]
    assert applied and applied[0]["op"] == "conditional" and set(applied[0]["hooks"]) >= {monitor, then_hook}, applied
    return gen, events, readings, fired, threshold, when


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("case", ["later_hook_all_positions", "same_hook_generated", "resid_mid_to_mlp_out"])
def test_conditional_no_backtrack(scalpel, tiny, ref, tmp_path, name, case):
    path = tiny[name]["path"]
    m = ref(path)
    eos = eos_ids(scalpel, path, m)
    monitor, then_hook, positions, seed = {
        "later_hook_all_positions": ("blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "all", 40),
        "same_hook_generated": ("blocks.1.hook_resid_mid", "blocks.1.hook_resid_mid", "generated", 42),
        "resid_mid_to_mlp_out": ("blocks.0.hook_resid_mid", "blocks.1.hook_mlp_out", "all", 44),
    }[case]
    gen, events, readings, fired, *_ = conditional_case(scalpel, tmp_path, path, m, eos, monitor, then_hook,
                                                        positions, 0, seed, then_scale=3.0)
    assert fired, "the condition never fired: weak test case"
    prompt = m.tokenizer.encode(GEN_PROMPT)
    assert gen != plain_generate(m, prompt, 10, eos)[0], "steering while on does not change the output: weak case"


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("backtrack", [1, 2, 50])
def test_conditional_backtrack(scalpel, tiny, ref, tmp_path, name, backtrack):
    path = tiny[name]["path"]
    m = ref(path)
    eos = eos_ids(scalpel, path, m)
    gen, events, readings, fired, thr, when = conditional_case(
        scalpel, tmp_path, path, m, eos, "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "all", backtrack,
        50, then_scale=3.0)
    n = len(m.tokenizer.encode(GEN_PROMPT))
    back = [e for e in events if e["event"] == "backtrack"]
    assert len(back) == 1, f"the reference did not backtrack: weak test case ({events})"
    f = back[0]["index_fired_at"]
    assert back[0]["removed"] == min(backtrack, f + 1 - n)  # never before the prompt's end


def compose(*makers):
    """One hook-function factory applying several in turn (each sees the previous one's output)."""
    def make(T):
        fns = [mk(T) for mk in makers]

        def fn(name, x):
            changed = False
            for f in fns:
                y = f(name, x)
                if y is not None:
                    x, changed = y, True
            return x if changed else None

        return fn

    return make


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("positions", [[-1], "all", [0, 1, 2]], ids=["last", "all", "prefix"])
def test_kv_add_survives_backtrack(scalpel, tiny, ref, tmp_path, name, positions):
    """kv_add + a conditional that backtracks to the end of the prompt: the prompt's edited cache entries
    stay edited ("every token after the prompt reads the edited cache"), including the last prompt
    token's, whose pass is re-run by the backtrack."""
    path = tiny[name]["path"]
    m = ref(path)
    eos = eos_ids(scalpel, path, m)
    prompt = m.tokenizer.encode(GEN_PROMPT)
    n, d, hd, KV = len(prompt), m.cfg["d_model"], m.cfg["d_head"], m.cfg["n_kv_heads"]
    kv_item = {"hook": "blocks.0.attn.hook_v", "op": "kv_add", "vector": rnd(95, KV * hd, 3.0), "positions": positions}
    kv_make = kv_make_fn(m, kv_edits(m, [kv_item], n), n)
    monitor = "blocks.0.hook_resid_post"
    threshold = None
    for k in range(8):
        direction = rnd(96 + 1000 * k, d)
        # the kv pass splits the prompt (prefix, then its last token): the prefix's reading must not cross either
        threshold, when = choose_threshold(m, prompt, eos, monitor, f32(direction), make_fn=kv_make,
                                           first_reading=n - 2)
        if threshold is not None:
            break
    assert threshold is not None, "no usable threshold: weak test case"
    cond_item = {"hook": monitor, "op": "conditional", "direction": direction, "threshold": threshold, "when": when,
                 "backtrack": 50, "then": [{"hook": "blocks.1.hook_resid_pre", "op": "add", "vector": rnd(97, d, 2.0),
                                            "scale": 3.0}]}
    doc = {"version": 1, "interventions": [kv_item, cond_item]}
    docfile = write_doc(tmp_path, doc)
    r = cli_generate(scalpel, path, GEN_PROMPT, 10, docfile)
    c = RefConditional(m, cond_item, n)
    gen, events, ties = ref_generate(m, prompt, 10, eos, compose(kv_make, c.make), on_pass=c.on_pass)
    assert any(e["event"] == "backtrack" for e in events), f"no backtrack in the reference: weak test case {events}"
    compare_events(r, events, ties, gen_repro(path, GEN_PROMPT, 10, docfile, doc))


@pytest.mark.parametrize("name", TINY)
def test_conditional_fires_on_prompt(scalpel, tiny, ref, tmp_path, name):
    """The last prompt token's reading crosses: the prompt pass is steered, a backtrack removes nothing
    (no event) and every later token is steered."""
    path = tiny[name]["path"]
    m = ref(path)
    eos = eos_ids(scalpel, path, m)
    prompt = m.tokenizer.encode(GEN_PROMPT)
    monitor = "blocks.0.hook_resid_post"
    direction = f32(rnd(60, m.cfg["d_model"]))
    _, rec = ref_model.forward_hooked(m, prompt, record={monitor}, last_only=True)
    p_last = float(rec[monitor][-1] @ (direction / np.linalg.norm(direction)))
    for backtrack in (0, 3):
        gen, events, *_ = conditional_case(scalpel, tmp_path, path, m, eos, monitor, "blocks.1.hook_resid_pre",
                                           "all", backtrack, 60, then_scale=3.0, threshold=p_last - 0.5,
                                           when="above")
        assert not any(e["event"] == "backtrack" for e in events)


@pytest.mark.parametrize("name", TINY)
def test_conditional_single_pass_logits(scalpel, tiny, ref, tmp_path, name):
    """`logits` is one pass over the prompt: `then` applies to every position iff the last token's reading
    crosses (a threshold on each side of it)."""
    path = tiny[name]["path"]
    m = ref(path)
    ids = m.tokenizer.encode(PROMPT)
    monitor = "blocks.0.hook_resid_post"
    direction = rnd(70, m.cfg["d_model"])
    u = f32(direction) / np.linalg.norm(f32(direction))
    _, rec = ref_model.forward_hooked(m, ids, record={monitor})
    p_last = float(rec[monitor][-1] @ u)
    vec = rnd(71, m.cfg["d_model"], 2.0)
    plain, _ = m.forward(ids, want_hooks=False)
    for thr, steered in ((p_last - 0.3, True), (p_last + 0.3, False)):
        item = {"hook": monitor, "op": "conditional", "direction": direction, "threshold": thr,
                "then": [{"hook": "blocks.1.hook_resid_pre", "op": "add", "vector": vec, "positions": "all"}]}
        docfile = write_doc(tmp_path, {"version": 1, "interventions": [item]})
        got, r = cli_logits(scalpel, path, PROMPT, docfile)
        if steered:
            def fn(name, x):
                return x + f32(vec) if name == "blocks.1.hook_resid_pre" else None
            want, _ = ref_model.forward_hooked(m, ids, fn)
            assert np.abs(want - plain).max() > 1e-2
        else:
            want = plain
        check_close(f"logits (threshold {thr:.3f}, steered={steered})", got, want, TINY_TOL,
                    f"\nrepro: scalpel logits --model {path} --prompt {PROMPT!r} --full --json --interventions {docfile}")


@pytest.mark.parametrize("hook", ["blocks.0.attn.hook_z", "blocks.0.mlp.hook_post"])
def test_conditional_monitor_other_hooks(scalpel, tiny, ref, tmp_path, hook):
    """A monitor on a per-head hook (direction of d_head numbers, as the document's size rule asks) or an
    MLP hook must either work (projection of the newest token's value) or be refused with a clear error;
    a crash mid-run is neither."""
    path = tiny[LLAMA]["path"]
    m = ref(path)
    size = m.cfg["d_head"] if "attn" in hook else m.cfg["d_mlp"]
    item = {"hook": hook, "op": "conditional", "direction": rnd(80, size), "threshold": 0.0,
            "then": [{"hook": "blocks.1.hook_resid_pre", "op": "add", "vector": rnd(81, m.cfg["d_model"])}]}
    docfile = write_doc(tmp_path, {"version": 1, "interventions": [item]})
    p = scalpel.run("generate", "--model", path, "--prompt", GEN_PROMPT, "--max-new-tokens", 4, "--temperature", 0,
                    "--json", "--interventions", docfile)
    msg = f"repro: {repro(p.cmd)}\ndoc: {json.dumps(item)[:300]}\nstderr: {p.stderr.strip()[:400]}"
    assert "panicked" not in p.stderr, msg
    if p.returncode != 0:
        low = p.stderr.lower()
        assert "intervention 0" in low and ("direction" in low or "hook" in low), \
            "the error does not name the intervention and the field\n" + msg
        return
    if "attn" in hook:
        return  # accepted: what a per-head projection means is not documented; not checked further
    out = json.loads(p.stdout)
    prompt = m.tokenizer.encode(GEN_PROMPT)
    _, rec = ref_model.forward_hooked(m, prompt, record={hook}, last_only=True)
    u = f32(item["direction"]) / np.linalg.norm(f32(item["direction"]))
    want = rec[hook][-1] @ u  # the prompt pass's reading: its last token
    got = out["conditional"][0]["readings"][0]
    assert got[0] == len(prompt) - 1 and abs(got[1] - want) < TINY_TOL * max(1.0, abs(want)), (got, want, msg)


@pytest.mark.parametrize("cmd", ["logits", "activations"])
@pytest.mark.parametrize("op", ["kv_add", "insert"])
def test_generation_ops_in_a_single_pass_are_not_silently_ignored(scalpel, tiny, ref, tmp_path, cmd, op):
    """docs/interventions.md: "Nothing is silently ignored." `logits` / `activations` run one pass and
    never generate: a document with kv_add or insert must be refused or warned about (naming the
    intervention), or, for kv_add, give the last position's logits the documented edit implies (the
    prefix edited before the last prompt token runs)."""
    path = tiny[LLAMA]["path"]
    m = ref(path)
    hd = m.cfg["d_head"]
    items = {"kv_add": {"hook": "blocks.0.attn.hook_v", "op": "kv_add", "vector": rnd(90, hd, 5.0)},
             "insert": {"op": "insert", "text": " the dog", "at_step": 0}}
    item = items[op]
    docfile = write_doc(tmp_path, {"version": 1, "interventions": [item]})
    extra = ["--hook", "ln_final.hook_normalized"] if cmd == "activations" else ["--full"]
    p = scalpel.run(cmd, "--model", path, "--prompt", PROMPT, "--json", "--interventions", docfile, *extra)
    msg = f"repro: {repro(p.cmd)}\ndoc item: {json.dumps(item)}\nstderr: {p.stderr.strip()[:400]}"
    assert "panicked" not in p.stderr, msg
    low = p.stderr.lower()
    if p.returncode != 0 or ("intervention 0" in low and op in low):
        return  # refused, or warned about
    if op == "kv_add" and cmd == "logits":
        ids = m.tokenizer.encode(PROMPT)
        n = len(ids)
        want = last_logits(m, ids, kv_make_fn(m, kv_edits(m, [item], n), n)(n))
        got = np.array(json.loads(p.stdout)["logits"][-1], np.float64)
        plain = m.forward(ids, want_hooks=False)[0][-1]
        assert np.abs(want - plain).max() > 1e-2
        assert np.abs(got - want).max() < TINY_TOL, (
            f"op '{op}' was silently ignored (last-row logits {np.abs(got - plain).max():.2g} from the plain run, "
            f"{np.abs(got - want).max():.3g} from the edited one; exit 0, no warning)\n{msg}")
        return
    raise AssertionError(f"op '{op}' was silently ignored by `{cmd}` (exit 0, no warning)\n{msg}")


# ================================================================ attribution patching
FAMILIES = {"resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid", "resid_post": "hook_resid_post",
            "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out", "head_z": "attn.hook_z",
            "head_z_pos": "attn.hook_z"}
CLEAN = "The dog sleeps in the sun."
CORRUPT = "The dog sweeps in the sun."  # same token length on the tiny tokenizer


def metric_fn(metric, a, w, clean_logits, corrupt_logits):
    lp_clean = ref_model.log_softmax(clean_logits)
    ld = lambda x: x[a] - x[w]  # noqa: E731
    span = ld(clean_logits) - ld(corrupt_logits)
    return {
        "logit_diff": ld,
        "logit_diff_norm": lambda x: (ld(x) - ld(corrupt_logits)) / span,
        "prob": lambda x: float(np.exp(ref_model.log_softmax(x)[a])),
        "kl": lambda x: float((np.exp(lp_clean) * (lp_clean - ref_model.log_softmax(x))).sum()),
    }[metric]


def ref_attribution(m, clean_ids, corrupt_ids, family, metric, a, w, direction="denoise", eps=1e-4, cells=None):
    """-> (estimate {(row, col)}, exact {(row, col)}, base metric), float64. estimate by central differences of
    metric(base + e * delta_cell) at e = 0; exact = metric with the cell replaced by the source value.
    Rows are layers, or layer x head for head_z_pos (row r = layer r // n_heads, head r % n_heads; cols
    positions)."""
    L = m.cfg["n_layers"]
    site = FAMILIES[family]
    names = [f"blocks.{l}.{site}" for l in range(L)]
    pre = [f"blocks.{l}.hook_resid_pre" for l in range(L)]
    base_ids, src_ids = (corrupt_ids, clean_ids) if direction == "denoise" else (clean_ids, corrupt_ids)
    base_logits, base_h = ref_model.forward_hooked(m, base_ids, record=set(names + pre), last_only=True)
    src_logits, src_h = ref_model.forward_hooked(m, src_ids, record=set(names), last_only=True)
    clean_logits, corrupt_logits = (src_logits, base_logits) if direction == "denoise" else (base_logits, src_logits)
    M = metric_fn(metric, a, w, clean_logits, corrupt_logits)
    heads = family == "head_z"
    rows_per_layer = m.cfg["n_heads"] if family == "head_z_pos" else 1
    cols = m.cfg["n_heads"] if heads else len(clean_ids)
    cells = cells or [(r, c) for r in range(L * rows_per_layer) for c in range(cols)]
    jobs = []
    for r, c in cells:
        l, h = divmod(r, rows_per_layer)
        # the cell's index into a [pos, ...] value: head c everywhere, head h at position c, or position c
        idx = (slice(None), c) if heads else (c, h) if rows_per_layer > 1 else (c,)
        delta = src_h[names[l]] - base_h[names[l]]
        for kind in ("plus", "minus", "exact"):
            def fn(name, x, l=l, idx=idx, kind=kind, delta=delta):
                if name != names[l]:
                    return None
                x = x.copy()
                if kind == "exact":
                    x[idx] = src_h[name][idx]
                    return x
                s = eps if kind == "plus" else -eps
                x[idx] += s * delta[idx]
                return x
            jobs.append((l, base_h[pre[l]], fn))
    out = ref_model.forward_cells(m, base_ids, jobs)
    base = M(base_logits)
    est, exact = {}, {}
    for i, (l, c) in enumerate(cells):
        lp, lm, lx = out[3 * i], out[3 * i + 1], out[3 * i + 2]
        est[(l, c)] = base + (M(lp) - M(lm)) / (2 * eps)
        exact[(l, c)] = M(lx)
    return est, exact, base


def pick_answers(m, clean_ids, corrupt_ids, likely=False):
    """Printable single-token answer / wrong texts whose logit difference moves most clean vs corrupted
    (likely: the answer is the clean run's most probable such token, so that `prob` is not negligible)."""
    lc = m.forward(clean_ids, want_hooks=False)[0][-1]
    lx = m.forward(corrupt_ids, want_hooks=False)[0][-1]
    tok = m.tokenizer
    cands = [i for i in range(m.cfg["vocab"]) if tok.token_text(i) and tok.token_text(i).isprintable()
             and tok.token_text(i).strip() and tok.encode(tok.token_text(i))[:1] == [i]]
    d = lc[cands] - lx[cands]
    a, w = cands[int(np.argmax(d))], cands[int(np.argmin(d))]
    if likely:
        a = cands[int(np.argmax(lc[cands]))]
        w = w if w != a else cands[int(np.argmax(d))]
    return a, w, tok.token_text(a), tok.token_text(w)


def pearson(x, y):
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def cli_attribution(scalpel, path, clean, corrupt, answer, wrong, hook, metric, direction="denoise", timeout=300):
    args = ["patch", "--model", path, "--clean", clean, "--corrupt", corrupt, "--answer", answer, "--wrong", wrong,
            "--hook", hook, "--metric", metric, "--strategy", "attribution", "--direction", direction]
    r = scalpel.json(*args, timeout=timeout)
    return r, repro([scalpel.binary, *map(str, args), "--json"])


ATTR_CASES = [("resid_pre", "logit_diff_norm", "denoise"), ("attn_out", "kl", "denoise"),
              ("head_z", "prob", "denoise"), ("mlp_out", "logit_diff", "noise"), ("resid_mid", "logit_diff", "denoise"),
              ("head_z_pos", "logit_diff_norm", "denoise"), ("head_z_pos", "prob", "noise")]


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("family,metric,direction", ATTR_CASES, ids=[f"{a}-{b}-{c}" for a, b, c in ATTR_CASES])
def test_attribution_tiny(scalpel, tiny, ref, name, family, metric, direction):
    path = tiny[name]["path"]
    m = ref(path)
    clean_ids, corrupt_ids = m.tokenizer.encode(CLEAN), m.tokenizer.encode(CORRUPT)
    assert len(clean_ids) == len(corrupt_ids)
    a, w, at, wt = pick_answers(m, clean_ids, corrupt_ids, likely=metric == "prob")
    r, cmd = cli_attribution(scalpel, path, CLEAN, CORRUPT, at, wt, family, metric, direction)
    est, exact, base = ref_attribution(m, clean_ids, corrupt_ids, family, metric, a, w, direction)
    L = m.cfg["n_layers"] * (m.cfg["n_heads"] if family == "head_z_pos" else 1)  # rows
    cols = m.cfg["n_heads"] if family == "head_z" else len(clean_ids)
    assert r["strategy"] == "attribution" and r["rows"] == L and r["cols"] == cols, r
    assert r["heads_per_layer"] == (m.cfg["n_heads"] if family == "head_z_pos" else None), r["heads_per_layer"]
    want_est = np.array([[est[(l, c)] for c in range(cols)] for l in range(L)])
    want_exact = np.array([[exact[(l, c)] for c in range(cols)] for l in range(L)])
    got_est, got_exact = np.array(r["values"], np.float64), np.array(r["exact_values"], np.float64)
    bound = 1e-3 * max(np.abs(want_est).max(), np.abs(want_exact).max()) + 1e-9
    err = float(np.abs(got_est - want_est).max())
    print(f"attribution {family}/{metric}/{direction}: max |estimate - reference| {err:.3g} (bound {bound:.3g})")
    assert err <= bound, (f"estimate differs from the first-order reference by {err:.3g} > {bound:.3g}\n"
                          f"got  {np.round(got_est, 5).tolist()}\nwant {np.round(want_est, 5).tolist()}\nrepro: {cmd}")
    check_close("exact_values", got_exact, want_exact, TINY_TOL, "\nrepro: " + cmd)
    assert abs(pearson(got_est, got_exact) - r["correlation_with_exact"]) < 1e-6, (r["correlation_with_exact"], cmd)
    assert abs(r["correlation_with_exact"] - pearson(want_est, want_exact)) < 1e-3
    # the estimate is first-order: it is not the exact sweep (else this test could not tell them apart)
    assert np.abs(want_est - want_exact).max() > 10 * bound, "estimate equals the exact sweep: weak test case"


IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


@requires_smol
@pytest.mark.parametrize("family,documented", [("resid_pre", 0.85), ("head_z", 0.98), ("head_z_pos", 0.978)])
def test_smollm_attribution_correlation(scalpel, smol, family, documented):
    """docs/interventions.md: on the default model's IOI example r = 0.85 (resid_pre), 0.98 (head_z),
    0.978 (head_z_pos)."""
    r, cmd = cli_attribution(scalpel, smol, IOI_CLEAN, IOI_CORRUPT, " Mary", " John", family, "logit_diff_norm")
    rho = r["correlation_with_exact"]
    print(f"SmolLM2 IOI {family}: correlation_with_exact = {rho:.4f} (documented {documented})")
    assert abs(pearson(r["values"], r["exact_values"]) - rho) < 1e-6, (rho, cmd)
    assert rho > 0.5 and abs(rho - documented) < 0.01, f"correlation {rho:.4f}, documented {documented}\nrepro: {cmd}"


@requires_smol
def test_smollm_attribution_ioi(scalpel, smol, smol_ref, tmp_path):
    """IOI on SmolLM2, attn_out: correlation with the exact sweep reported and > 0.5; two cells of the
    estimate against the float64 first-order reference."""
    m = smol_ref
    clean, corrupt = IOI_CLEAN, IOI_CORRUPT
    r, cmd = cli_attribution(scalpel, smol, clean, corrupt, " Mary", " John", "attn_out", "logit_diff_norm")
    got_est, got_exact = np.array(r["values"], np.float64), np.array(r["exact_values"], np.float64)
    assert got_est.shape == (m.cfg["n_layers"], 14), got_est.shape
    rho = r["correlation_with_exact"]
    print(f"SmolLM2 IOI attn_out: correlation_with_exact = {rho:.4f}")
    assert abs(pearson(got_est, got_exact) - rho) < 1e-6, (rho, pearson(got_est, got_exact), cmd)
    assert rho > 0.5, f"correlation_with_exact {rho} <= 0.5\nrepro: {cmd}"
    clean_ids, corrupt_ids = m.tokenizer.encode(clean), m.tokenizer.encode(corrupt)
    a, w = m.tokenizer.encode(" Mary")[0], m.tokenizer.encode(" John")[0]
    # the two cells with the largest first-order change among the later layers (cheap to run from there)
    late = 20
    d = np.abs(got_est[late:] - (got_est[late:].mean()))
    flat = np.argsort(-d.ravel())[:2]
    cells = [(late + int(i) // 14, int(i) % 14) for i in flat]
    est, exact, base = ref_attribution(m, clean_ids, corrupt_ids, "attn_out", "logit_diff_norm", a, w, cells=cells)
    for (l, c) in cells:
        bound = 1e-3 * max(1.0, abs(est[(l, c)]))
        print(f"cell L{l} P{c}: estimate {got_est[l, c]:.5f} reference {est[(l, c)]:.5f}; exact {got_exact[l, c]:.5f} "
              f"reference {exact[(l, c)]:.5f}")
        assert abs(got_est[l, c] - est[(l, c)]) <= bound, (l, c, got_est[l, c], est[(l, c)], cmd)
        assert abs(got_exact[l, c] - exact[(l, c)]) <= SMOL_TOL, (l, c, got_exact[l, c], exact[(l, c)], cmd)
