"""Readouts (`scalpel lens`, `dla`, `attention`, `neuron`, `monitor`) against an
independent NumPy implementation on the reference forward pass (float64).

Conventions checked (docs/readouts.md):
  * lens: row "embed" decodes blocks.0.hook_resid_pre, row "L{l}" decodes
    blocks.{l}.hook_resid_post, each through the final norm (the model's own,
    weights as stored) and the unembedding; rank = 1 + #tokens with a higher
    logit; kl_to_final = KL(model's next-token distribution || decoded).
  * dla: final-norm scale frozen from the final residual at the position,
    component c -> (w * (c - mean c) / s) . (W_U[a] - W_U[b]) (no centering for
    RMSNorm), heads z_h @ W_O[:, h]^T, attention output bias and ln_final bias
    (GPT-2) as their own components; the components sum to the real logit diff.
  * neuron: scores = W_U @ W_down[:, n] (optionally * ln_final weight, centred
    first for LayerNorm); activations = mlp.hook_post[:, n] / hook_pre / hook_pre_linear.
  * monitor: projection = h . d / |d| at the hook for every token (prompt and
    generated, the last generated token included).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ids_arg, requires_smol
from ref_model import layernorm, log_softmax, rmsnorm, softmax

TINY_IDS = [5, 100, 260, 37, 299, 12, 80, 255, 1]
TINY_MODELS = ["llama_q8_0_untied", "llama_f32_tied", "llama_hf", "gpt2"]
IOI = "When Mary and John went to the store, John gave a drink to"


# ---------------------------------------------------------------- NumPy reference readouts
def final_norm_parts(m):
    """(kind, weight, bias, W_U [vocab, d])"""
    if m.arch == "llama":
        return "rms", m.w["norm_f"], None, m.w["lm_head"]
    return "layer", m.w["ln_f.weight"], m.w["ln_f.bias"], m.w["wte"]


def final_norm(m, x):
    if m.arch == "llama":
        return rmsnorm(x, m.w["norm_f"], m.cfg["eps"])
    return layernorm(x, m.w["ln_f.weight"], m.w["ln_f.bias"], m.cfg["eps"])


def head_out_weights(m, l):
    """[n_heads, d_head, d_model]: head h writes z_h @ W[h] to the residual stream; and the output bias."""
    H, hd, d = m.cfg["n_heads"], m.cfg["d_head"], m.cfg["d_model"]
    L = m.w["layers"][l]
    if m.arch == "llama":
        return L["wo"].T.reshape(H, hd, d), None          # wo is [out, in]
    return L["attn.c_proj.weight"].reshape(H, hd, d), L["attn.c_proj.bias"]  # Conv1D [in, out]


def neuron_out(m, l, n):
    L = m.w["layers"][l]
    if m.arch == "llama":
        return L["w_down"][:, n]                          # [out, in]
    return L["mlp.c_proj.weight"][n, :]                   # Conv1D [in, out]


def ref_lens(m, ids):
    """{label: log-probs [pos, vocab]} and the model's log-probs."""
    logits, hooks = m.forward(ids)
    _, _, _, WU = final_norm_parts(m)
    rows = {"embed": hooks["blocks.0.hook_resid_pre"]}
    for l in range(m.cfg["n_layers"]):
        rows[f"L{l}"] = hooks[f"blocks.{l}.hook_resid_post"]
    out = {k: log_softmax(final_norm(m, x) @ WU.T) for k, x in rows.items()}
    return out, log_softmax(logits)


