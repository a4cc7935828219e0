"""`scalpel patch` against a naive NumPy patching sweep.

The reference runs one forward pass per cell (float64, `ref_model.forward_hooked`):
the base run with one activation replaced by the source run's value (a
position of resid_pre / resid_mid / resid_post / attn_out / mlp_out, a
head of attn.hook_z over every position, or a head of attn.hook_z at one
position: head_z_pos, rows layer x head (row r = layer r // n_heads, head
r % n_heads), columns positions). Denoising: base = corrupted,
source = clean; noising: base = clean, source = corrupted. Metrics on the
last position's logits, answer a and wrong w (first token of each string):
  logit_diff       LD = logit[a] - logit[w]
  logit_diff_norm  (LD - LD_corrupt) / (LD_clean - LD_corrupt)
  prob             softmax(logits)[a]
  kl               KL(clean || patched)
Both --strategy fast and naive must equal it (1e-4 on tiny models, 1e-3 on SmolLM2).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import ref_model
from conftest import repro, requires_smol
from ref_model import log_softmax

TINY_TOL = 1e-4
SMOL_TOL = 1e-3
TINY_MODELS = ["gpt2", "llama_q8_0_untied"]
CLEAN = "The dog sleeps in the sun."
CORRUPT = "The dog sweeps in the sun."  # same token length, differs at position 3
FAMILIES = {
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
    "head_z": "attn.hook_z",
    "head_z_pos": "attn.hook_z",
}
METRICS = ["logit_diff_norm", "logit_diff", "prob", "kl"]


# ---------------------------------------------------------------- reference
def metric_values(logits, a, w, clean_logits, corrupt_logits):
    """{metric: value} for last-position logits [vocab]."""
    ld = lambda x: x[a] - x[w]  # noqa: E731
    lp_clean = log_softmax(clean_logits)
    lp = log_softmax(logits)
    return {
        "logit_diff": ld(logits),
        "logit_diff_norm": (ld(logits) - ld(corrupt_logits)) / (ld(clean_logits) - ld(corrupt_logits)),
        "prob": float(np.exp(lp[a])),
        "kl": float((np.exp(lp_clean) * (lp_clean - lp)).sum()),
    }


def ref_sweep(m, clean_ids, corrupt_ids, family, direction, skip_equal_prefix=False, layers=None):
    """-> (cells [rows][cols] of last-position logits, clean logits, corrupt logits).

    rows: layers, or layers x heads for head_z_pos. `layers` (default all)
    limits the cells computed; the other rows are None.

    One forward per cell. Each starts at the patched layer from the base run's
    blocks.{l}.hook_resid_pre (what comes before cannot change); the cells run
    side by side through ref_model.forward_cells. With
    skip_equal_prefix (resid families only), a position before the first
    differing token is the base run itself (source and base values are equal
    there) and is not recomputed.
    """
    L = m.cfg["n_layers"]
    site = FAMILIES[family]
    names = [f"blocks.{l}.{site}" for l in range(L)]
    pre = [f"blocks.{l}.hook_resid_pre" for l in range(L)]
    base_ids, src_ids = (corrupt_ids, clean_ids) if direction == "denoise" else (clean_ids, corrupt_ids)
    base_logits, base_h = ref_model.forward_hooked(m, base_ids, record=set(names + pre), last_only=True)
    src_logits, src_h = ref_model.forward_hooked(m, src_ids, record=set(names), last_only=True)
    clean_logits, corrupt_logits = (src_logits, base_logits) if direction == "denoise" else (base_logits, src_logits)
    H = m.cfg["n_heads"]
    heads = family == "head_z"
    per_pos_head = family == "head_z_pos"
    cols = H if heads else len(clean_ids)
    rows_per_layer = H if per_pos_head else 1
    first = next(i for i, (a, b) in enumerate(zip(clean_ids, corrupt_ids)) if a != b)
    jobs, slots = [], []
    out = [[None] * cols for _ in range(L * rows_per_layer)]
    for l in (range(L) if layers is None else layers):
        for r in range(rows_per_layer):
            for c in range(cols):
                row = l * rows_per_layer + r
                if skip_equal_prefix and not heads and c < first:
                    out[row][c] = base_logits
                    continue

                def fn(name, x, l=l, r=r, c=c):
                    if name != names[l]:
                        return None
                    x = x.copy()
                    if heads:
                        x[:, c] = src_h[name][:, c]  # head c, every position
                    elif per_pos_head:
                        x[c, r] = src_h[name][c, r]  # head r at position c
                    else:
                        x[c] = src_h[name][c]
                    return x

                jobs.append((l, base_h[pre[l]], fn))
                slots.append((row, c))
    # one forward per cell; the cells' matrix products are batched (forward_cells), nothing is shared
    for (row, c), logits in zip(slots, ref_model.forward_cells(m, base_ids, jobs)):
        out[row][c] = logits
    return out, clean_logits, corrupt_logits


def pick_answers(m, clean_ids, corrupt_ids):
    """A printable (answer, wrong) token pair whose logit difference moves most between clean and corrupted."""
    lc, _ = m.forward(clean_ids, want_hooks=False)
    lx, _ = m.forward(corrupt_ids, want_hooks=False)
    tok = m.tokenizer
    cands = []
    for i in range(m.cfg["vocab"]):
        t = tok.token_text(i)
        if t and t.isprintable() and t.strip() and tok.encode(t)[:1] == [i]:
            cands.append(i)
    cands = np.array(cands)
    d = lc[-1][cands] - lx[-1][cands]  # LD change = d[a] - d[w]
    a, w = int(cands[np.argmax(d)]), int(cands[np.argmin(d)])
    return a, w, tok.token_text(a), tok.token_text(w)


# ---------------------------------------------------------------- CLI
def cli_patch(scalpel, path, *args, timeout=300):
    r = scalpel.run("patch", "--model", path, *args, "--json", timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}: {repro(r.cmd)}\nstderr: {r.stderr[-1500:]}"
    assert "panicked" not in r.stderr, r.stderr
    out = json.loads(r.stdout)
    out["_cmd"] = repro(r.cmd)
    return out


def check_matrix(got, want, tol, what):
    g = np.array(got["values"], dtype=np.float64)
    assert g.shape == want.shape, f"{what}: values shape {g.shape} want {want.shape}\nrepro: {got['_cmd']}"
    assert got["rows"] == want.shape[0] and got["cols"] == want.shape[1], (got["rows"], got["cols"], want.shape)
    known = ~np.isnan(want)  # rows the reference left out (ref_sweep's `layers`)
    err = np.where(known, np.abs(g - np.where(known, want, 0.0)), 0.0)
    worst = np.unravel_index(int(np.argmax(err)), err.shape)
    print(f"{what}: max abs err {err.max():.3g} at row {worst[0]} col {worst[1]}")
    assert err.max() <= tol, (
        f"{what}: max |scalpel - reference| = {err.max():.3g} > {tol} at row {worst[0]} col {worst[1]} "
        f"(scalpel {g[worst]:.6g}, reference {want[worst]:.6g})\nrepro: {got['_cmd']}")


def check_layout(got, m, family, t):
    """rows / cols / heads_per_layer / labels as documented (docs/interventions.md)."""
    L, H = m.cfg["n_layers"], m.cfg["n_heads"]
    if family == "head_z_pos":
        assert (got["rows"], got["cols"], got["heads_per_layer"]) == (L * H, t, H), got["_cmd"]
        assert got["row_labels"] == [f"L{r // H}.H{r % H}" for r in range(L * H)], got["row_labels"]
    else:
        assert got["heads_per_layer"] is None, got["_cmd"]
        assert got["row_labels"] == [f"L{l}" for l in range(L)], got["row_labels"]
        assert (got["rows"], got["cols"]) == (L, H if family == "head_z" else t)
    assert len(got["col_labels"]) == got["cols"]


@pytest.fixture(scope="module")
def tiny_setup(tiny, ref):
    out = {}
    for name in TINY_MODELS:
        m = ref(tiny[name]["path"])
        ci, xi = m.tokenizer.encode(CLEAN), m.tokenizer.encode(CORRUPT)
        assert len(ci) == len(xi), "the tiny prompt pair must have equal token lengths"
        out[name] = (m, ci, xi, *pick_answers(m, ci, xi))
    return out


@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_sweep(scalpel, tiny, tiny_setup, name, family, direction):
    path = tiny[name]["path"]
    m, ci, xi, a, w, a_text, w_text = tiny_setup[name]
    cells, clean_logits, corrupt_logits = ref_sweep(m, ci, xi, family, direction)
    want = {k: np.array([[metric_values(x, a, w, clean_logits, corrupt_logits)[k] for x in row] for row in cells])
            for k in METRICS}
    ref_clean = metric_values(clean_logits, a, w, clean_logits, corrupt_logits)
    ref_corrupt = metric_values(corrupt_logits, a, w, clean_logits, corrupt_logits)
    for metric in METRICS:
        for strategy in ("fast", "naive"):
            got = cli_patch(scalpel, path, "--clean", CLEAN, "--corrupt", CORRUPT, "--answer", a_text, "--wrong", w_text,
                            "--hook", family, "--metric", metric, "--strategy", strategy, "--direction", direction)
            what = f"{name} {family} {direction} {metric} {strategy}"
            assert got["hook"] == family and got["metric"] == metric, (got["hook"], got["metric"])
            check_layout(got, m, family, len(ci))
            check_matrix(got, want[metric], TINY_TOL, what)
            assert abs(got["clean"] - ref_clean[metric]) <= TINY_TOL, (what, got["clean"], ref_clean[metric])
            assert abs(got["corrupt"] - ref_corrupt[metric]) <= TINY_TOL, (what, got["corrupt"], ref_corrupt[metric])
    # sanity of the reference itself: patching the whole residual stream at a position carries it entirely
    if family == "resid_pre" and direction == "denoise":
        first = next(i for i, (x, y) in enumerate(zip(ci, xi)) if x != y)
        assert abs(want["logit_diff_norm"][0][first] - 1.0) < 1e-9


def test_tiny_sweep_answer_spelled_as_text(scalpel, tiny, tiny_setup):
    """--answer uses the first token of a longer string."""
    path = tiny["gpt2"]["path"]
    m, ci, xi, a, w, a_text, w_text = tiny_setup["gpt2"]
    g1 = cli_patch(scalpel, path, "--clean", CLEAN, "--corrupt", CORRUPT, "--answer", a_text, "--wrong", w_text,
                   "--hook", "attn_out", "--metric", "logit_diff")
    g2 = cli_patch(scalpel, path, "--clean", CLEAN, "--corrupt", CORRUPT, "--answer", a_text + " and more",
                   "--wrong", w_text + " etc", "--hook", "attn_out", "--metric", "logit_diff")
    if m.tokenizer.encode(a_text + " and more")[0] == a and m.tokenizer.encode(w_text + " etc")[0] == w:
        assert g1["values"] == g2["values"]


# ---------------------------------------------------------------- Gaussian-noise corruption
NOISE = ["--noise-positions", "1,3", "--answer", " the", "--wrong", " dog"]


@pytest.mark.parametrize("name", TINY_MODELS)
def test_noise_seeded_and_fast_equals_naive(scalpel, tiny, ref, name):
    path = tiny[name]["path"]
    m = ref(path)
    ci = m.tokenizer.encode(CLEAN)
    clean_logits, _ = m.forward(ci, want_hooks=False)
    a, w = m.tokenizer.encode(" the")[0], m.tokenizer.encode(" dog")[0]
    ld_clean = clean_logits[-1][a] - clean_logits[-1][w]
    runs = {}
    for hook in ("resid_pre", "head_z", "head_z_pos"):
        for strategy in ("fast", "naive"):
            runs[hook, strategy] = cli_patch(scalpel, path, "--clean", CLEAN, *NOISE, "--seed", 11, "--hook", hook,
                                             "--metric", "logit_diff", "--strategy", strategy)
        f, n = runs[hook, "fast"], runs[hook, "naive"]
        check_matrix(f, np.array(n["values"]), TINY_TOL, f"{name} noise {hook} fast vs naive")
        assert abs(f["clean"] - ld_clean) <= TINY_TOL, (f["clean"], ld_clean)
        assert f["corrupt"] == n["corrupt"]
    again = cli_patch(scalpel, path, "--clean", CLEAN, *NOISE, "--seed", 11, "--hook", "resid_pre",
                      "--metric", "logit_diff")
    assert again["values"] == runs["resid_pre", "fast"]["values"] and again["corrupt"] == runs["resid_pre", "fast"]["corrupt"]
    other = cli_patch(scalpel, path, "--clean", CLEAN, *NOISE, "--seed", 12, "--hook", "resid_pre",
                      "--metric", "logit_diff")
    assert other["corrupt"] != again["corrupt"], "a different seed gives the same corrupted run"
    # resid_pre at layer 0 is the (noised) input: patching a noised position's clean value back, or any
    # unnoised position, is exact bookkeeping the reference can check without knowing the noise
    v = np.array(again["values"])
    corrupt = again["corrupt"]
    for p in range(len(ci)):
        if p in (1, 3):
            continue
        assert abs(v[0][p] - corrupt) <= TINY_TOL, (p, v[0][p], corrupt)
    assert abs(corrupt - ld_clean) > 1e-3, "noise did not change the run: weak test"


@pytest.mark.parametrize("name", TINY_MODELS)
def test_noise_one_position_layer0_restores_clean(scalpel, tiny, ref, name):
    path = tiny[name]["path"]
    m = ref(path)
    ci = m.tokenizer.encode(CLEAN)
    clean_logits, _ = m.forward(ci, want_hooks=False)
    a, w = m.tokenizer.encode(" the")[0], m.tokenizer.encode(" dog")[0]
    ld_clean = clean_logits[-1][a] - clean_logits[-1][w]
    for direction in ("denoise", "noise"):
        g = cli_patch(scalpel, path, "--clean", CLEAN, "--noise-positions", "2", "--answer", " the", "--wrong", " dog",
                      "--seed", 5, "--hook", "resid_pre", "--metric", "logit_diff", "--direction", direction)
        v = np.array(g["values"])
        if direction == "denoise":  # clean value at the only noised position: the clean run
            assert abs(v[0][2] - ld_clean) <= TINY_TOL, (v[0][2], ld_clean, g["_cmd"])
            assert all(abs(v[0][p] - g["corrupt"]) <= TINY_TOL for p in range(len(ci)) if p != 2)
        else:  # noise into the clean run anywhere but position 2 changes nothing
            assert all(abs(v[0][p] - ld_clean) <= TINY_TOL for p in range(len(ci)) if p != 2), v[0]
            assert abs(v[0][2] - g["corrupt"]) <= TINY_TOL
        # positions before the noised one cannot matter at any layer (causality)
        for l in range(v.shape[0]):
            for p in range(2):
                assert abs(v[l][p] - (g["corrupt"] if direction == "denoise" else ld_clean)) <= TINY_TOL, (l, p)


def test_noise_std_zero_is_clean(scalpel, tiny, ref):
    path = tiny["gpt2"]["path"]
    m = ref(path)
    ci = m.tokenizer.encode(CLEAN)
    lc, _ = m.forward(ci, want_hooks=False)
    a, w = m.tokenizer.encode(" the")[0], m.tokenizer.encode(" dog")[0]
    g = cli_patch(scalpel, path, "--clean", CLEAN, *NOISE, "--noise-std", 0, "--hook", "mlp_out", "--metric", "logit_diff")
    assert np.abs(np.array(g["values"]) - (lc[-1][a] - lc[-1][w])).max() <= TINY_TOL
    assert g["clean"] == g["corrupt"]


# ---------------------------------------------------------------- SmolLM2
@requires_smol
def test_smollm_resid_pre_fast(scalpel, smol, smol_ref):
    m = smol_ref
    clean, corrupt = "The capital of France is", "The capital of Italy is"
    ci, xi = m.tokenizer.encode(clean), m.tokenizer.encode(corrupt)
    assert len(ci) == len(xi)
    a, w = m.tokenizer.encode(" Paris")[0], m.tokenizer.encode(" Rome")[0]
    cells, lc, lx = ref_sweep(m, ci, xi, "resid_pre", "denoise", skip_equal_prefix=True)
    want = np.array([[metric_values(x, a, w, lc, lx)["logit_diff_norm"] for x in row] for row in cells])
    got = cli_patch(scalpel, smol, "--clean", clean, "--corrupt", corrupt, "--answer", " Paris", "--wrong", " Rome",
                    "--hook", "resid_pre", "--metric", "logit_diff_norm", "--strategy", "fast")
    check_matrix(got, want, SMOL_TOL, "SmolLM2 resid_pre logit_diff_norm fast")
    assert abs(got["clean"] - 1.0) < 1e-6 and abs(got["corrupt"]) < 1e-6


@pytest.mark.parametrize("name", TINY_MODELS)
def test_head_z_pos_causality(scalpel, tiny, tiny_setup, name):
    """A head patched at a position before the first differing token is the base run, exactly (the fast
    strategy does not recompute it); every cell of the last position is computed."""
    path = tiny[name]["path"]
    m, ci, xi, a, w, a_text, w_text = tiny_setup[name]
    got = cli_patch(scalpel, path, "--clean", CLEAN, "--corrupt", CORRUPT, "--answer", a_text, "--wrong", w_text,
                    "--metric", "logit_diff", "--hook", "head_z_pos")
    v = np.array(got["values"])
    first = next(i for i, (x, y) in enumerate(zip(ci, xi)) if x != y)
    assert first > 0 and np.all(v[:, :first] == got["corrupt"]), "cells before the first differing token moved"
    assert got["computed_cells"] <= v.shape[0] * (len(ci) - first), got["computed_cells"]
    assert np.any(v[:, -1] != got["corrupt"])


@requires_smol
def test_smollm_head_z_pos(scalpel, smol, smol_ref):
    """head_z_pos on SmolLM2 (30 layers x 9 heads, GQA) against the reference at the first and last layers,
    fast and naive."""
    m = smol_ref
    clean, corrupt = "The capital of France is", "The capital of Italy is"
    ci, xi = m.tokenizer.encode(clean), m.tokenizer.encode(corrupt)
    a, w = m.tokenizer.encode(" Paris")[0], m.tokenizer.encode(" Rome")[0]
    L, H = m.cfg["n_layers"], m.cfg["n_heads"]
    layers = [0, L - 1]
    cells, lc, lx = ref_sweep(m, ci, xi, "head_z_pos", "denoise", skip_equal_prefix=True, layers=layers)
    want = np.array([[np.nan if x is None else metric_values(x, a, w, lc, lx)["logit_diff_norm"] for x in row]
                     for row in cells])
    got = cli_patch(scalpel, smol, "--clean", clean, "--corrupt", corrupt, "--answer", " Paris", "--wrong", " Rome",
                    "--hook", "head_z_pos", "--metric", "logit_diff_norm", "--strategy", "fast")
    check_layout(got, m, "head_z_pos", len(ci))
    check_matrix(got, want, SMOL_TOL, "SmolLM2 head_z_pos logit_diff_norm fast (layers 0 and last)")
    assert abs(got["clean"] - 1.0) < 1e-6 and abs(got["corrupt"]) < 1e-6


# ---------------------------------------------------------------- bad input
def expect_patch_error(scalpel, path, args, where, what):
    r = scalpel.run("patch", "--model", path, *args, "--json", timeout=60)
    shown = f"repro: {repro(r.cmd)}\nstderr: {r.stderr.strip()[:600]}"
    assert r.returncode != 0, f"exit 0 on bad input\n{shown}"
    assert "panicked" not in r.stderr, f"panic\n{shown}"
    low = r.stderr.lower()
    assert any(x.lower() in low for x in where), f"stderr names none of {where}\n{shown}"
    assert any(x.lower() in low for x in what), f"stderr names none of {what}\n{shown}"


BASE = ["--clean", CLEAN, "--corrupt", CORRUPT, "--answer", " the", "--wrong", " dog"]
BAD_PATCH = [
    ("corrupt_other_length", ["--clean", CLEAN, "--corrupt", "The dog", "--answer", " the", "--wrong", " dog"],
     ["corrupt"], ["tokens", "length"]),
    ("answer_tokenizes_to_nothing", ["--clean", CLEAN, "--corrupt", CORRUPT, "--answer", "", "--wrong", " dog"],
     ["answer"], ["nothing", "empty"]),
    ("wrong_tokenizes_to_nothing", ["--clean", CLEAN, "--corrupt", CORRUPT, "--answer", " the", "--wrong", ""],
     ["wrong"], ["nothing", "empty"]),
    ("empty_clean", ["--clean", "", "--corrupt", "", "--answer", " the", "--wrong", " dog"], ["clean"], ["empty", "no tokens"]),
    ("unknown_hook", BASE + ["--hook", "resid_middle"], ["resid_middle", "hook"], ["not one of", "unknown"]),
    ("unknown_metric", BASE + ["--metric", "accuracy"], ["accuracy", "metric"], ["not one of", "unknown"]),
    ("unknown_strategy", BASE + ["--strategy", "fastest"], ["strategy"], ["not one of", "unknown"]),
    ("unknown_direction", BASE + ["--direction", "sideways"], ["direction"], ["not one of", "unknown"]),
    ("same_answer_and_wrong", ["--clean", CLEAN, "--corrupt", CORRUPT, "--answer", " the", "--wrong", " the"],
     ["answer", "wrong"], ["same"]),
    ("no_corruption", ["--clean", CLEAN, "--answer", " the", "--wrong", " dog"], ["corrupt", "noise"], ["give", "missing"]),
    ("both_corruptions", BASE + ["--noise-positions", "1"], ["corrupt", "noise"], ["cannot be used", "conflict"]),
    ("identical_runs_norm", ["--clean", CLEAN, "--corrupt", CLEAN, "--answer", " the", "--wrong", " dog"],
     ["logit_diff", "logit difference"], ["undefined", "same"]),
    ("noise_position_out_of_range", ["--clean", CLEAN, "--noise-positions", "1,40", "--answer", " the", "--wrong", " dog"],
     ["noise", "40"], ["range"]),
    ("noise_position_not_a_number", ["--clean", CLEAN, "--noise-positions", "1,x", "--answer", " the", "--wrong", " dog"],
     ["noise-positions"], ["not a position", "'x'"]),
    ("noise_std_negative", ["--clean", CLEAN, "--noise-positions", "1", "--noise-std=-1", "--answer", " the",
                            "--wrong", " dog"], ["std"], [">= 0", "negative", "finite"]),
    ("noise_std_nan", ["--clean", CLEAN, "--noise-positions", "1", "--noise-std", "NaN", "--answer", " the",
                       "--wrong", " dog"], ["std"], ["finite", "nan"]),
    ("noise_std_inf", ["--clean", CLEAN, "--noise-positions", "1", "--noise-std", "inf", "--answer", " the",
                       "--wrong", " dog"], ["std"], ["finite", "inf"]),
]


@pytest.mark.parametrize("args,where,what", [pytest.param(a, w, x, id=i) for i, a, w, x in BAD_PATCH])
def test_bad_patch_input(scalpel, tiny, args, where, what):
    expect_patch_error(scalpel, tiny["llama_q8_0_untied"]["path"], args, where, what)