def ref_dla(m, ids, answer, wrong, pos=-1):
    logits, hooks = m.forward(ids)
    kind, w, b, WU = final_norm_parts(m)
    nl = m.cfg["n_layers"]
    x = hooks[f"blocks.{nl - 1}.hook_resid_post"][pos]
    eps = m.cfg["eps"]
    if kind == "rms":
        s = np.sqrt(np.mean(x * x) + eps)
    else:
        s = np.sqrt(np.var(x) + eps)
    g = WU[answer] - (WU[wrong] if wrong is not None else 0.0)

    def through(c):
        if kind == "layer":
            c = c - c.mean()
        return float((c * w / s) @ g)

    comp = {"embed": through(hooks["hook_embed"][pos])}
    if "hook_pos_embed" in hooks:
        comp["pos_embed"] = through(hooks["hook_pos_embed"][pos])
    for l in range(nl):
        W, bias = head_out_weights(m, l)
        z = hooks[f"blocks.{l}.attn.hook_z"][pos]           # [H, hd]
        for h in range(m.cfg["n_heads"]):
            comp[f"L{l}H{h}"] = through(z[h] @ W[h])
        if bias is not None:
            comp[f"L{l}.attn_bias"] = through(bias)
        comp[f"L{l}.mlp"] = through(hooks[f"blocks.{l}.hook_mlp_out"][pos])
    if b is not None:
        comp["ln_final.bias"] = float(b @ g)
    total = float(logits[pos, answer] - (logits[pos, wrong] if wrong is not None else 0.0))
    return comp, total, float(s)


def ref_neuron_scores(m, l, n, through_norm):
    kind, w, _, WU = final_norm_parts(m)
    v = neuron_out(m, l, n).astype(np.float64)
    if through_norm:
        if kind == "layer":
            v = v - v.mean()
        v = v * w
    return WU @ v


def first_token(m, text):
    ids = m.tokenizer.encode(text)
    skip = len(m.tokenizer.encode(""))
    return ids[skip]


# ---------------------------------------------------------------- comparisons
def check_lens(r, m, ids, atol, target=None, layers=None):
    want, final = ref_lens(m, ids)
    worst = 0.0
    for row in r["rows"]:
        lp = want[row["label"]]
        assert row["hook"] == ("blocks.0.hook_resid_pre" if row["label"] == "embed"
                               else f"blocks.{row['layer']}.hook_resid_post")
        for cell in row["cells"]:
            p = cell["position"]
            probs = np.exp(lp[p])
            got_p = np.array([t["prob"] for t in cell["top"]])
            # the listed tokens carry their reference probabilities, and they are the top ones
            ref_of_listed = probs[[t["id"] for t in cell["top"]]]
            worst = max(worst, float(np.abs(got_p - ref_of_listed).max()))
            assert np.allclose(got_p, np.sort(probs)[::-1][: len(got_p)], atol=atol), (row["label"], p)
            t0 = cell["top"][0]
            for t in cell["top"]:  # logit differences are log-prob differences
                assert abs((t["logit"] - t0["logit"]) - (lp[p][t["id"]] - lp[p][t0["id"]])) < 1e-3
            ent = float(-(probs * lp[p]).sum())
            kl = float((np.exp(final[p]) * (final[p] - lp[p])).sum())
            assert abs(cell["entropy"] - ent) < atol * 10 + 1e-4 * ent, (row["label"], p, cell["entropy"], ent)
            assert abs(cell["kl_to_final"] - kl) < atol * 10 + 1e-4 * kl, (row["label"], p, cell["kl_to_final"], kl)
            if target is not None:
                t = cell["target"]
                assert abs(t["prob"] - probs[target]) < atol
                assert abs(t["logprob"] - lp[p][target]) < atol * 10 + 1e-4 * abs(lp[p][target])
                higher = int((lp[p] > lp[p][target]).sum())
                near = int((np.abs(lp[p] - lp[p][target]) < 1e-4).sum())
                assert abs(t["rank"] - (1 + higher)) <= near, (t["rank"], 1 + higher)
    return worst


def check_dla(r, m, ids, answer, wrong, atol):
    comp, total, s = ref_dla(m, ids, answer, wrong)
    got = {c["name"]: c["value"] for c in r["components"]}
    assert set(got) == set(comp), sorted(set(got) ^ set(comp))
    err = max(abs(got[k] - comp[k]) for k in comp)
    scale = max(1.0, max(abs(v) for v in comp.values()))
    assert err <= atol * scale, f"max component error {err:.3g}"
    assert abs(r["total"] - total) <= atol * max(1.0, abs(total))
    assert abs(r["norm_scale"] - s) <= 1e-5 * s + 1e-6
    # the decomposition is exact once the scale is frozen
    assert abs(sum(comp.values()) - total) < 1e-9 * max(1.0, abs(total))
    assert abs(r["sum_of_components"] - r["total"]) <= atol * max(1.0, abs(total)), (r["sum_of_components"], r["total"])
    assert abs(r["unexplained"]) <= atol * max(1.0, abs(total))
    for lay in r["layers"]:
        heads = [got[f"L{lay['layer']}H{h}"] for h in range(m.cfg["n_heads"])]
        assert lay["heads"] == pytest.approx(heads, abs=1e-6)
        bias = lay["attn_bias"] or 0.0
        assert abs(sum(heads) + bias - lay["attn_out"]) <= atol * scale
    return err


# ---------------------------------------------------------------- tiny models
@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_lens(scalpel, tiny, ref, name):
    path = tiny[name]["path"]
    m = ref(path)
    target = 100
    r = scalpel.json("lens", "--model", path, "--ids", ids_arg(TINY_IDS), "--top-k", 4,
                     "--target", m.tokenizer.decode([target]))
    tgt = r["target"]["id"]
    assert [row["label"] for row in r["rows"]] == ["embed"] + [f"L{l}" for l in range(m.cfg["n_layers"])]
    assert r["positions"] == list(range(len(TINY_IDS)))
    assert r["ids"] == TINY_IDS
    err = check_lens(r, m, TINY_IDS, atol=1e-4, target=tgt)
    print(f"{name}: lens max prob err {err:.2g}")


def test_tiny_lens_selection(scalpel, tiny, ref):
    path = tiny["llama_f32_tied"]["path"]
    m = ref(path)
    r = scalpel.json("lens", "--model", path, "--ids", ids_arg(TINY_IDS), "--layers", "1", "--positions", "0,-1",
                     "--no-embed")
    assert [row["label"] for row in r["rows"]] == ["L1"]
    assert r["positions"] == [0, len(TINY_IDS) - 1]
    assert [c["position"] for c in r["rows"][0]["cells"]] == [0, len(TINY_IDS) - 1]
    check_lens(r, m, TINY_IDS, atol=1e-4)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_lens_final_is_the_model(scalpel, tiny, name):
    """The last layer's lens row is the model's own next-token distribution."""
    path = tiny[name]["path"]
    r = scalpel.json("lens", "--model", path, "--ids", ids_arg(TINY_IDS), "--top-k", 5, "--no-embed")
    lg = np.array(scalpel.json("logits", "--model", path, "--ids", ids_arg(TINY_IDS), "--full")["logits"])
    probs = softmax(lg.astype(np.float64))
    for cell in r["rows"][-1]["cells"]:
        p = cell["position"]
        assert cell["top"][0]["id"] == int(np.argmax(lg[p]))
        got = np.array([t["prob"] for t in cell["top"]])
        assert np.allclose(got, probs[p][[t["id"] for t in cell["top"]]], atol=1e-6)
        assert cell["kl_to_final"] < 1e-6


@pytest.mark.parametrize("name", TINY_MODELS + ["llama_kquant_untied"])
def test_tiny_dla(scalpel, tiny, ref, name):
    path = tiny[name]["path"]
    m = ref(path)
    a, w = first_token(m, "x"), first_token(m, "y")
    r = scalpel.json("dla", "--model", path, "--ids", ids_arg(TINY_IDS), "--answer", "x", "--wrong", "y")
    assert (r["answer"]["id"], r["wrong"]["id"]) == (a, w)
    assert r["metric"] == "logit_diff" and r["position"] == len(TINY_IDS) - 1
    assert r["norm"] == ("rms" if m.arch == "llama" else "layer")
    err = check_dla(r, m, TINY_IDS, a, w, atol=1e-4)
    print(f"{name}: dla max component err {err:.2g}, total {r['total']:.4f}, unexplained {r['unexplained']:.2g}")


def test_tiny_dla_single_logit_and_position(scalpel, tiny, ref):
    path = tiny["gpt2"]["path"]
    m = ref(path)
    a = first_token(m, "x")
    r = scalpel.json("dla", "--model", path, "--ids", ids_arg(TINY_IDS), "--answer", "x", "--position", 3)
    assert r["metric"] == "logit" and r["wrong"] is None and r["position"] == 3
    comp, total, _ = ref_dla(m, TINY_IDS, a, None, pos=3)
    got = {c["name"]: c["value"] for c in r["components"]}
    assert max(abs(got[k] - comp[k]) for k in comp) < 1e-4 * max(1.0, max(map(abs, comp.values())))
    assert abs(r["total"] - total) < 1e-4 * max(1.0, abs(total))


@pytest.mark.parametrize("name", ["llama_q8_0_untied", "gpt2"])
def test_tiny_attention(scalpel, tiny, ref, name):
    path = tiny[name]["path"]
    m = ref(path)
    _, hooks = m.forward(TINY_IDS)
    r = scalpel.json("attention", "--model", path, "--ids", ids_arg(TINY_IDS))
    assert [x["layer"] for x in r["layers"]] == list(range(m.cfg["n_layers"]))
    assert len(r["tokens"]) == len(TINY_IDS)
    for lay in r["layers"]:
        want = hooks[f"blocks.{lay['layer']}.attn.hook_pattern"]
        assert [h["head"] for h in lay["heads"]] == list(range(m.cfg["n_heads"]))
        for h in lay["heads"]:
            got = np.array(h["pattern"])
            assert got.shape == (len(TINY_IDS), len(TINY_IDS))
            assert np.abs(got - want[h["head"]]).max() < 1e-5
    one = scalpel.json("attention", "--model", path, "--ids", ids_arg(TINY_IDS), "--layers", "1", "--heads", "2,0")
    assert [x["layer"] for x in one["layers"]] == [1]
    assert [h["head"] for h in one["layers"][0]["heads"]] == [2, 0]
    assert np.abs(np.array(one["layers"][0]["heads"][0]["pattern"]) - hooks["blocks.1.attn.hook_pattern"][2]).max() < 1e-5


@pytest.mark.parametrize("name", ["llama_q8_0_untied", "llama_hf", "gpt2"])
@pytest.mark.parametrize("through", [False, True])
def test_tiny_neuron(scalpel, tiny, ref, name, through):
    path = tiny[name]["path"]
    m = ref(path)
    l, n, k = 1, 37, 6
    args = ["neuron", "--model", path, "--layer", l, "--neuron", n, "--top-k", k, "--ids", ids_arg(TINY_IDS)]
    r = scalpel.json(*args, *(["--through-norm"] if through else []))
    scores = ref_neuron_scores(m, l, n, through)
    order = np.argsort(-scores, kind="stable")
    got_up = np.array([t["score"] for t in r["promoted"]])
    got_dn = np.array([t["score"] for t in r["suppressed"]])
    assert np.allclose(got_up, scores[order[:k]], atol=1e-4)
    assert np.allclose(got_dn, scores[order[::-1][:k]], atol=1e-4)
    assert np.allclose(scores[[t["id"] for t in r["promoted"]]], got_up, atol=1e-4)
    assert np.allclose(scores[[t["id"] for t in r["suppressed"]]], got_dn, atol=1e-4)
    assert abs(r["output_norm"] - np.linalg.norm(neuron_out(m, l, n))) < 1e-4
    assert r["hook"] == f"blocks.{l}.mlp.hook_post" and r["through_final_norm"] == through
    _, hooks = m.forward(TINY_IDS)
    act = r["activations"]
    assert np.allclose(act["post"], hooks[f"blocks.{l}.mlp.hook_post"][:, n], atol=1e-4)
    assert np.allclose(act["pre"], hooks[f"blocks.{l}.mlp.hook_pre"][:, n], atol=1e-4)
    if m.arch == "llama":
        assert np.allclose(act["pre_linear"], hooks[f"blocks.{l}.mlp.hook_pre_linear"][:, n], atol=1e-4)
    else:
        assert act["pre_linear"] is None


def check_monitor(r, m, prompt_ids, hook, direction, atol):
    gen = r["generated_ids"]
    all_ids = list(prompt_ids) + gen
    assert [row["id"] for row in r["rows"]] == all_ids
    assert [row["position"] for row in r["rows"]] == list(range(len(all_ids)))
    assert [row["generated"] for row in r["rows"]] == [False] * len(prompt_ids) + [True] * len(gen)
    _, hooks = m.forward(all_ids)
    h = hooks[hook]
    d = np.asarray(direction, np.float64)
    proj = h @ d / np.linalg.norm(d)
    norms = np.linalg.norm(h, axis=-1)
    got = np.array([row["projection"] for row in r["rows"]])
    scale = max(1.0, float(np.abs(proj).max()))
    err = float(np.abs(got - proj).max())
    assert err <= atol * scale, f"projection err {err:.3g}"
    assert np.allclose([row["norm"] for row in r["rows"]], norms, atol=atol * max(1.0, norms.max()))
    assert np.allclose([row["cosine"] for row in r["rows"]], proj / norms, atol=atol * 10)
    assert abs(r["direction_norm"] - np.linalg.norm(d)) < 1e-4 * np.linalg.norm(d)
    assert abs(r["mean_prompt"] - proj[: len(prompt_ids)].mean()) <= atol * scale
    if gen:
        assert abs(r["mean_generated"] - proj[len(prompt_ids):].mean()) <= atol * scale
    return err


@pytest.mark.parametrize("name,hook", [("llama_q8_0_untied", "blocks.1.hook_resid_post"),
                                       ("llama_hf", "blocks.0.mlp.hook_post"),
                                       ("gpt2", "blocks.1.hook_resid_mid")])
def test_tiny_monitor(scalpel, tiny, ref, name, hook, tmp_path):
    from test_generate import check_greedy

    path = tiny[name]["path"]
    m = ref(path)
    width = m.cfg["d_mlp"] if "mlp.hook_post" in hook else m.cfg["d_model"]
    direction = np.random.default_rng(3).normal(size=width).round(4)
    f = tmp_path / "dir.json"
    f.write_text(json.dumps({"vector": direction.tolist()}))
    prompt = [5, 100, 260]
    r = scalpel.json("monitor", "--model", path, "--ids", ids_arg(prompt), "--hook", hook, "--direction", f,
                     "--max-new-tokens", 6, "--no-stop-at-eos")
    assert r["hook"] == hook and r["prompt_len"] == 3 and len(r["generated_ids"]) == 6
    check_greedy(m, r["generated_ids"], prompt, 6)
    err = check_monitor(r, m, prompt, hook, direction, atol=1e-4)
    print(f"{name} {hook}: monitor max projection err {err:.2g}")


def test_tiny_monitor_prompt_pair_and_document(scalpel, tiny, ref, tmp_path):
    """--plus/--minus builds the direction from the hook's last-position values; a document's literal vector works too."""
    path = tiny["llama_f32_tied"]["path"]
    m = ref(path)
    hook = "blocks.0.hook_resid_post"
    r = scalpel.json("monitor", "--model", path, "--ids", ids_arg(TINY_IDS), "--hook", hook,
                     "--plus", "Hello world", "--minus", "The dog", "--max-new-tokens", 3, "--no-stop-at-eos")
    hp = m.forward(m.tokenizer.encode("Hello world"))[1][hook][-1]
    hm = m.forward(m.tokenizer.encode("The dog"))[1][hook][-1]
    check_monitor(r, m, TINY_IDS, hook, hp - hm, atol=1e-4)
    d = np.linspace(-1, 1, m.cfg["d_model"])
    doc = {"version": 1, "interventions": [{"hook": hook, "op": "add", "vector": d.tolist(), "scale": 0.0}]}
    f = tmp_path / "doc.json"
    f.write_text(json.dumps(doc))
    r = scalpel.json("monitor", "--model", path, "--ids", ids_arg(TINY_IDS), "--hook", hook, "--direction", f,
                     "--max-new-tokens", 0)
    assert r["generated_ids"] == [] and r["mean_generated"] is None
    check_monitor(r, m, TINY_IDS, hook, d, atol=1e-4)


def test_tiny_readouts_under_interventions(scalpel, tiny, ref, tmp_path):
    """Readouts read the values the model used under --interventions (here: head 1 of layer 0 zeroed)."""
    path = tiny["llama_f32_untied"]["path"]
    m = ref(path)
    doc = {"version": 1, "interventions": [{"hook": "blocks.0.attn.hook_z", "op": "zero", "heads": [1]}]}
    f = tmp_path / "iv.json"
    f.write_text(json.dumps(doc))
    r = scalpel.json("dla", "--model", path, "--ids", ids_arg(TINY_IDS), "--answer", "x", "--wrong", "y",
                     "--interventions", f)
    assert r["interventions"]["applied"][0]["applications"] >= 1
    assert r["layers"][0]["heads"][1] == 0.0
    # zeroing a head's z is inside the decomposition: it still sums to the (changed) total
    assert abs(r["unexplained"]) < 1e-4 * max(1.0, abs(r["total"]))
    plain = scalpel.json("dla", "--model", path, "--ids", ids_arg(TINY_IDS), "--answer", "x", "--wrong", "y")
    assert plain["layers"][0]["heads"][1] != 0.0 and plain["total"] != r["total"]


# ---------------------------------------------------------------- SmolLM2
@requires_smol
def test_smollm_lens(scalpel, smol, smol_ref):
    m = smol_ref
    ids = m.tokenizer.encode("The capital of France is")
    r = scalpel.json("lens", "--model", smol, "--prompt", "The capital of France is", "--target", " Paris",
                     "--top-k", 5)
    assert r["ids"] == ids and len(r["rows"]) == 31
    err = check_lens(r, m, ids, atol=2e-4, target=r["target"]["id"])
    last = r["rows"][-1]["cells"][-1]
    top1 = [row["cells"][-1]["top"][0]["token"] for row in r["rows"]]
    print(f"SmolLM2 lens: max prob err {err:.2g}; top-1 at the last position per row: {top1}")
    assert last["top"][0]["token"] == " Paris" and last["target"]["rank"] == 1


@requires_smol
def test_smollm_dla(scalpel, smol, smol_ref):
    m = smol_ref
    ids = m.tokenizer.encode(IOI)
    r = scalpel.json("dla", "--model", smol, "--prompt", IOI, "--answer", " Mary", "--wrong", " John")
    err = check_dla(r, m, ids, first_token(m, " Mary"), first_token(m, " John"), atol=2e-3)
    top = sorted(r["components"], key=lambda c: -abs(c["value"]))[:5]
    print(f"SmolLM2 DLA: total {r['total']:.4f}, sum {r['sum_of_components']:.4f}, max component err {err:.2g}; "
          f"top: {[(c['name'], round(c['value'], 3)) for c in top]}")


@requires_smol
def test_smollm_attention_neuron_monitor(scalpel, smol, smol_ref):
    m = smol_ref
    ids = m.tokenizer.encode(IOI)
    _, hooks = m.forward(ids)
    r = scalpel.json("attention", "--model", smol, "--prompt", IOI, "--layers", "0,23,29", "--heads", "3,8")
    for lay in r["layers"]:
        for h in lay["heads"]:
            want = hooks[f"blocks.{lay['layer']}.attn.hook_pattern"][h["head"]]
            assert np.abs(np.array(h["pattern"]) - want).max() < 1e-4
    r = scalpel.json("neuron", "--model", smol, "--layer", 20, "--neuron", 777, "--top-k", 8, "--prompt", IOI,
                     "--through-norm")
    scores = ref_neuron_scores(m, 20, 777, True)
    order = np.argsort(-scores)
    assert np.allclose([t["score"] for t in r["promoted"]], scores[order[:8]], atol=1e-4)
    assert np.allclose([t["score"] for t in r["suppressed"]], scores[order[::-1][:8]], atol=1e-4)
    assert np.allclose(r["activations"]["post"], hooks["blocks.20.mlp.hook_post"][:, 777], atol=1e-4)
    hook = "blocks.10.hook_resid_post"
    r = scalpel.json("monitor", "--model", smol, "--prompt", "I think you are", "--hook", hook,
                     "--plus", "I love you", "--minus", "I hate you", "--max-new-tokens", 5, "--no-stop-at-eos")
    d = m.forward(m.tokenizer.encode("I love you"))[1][hook][-1] - m.forward(m.tokenizer.encode("I hate you"))[1][hook][-1]
    err = check_monitor(r, m, m.tokenizer.encode("I think you are"), hook, d, atol=1e-4)
    print(f"SmolLM2 monitor: generated {r['text']!r}, max projection err {err:.2g}")


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("args,needle", [
    (["lens", "--layers", "2"], "layer 2 is out of range"),
    (["lens", "--positions", "-20"], "position -20 is out of range"),
    (["lens", "--target", ""], "tokenizes to nothing"),
    (["attention", "--heads", "4"], "head 4 is out of range"),
    (["dla", "--answer", ""], "tokenizes to nothing"),
    (["dla", "--answer", "x", "--wrong", ""], "tokenizes to nothing"),
    (["neuron", "--layer", "0", "--neuron", "128"], "neuron 128 is out of range"),
    (["neuron", "--layer", "5", "--neuron", "0"], "layer 5 is out of range"),
    (["monitor", "--hook", "blocks.0.attn.hook_z", "--plus", "a", "--minus", "b"], "per head"),
    (["monitor", "--hook", "blocks.9.hook_resid_post", "--plus", "a", "--minus", "b"], "out of range"),
    (["monitor", "--hook", "blocks.0.hook_resid_post"], "--direction FILE or --plus"),
])
def test_bad_input(scalpel, tiny, args, needle):
    path = tiny["llama_f32_tied"]["path"]
    extra = [] if args[0] == "neuron" else ["--ids", ids_arg(TINY_IDS)]
    p = scalpel.run(*args, "--model", path, *extra)
    assert p.returncode != 0 and "panicked" not in p.stderr, p.stderr
    assert needle in p.stderr, p.stderr


def test_bad_direction_file(scalpel, tiny, tmp_path):
    path = tiny["llama_f32_tied"]["path"]
    for content, needle in [([1.0, 2.0], "has width 64"), ([0.0] * 64, "all zeros"), ({"x": 1}, "expected an array"),
                            ([1.0] * 63 + ["a"], "is not a number")]:
        f = tmp_path / "d.json"
        f.write_text(json.dumps(content))
        p = scalpel.run("monitor", "--model", path, "--ids", ids_arg(TINY_IDS), "--hook", "blocks.0.hook_resid_post",
                        "--direction", f)
        assert p.returncode != 0 and needle in p.stderr, p.stderr
    p = scalpel.run("lens", "--model", path, "--prompt", "")
    assert p.returncode != 0 and "empty prompt" in p.stderr, p.stderr
