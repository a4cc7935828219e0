"""Steering vectors, control vectors, SAEs and probes (`scalpel vector`,
`scalpel probe`, `scalpel sae`, `sae_clamp` / `{"from": "sae"}` in documents)
against independent NumPy implementations.

Reference semantics (docs/vectors.md), written here from the definitions,
not from crates/interventions/src/{vectors,probes}.rs:
  * activations: the hook's value at the last token of each prompt, from
    ref_model's float64 forward pass.
  * mean_diff: v = mean(P) - mean(N). pca: first right singular vector of the
    paired differences D = P - N (optionally centered), sign chosen so that
    mean(P).u > mean(N).u. Every method's vector is gap * u with
    gap = (mean(P) - mean(N)).u (= v for mean_diff).
  * separation per layer: Cohen's d of the projections on u (pooled, ddof 1);
    accuracy of "x.u > midpoint of the class means"; leave-one-out accuracy of
    the same rule refitted without the held-out example (pair, for pca).
  * control vectors: llama.cpp / repeng GGUF, tensor direction.{k} added to
    the output of block k = blocks.{k}.hook_resid_post (llama.cpp loader:
    data for layer k at offset n_embd*(k-1), tensors[k] applied after block
    k's residual add; direction.0 is rejected by llama.cpp).
  * SAE (SAELens): sae_in = norm(x) - b_dec*apply_b_dec_to_input; pre =
    sae_in W_enc + b_enc; standard relu(pre); jumprelu relu(pre)*[pre >
    threshold]; topk: relu of the k largest, rest 0. decode = f W_dec + b_dec,
    normalization undone. Clamp: x' = x + decode(f with f_i = v) - decode(f).
  * probes: logistic regression on features z-scored with the training
    split's mean and population std, objective mean log-loss + l2/2 |w|^2,
    solved here by primal Newton in NumPy; split taken from the CLI's output.
  * ITI: heads ranked by held-out accuracy (ties: lower held-out loss, then
    lower layer/head); shift alpha * sigma * u at attn.hook_z of the head,
    u = unit mass-mean direction on the training split, sigma = population
    std of the training projections on u.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import ref_model
from conftest import hook_array, requires_smol

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
TINY = "llama_f32_untied"

TINY_POS = ["The dog sleeps in the sun.", "I love the warm sun today", "Hello world! The cat is happy",
            "What a lovely day in the park", "She smiles at the bright sky", "We won the game, great fun",
            "The garden is green and calm", "A good friend helps you", "Music makes me feel fine",
            "The cake was sweet and soft", "Thanks, that was kind", "Sunny mornings are the best"]
TINY_NEG = ["The dog barks in the rain.", "I hate the cold rain today", "Hello world! The cat is angry",
            "What a gloomy day in the park", "She frowns at the dark sky", "We lost the game, bad luck",
            "The garden is dead and dry", "A bad friend hurts you", "Noise makes me feel sick",
            "The cake was burnt and hard", "Go away, that was rude", "Rainy mornings are the worst"]


# ---------------------------------------------------------------- helpers
def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


def last_token_acts(m, prompts, hook):
    out = []
    for p in prompts:
        _, hooks = m.forward(m.tokenizer.encode(p))
        out.append(np.asarray(hooks[hook][-1], dtype=np.float64).reshape(-1))
    return np.stack(out)


def np_direction(method, P, N, center=False):
    diff = P.mean(0) - N.mean(0)
    if method == "mean_diff":
        u = diff / np.linalg.norm(diff)
    elif method == "pca":
        D = P - N
        if center:
            D = D - D.mean(0)
        u = np.linalg.svd(D, full_matrices=False)[2][0]
    else:
        raise ValueError(method)
    if u @ diff < 0:
        u = -u
    return u


def np_scores(method, P, N, center=False):
    u = np_direction(method, P, N, center)
    pp, pn = P @ u, N @ u
    gap = pp.mean() - pn.mean()
    s = np.sqrt((((pp - pp.mean()) ** 2).sum() + ((pn - pn.mean()) ** 2).sum()) / (len(pp) + len(pn) - 2))
    t = (pp.mean() + pn.mean()) / 2
    acc = ((pp > t).sum() + (pn <= t).sum()) / (len(pp) + len(pn))
    correct = total = 0
    if method == "pca":
        for j in range(len(P)):
            keep = [i for i in range(len(P)) if i != j]
            uj = np_direction(method, P[keep], N[keep], center)
            tj = (P[keep] @ uj).mean() / 2 + (N[keep] @ uj).mean() / 2
            correct += int(P[j] @ uj > tj) + int(not N[j] @ uj > tj)
            total += 2
    else:
        for j in range(len(P) + len(N)):
            Pj = np.delete(P, j, 0) if j < len(P) else P
            Nj = N if j < len(P) else np.delete(N, j - len(P), 0)
            uj = np_direction(method, Pj, Nj, center)
            tj = ((Pj @ uj).mean() + (Nj @ uj).mean()) / 2
            x = P[j] if j < len(P) else N[j - len(P)]
            correct += int((x @ uj > tj) == (j < len(P)))
            total += 1
    return dict(u=u, vector=gap * u, norm=gap, cohens_d=gap / s, accuracy=acc, loo=correct / total)


def vector_run(scalpel, model, pos, neg, tmp_path, *extra):
    p = write_lines(tmp_path / "pos.txt", pos)
    n = write_lines(tmp_path / "neg.txt", neg)
    return scalpel.json("vector", "--model", model, "--positive", p, "--negative", n, "--full", *extra)


# ---------------------------------------------------------------- vectors vs NumPy
@pytest.mark.parametrize("method,center", [("mean_diff", False), ("pca", False), ("pca", True)])
def test_vectors_and_separation_match_numpy(scalpel, tiny, ref, tmp_path, method, center):
    path = tiny[TINY]["path"]
    m = ref(path)
    extra = ["--method", method] + (["--center"] if center else [])
    r = vector_run(scalpel, path, TINY_POS, TINY_NEG, tmp_path, *extra)
    assert len(r["layers"]) == m.cfg["n_layers"]
    for l, (row, got_v) in enumerate(zip(r["layers"], r["vectors"])):
        hook = f"blocks.{l}.hook_resid_post"
        assert row["hook"] == hook
        want = np_scores(method, last_token_acts(m, TINY_POS, hook), last_token_acts(m, TINY_NEG, hook), center)
        got_v = np.asarray(got_v)
        scale = np.abs(want["vector"]).max()
        err = np.abs(got_v - want["vector"]).max()
        cos = got_v @ want["u"] / np.linalg.norm(got_v)
        print(f"{method}{'/center' if center else ''} {hook}: max err {err:.2e} (|v|max {scale:.3g}), cos {cos:.8f}, "
              f"d {row['cohens_d']:.4f}/{want['cohens_d']:.4f}, loo {row['loo_accuracy']}/{want['loo']}")
        assert cos > 1 - 1e-6, f"{hook}: direction differs (cos {cos})"
        assert err <= 1e-4 * max(1.0, scale), f"{hook}: vector max abs err {err}"
        assert abs(row["norm"] - want["norm"]) <= 1e-4 * max(1.0, abs(want["norm"]))
        assert abs(row["cohens_d"] - want["cohens_d"]) <= 1e-4 * max(1.0, abs(want["cohens_d"]))
        assert row["accuracy"] == pytest.approx(want["accuracy"])
        assert row["loo_accuracy"] == pytest.approx(want["loo"])


def test_actadd_is_the_prompt_difference(scalpel, tiny, ref, tmp_path):
    path = tiny[TINY]["path"]
    m = ref(path)
    out = tmp_path / "v.json"
    r = scalpel.json("vector", "--model", path, "--plus", TINY_POS[0], "--minus", TINY_NEG[0],
                     "--hook", "blocks.1.hook_resid_pre", "--scale", "3", "--out", out, "--full")
    assert r["method"] == "actadd" and r["saved"] == ["blocks.1.hook_resid_pre"]
    assert r["best"] is None and r["layers"][1]["cohens_d"] is None
    want = last_token_acts(m, [TINY_POS[0]], "blocks.1.hook_resid_pre")[0] - \
        last_token_acts(m, [TINY_NEG[0]], "blocks.1.hook_resid_pre")[0]
    doc = json.load(open(out))
    assert doc["version"] == 1 and len(doc["interventions"]) == 1
    iv = doc["interventions"][0]
    assert iv["hook"] == "blocks.1.hook_resid_pre" and iv["op"] == "add" and iv["scale"] == 3
    assert np.abs(np.asarray(iv["vector"]) - want).max() < 1e-4


def test_pca_vector_source_in_a_document(scalpel, tiny, ref, tmp_path):
    """{"from": "pca"} in a document = the same vector `scalpel vector --method pca` saves."""
    path = tiny[TINY]["path"]
    m = ref(path)
    hook = "blocks.1.hook_resid_pre"
    P, N = last_token_acts(m, TINY_POS, hook), last_token_acts(m, TINY_NEG, hook)
    v = np_scores("pca", P, N)["vector"]
    doc = {"version": 1, "interventions": [{"hook": hook, "op": "add", "scale": 2.0,
                                            "vector": {"from": "pca", "positive": TINY_POS, "negative": TINY_NEG}}]}
    dp = tmp_path / "doc.json"
    dp.write_text(json.dumps(doc))
    ids = m.tokenizer.encode("The sun is warm")
    got = hook_array(scalpel.json("activations", "--model", path, "--ids", ",".join(map(str, ids)), "--hook", hook,
                                  "--interventions", dp))
    _, hooks = m.forward(ids)
    want = hooks[hook] + 2.0 * v
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())


# ---------------------------------------------------------------- control vectors (GGUF)
def write_cv(path, dirs, arch="controlvector", hint="llama"):
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_string(f"{arch}.model_hint", hint)
    w.add_uint32(f"{arch}.layer_count", len(dirs))
    for k, v in dirs.items():
        w.add_tensor(f"direction.{k}", np.asarray(v, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def test_control_vector_import_applies_at_block_output(scalpel, tiny, ref, tmp_path):
    """A repeng/llama.cpp file written with gguf.GGUFWriter: direction.1 is
    added to the output of block 1 (blocks.1.hook_resid_post), at every position."""
    path = tiny[TINY]["path"]
    m = ref(path)
    rng = np.random.default_rng(0)
    v = rng.normal(size=m.cfg["d_model"]).astype(np.float32)
    cv = write_cv(tmp_path / "cv.gguf", {1: v})
    out = tmp_path / "doc.json"
    r = scalpel.json("vector", "--import", cv, "--model", path, "--scale", "1.5", "--out", out)
    assert r["layers"] == [1] and r["hooks"] == ["blocks.1.hook_resid_post"] and r["model_hint"] == "llama"
    doc = json.load(open(out))
    iv = doc["interventions"][0]
    assert iv["op"] == "add" and iv["scale"] == 1.5 and iv.get("positions", "all") == "all"
    assert np.array_equal(np.asarray(iv["vector"], dtype=np.float32), v)
    ids = m.tokenizer.encode("The dog sleeps")
    got = np.asarray(scalpel.json("logits", "--model", path, "--ids", ",".join(map(str, ids)), "--interventions", out,
                                  "--full")["logits"])

    def fn(name, x):
        return x + 1.5 * v.astype(np.float64) if name == "blocks.1.hook_resid_post" else None

    want, _ = ref_model.forward_hooked(m, ids, fn)
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())


def test_control_vector_import_errors(scalpel, tiny, tmp_path):
    path = tiny[TINY]["path"]
    d = 64
    p = scalpel.run("vector", "--import", write_cv(tmp_path / "a.gguf", {2: np.ones(d)}), "--model", path)
    assert p.returncode != 0 and "direction.2" in p.stderr and "past the model's last block" in p.stderr
    p = scalpel.run("vector", "--import", write_cv(tmp_path / "b.gguf", {1: np.ones(d + 1)}), "--model", path)
    assert p.returncode != 0 and "d_model is 64" in p.stderr
    p = scalpel.run("vector", "--import", path, "--model", path)
    assert p.returncode != 0 and "not a control vector" in p.stderr
    p = scalpel.run("vector", "--import", write_cv(tmp_path / "c.gguf", {0: np.ones(d)}), "--model", path)
    assert p.returncode == 0 and "llama.cpp rejects layer index 0" in p.stderr


def test_control_vector_export_round_trip(scalpel, tiny, tmp_path):
    import gguf

    path = tiny[TINY]["path"]
    out = tmp_path / "v.gguf"
    r = vector_run(scalpel, path, TINY_POS, TINY_NEG, tmp_path, "--method", "mean_diff", "--out", out)
    assert any("direction.0" in w for w in r["warnings"])
    rd = gguf.GGUFReader(str(out))
    assert rd.fields["general.architecture"].contents() == "controlvector"
    assert rd.fields["controlvector.model_hint"].contents() == "llama"
    assert rd.fields["controlvector.layer_count"].contents() == 1
    tensors = {t.name: np.asarray(t.data) for t in rd.tensors}
    assert list(tensors) == ["direction.1"]  # block 0's output is left out (llama.cpp rejects direction.0)
    assert np.array_equal(tensors["direction.1"], np.asarray(r["vectors"][1], dtype=np.float32))
    # Re-import: the document holds the same vector at the same hook.
    doc_path = tmp_path / "back.json"
    scalpel.json("vector", "--import", out, "--model", path, "--out", doc_path)
    doc = json.load(open(doc_path))
    assert doc["interventions"][0]["hook"] == "blocks.1.hook_resid_post"
    assert np.array_equal(np.asarray(doc["interventions"][0]["vector"], dtype=np.float32), tensors["direction.1"])


# ---------------------------------------------------------------- SAEs
def np_sae_encode(cfg, W, x):
    x = np.asarray(x, dtype=np.float64)
    norm = cfg.get("normalize_activations", "none")
    stats = None
    if norm == "constant_norm_rescale":
        coeff = np.sqrt(cfg["d_in"]) / np.linalg.norm(x, axis=-1, keepdims=True)
        x, stats = x * coeff, ("scale", 1 / coeff)
    elif norm == "layer_norm":
        mu = x.mean(-1, keepdims=True)
        std = (x - mu).std(-1, ddof=1, keepdims=True)
        x, stats = (x - mu) / (std + 1e-5), ("ln", std, mu)
    sae_in = x - W["b_dec"] if cfg.get("apply_b_dec_to_input", True) else x
    pre = sae_in @ W["W_enc"] + W["b_enc"]
    arch = cfg["architecture"]
    if arch == "standard":
        f = np.maximum(pre, 0)
    elif arch == "jumprelu":
        f = np.maximum(pre, 0) * (pre > W["threshold"])
    else:
        k = cfg["k"]
        f = np.zeros_like(pre)
        idx = np.argsort(-pre, axis=-1, kind="stable")[:, :k]
        rows = np.arange(len(pre))[:, None]
        f[rows, idx] = np.maximum(pre[rows, idx], 0)
    return f, stats


def np_sae_decode(W, f, stats):
    out = f @ W["W_dec"] + W["b_dec"]
    if stats is not None and stats[0] == "scale":
        out = out * stats[1]
    elif stats is not None:
        out = out * stats[1] + stats[2]
    return out


def write_sae(d, cfg, seed):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    W = {"W_enc": rng.normal(size=(d_in, d_sae)) / np.sqrt(d_in), "W_dec": rng.normal(size=(d_sae, d_in)) / np.sqrt(d_sae),
         "b_enc": rng.normal(size=d_sae) * 0.1, "b_dec": rng.normal(size=d_in) * 0.1}
    if cfg["architecture"] == "jumprelu":
        W["threshold"] = np.abs(rng.normal(size=d_sae)) * 0.3
    W = {k: v.astype(np.float32) for k, v in W.items()}
    os.makedirs(d, exist_ok=True)
    save_file(W, os.path.join(d, "sae_weights.safetensors"))
    with open(os.path.join(d, "cfg.json"), "w") as f:
        json.dump(cfg, f)
    return str(d), {k: v.astype(np.float64) for k, v in W.items()}


SAE_CASES = {
    "standard": dict(architecture="standard", d_in=64, d_sae=96, hook_name="blocks.1.hook_resid_pre"),
    "standard_nobdec_rescale": dict(architecture="standard", d_in=64, d_sae=96, hook_name="blocks.0.hook_resid_post",
                                    apply_b_dec_to_input=False, normalize_activations="constant_norm_rescale"),
    "jumprelu": dict(architecture="jumprelu", d_in=64, d_sae=128, hook_name="blocks.1.hook_resid_post"),
    "jumprelu_layernorm_v6meta": dict(architecture="jumprelu", d_in=64, d_sae=80, normalize_activations="layer_norm",
                                      metadata={"hook_name": "blocks.0.hook_mlp_out"}),
    "topk": dict(architecture="topk", d_in=64, d_sae=96, k=7, hook_name="blocks.1.hook_resid_pre"),
    "topk_mlp_post": dict(architecture="topk", d_in=128, d_sae=64, k=5, hook_name="blocks.0.mlp.hook_post"),
    "hook_z_flat": dict(architecture="standard", d_in=64, d_sae=48, hook_name="blocks.1.attn.hook_z",
                        reshape_activations="hook_z"),
    "hook_z_head": dict(architecture="standard", d_in=16, d_sae=24, hook_name="blocks.0.attn.hook_z", hook_head_index=2),
}


def sae_input(m, ids, cfg):
    hook = cfg.get("hook_name") or cfg["metadata"]["hook_name"]
    _, hooks = m.forward(ids)
    x = np.asarray(hooks[hook], dtype=np.float64)
    if "hook_head_index" in cfg:
        x = x[:, cfg["hook_head_index"], :]
    return hook, x.reshape(len(ids), -1)


@pytest.mark.parametrize("case", list(SAE_CASES))
def test_sae_encode_decode_match_numpy(scalpel, tiny, ref, tmp_path, case):
    path = tiny[TINY]["path"]
    m = ref(path)
    cfg = SAE_CASES[case]
    d, W = write_sae(tmp_path / case, cfg, seed=len(case))
    ids = m.tokenizer.encode("The dog sleeps in the warm sun.")
    r = scalpel.json("sae", "--model", path, "--dir", d, "--ids", ",".join(map(str, ids)), "--full")
    hook, x = sae_input(m, ids, cfg)
    assert r["hook"] == hook and r["d_sae"] == cfg["d_sae"]
    f, stats = np_sae_encode(cfg, W, x)
    rec = np_sae_decode(W, f, stats)
    got_f, got_r = np.asarray(r["features"]), np.asarray(r["reconstruction"])
    ef = np.abs(got_f - f).max() / max(1.0, np.abs(f).max())
    er = np.abs(got_r - rec).max() / max(1.0, np.abs(rec).max())
    print(f"{case}: L0 {r['l0']}, features rel err {ef:.2e}, reconstruction rel err {er:.2e}")
    assert np.array_equal(got_f != 0, f != 0), f"{case}: active latents differ"
    assert ef < 1e-4 and er < 1e-4
    if cfg["architecture"] == "topk":
        assert max(r["l0"]) <= cfg["k"]


@pytest.mark.parametrize("case", ["standard", "jumprelu_layernorm_v6meta", "topk", "hook_z_head"])
def test_sae_clamp_through_error_term(scalpel, tiny, ref, tmp_path, case):
    path = tiny[TINY]["path"]
    m = ref(path)
    cfg = SAE_CASES[case]
    d, W = write_sae(tmp_path / case, cfg, seed=len(case))
    ids = m.tokenizer.encode("The dog sleeps in the warm sun.")
    hook, x = sae_input(m, ids, cfg)
    latent, value = 3, 4.0
    doc = {"version": 1, "interventions": [{"hook": hook, "op": "sae_clamp", "latent": latent, "value": value,
                                            "positions": [1, -1]}]}
    dp = tmp_path / "clamp.json"
    dp.write_text(json.dumps(doc))
    f, stats = np_sae_encode(cfg, W, x)
    f2 = f.copy()
    f2[:, latent] = value
    delta = np_sae_decode(W, f2, stats) - np_sae_decode(W, f, stats)
    sel = np.zeros(len(ids), dtype=bool)
    sel[[1, len(ids) - 1]] = True
    delta[~sel] = 0

    def fn(name, v):
        if name != hook:
            return None
        v = v.copy()
        if "hook_head_index" in cfg:
            v[:, cfg["hook_head_index"], :] += delta
        else:
            v += delta.reshape(v.shape)
        return v

    want_logits, rec = ref_model.forward_hooked(m, ids, fn, record={hook})
    ids_s = ",".join(map(str, ids))
    got = hook_array(scalpel.json("activations", "--model", path, "--ids", ids_s, "--hook", hook,
                                  "--interventions", dp, "--sae", d))
    assert np.abs(got - rec[hook]).max() < 1e-4 * max(1.0, np.abs(rec[hook]).max())
    got_l = np.asarray(scalpel.json("logits", "--model", path, "--ids", ids_s, "--interventions", dp, "--sae", d,
                                    "--full")["logits"])
    assert np.abs(got_l - want_logits).max() < 1e-4 * max(1.0, np.abs(want_logits).max())
    # without the SAE the document is refused, naming the op and the fix
    p = scalpel.run("logits", "--model", path, "--ids", ids_s, "--interventions", dp)
    assert p.returncode != 0 and "intervention 0" in p.stderr and "--sae" in p.stderr


def test_sae_decoder_row_vector_source(scalpel, tiny, ref, tmp_path):
    path = tiny[TINY]["path"]
    m = ref(path)
    cfg = SAE_CASES["standard"]
    d, W = write_sae(tmp_path / "s", cfg, seed=1)
    hook = cfg["hook_name"]
    doc = {"version": 1, "interventions": [{"hook": hook, "op": "add", "scale": 2.5,
                                            "vector": {"from": "sae", "latent": 5}}]}
    dp = tmp_path / "row.json"
    dp.write_text(json.dumps(doc))
    ids = m.tokenizer.encode("The dog sleeps")
    got = hook_array(scalpel.json("activations", "--model", path, "--ids", ",".join(map(str, ids)), "--hook", hook,
                                  "--interventions", dp, "--sae", d))
    _, hooks = m.forward(ids)
    assert np.abs(got - (hooks[hook] + 2.5 * W["W_dec"][5])).max() < 1e-4


def test_sae_bad_inputs(scalpel, tiny, tmp_path):
    path = tiny[TINY]["path"]
    d, _ = write_sae(tmp_path / "wrong_din", dict(SAE_CASES["standard"], d_in=32), seed=0)
    p = scalpel.run("sae", "--model", path, "--dir", d, "--prompt", "hi")
    assert p.returncode != 0 and "d_in is 32" in p.stderr
    d, _ = write_sae(tmp_path / "gated", dict(SAE_CASES["standard"], architecture="gated"), seed=0)
    p = scalpel.run("sae", "--model", path, "--dir", d, "--prompt", "hi")
    assert p.returncode != 0 and "architecture 'gated' is not supported" in p.stderr
    d, _ = write_sae(tmp_path / "nok", {k: v for k, v in SAE_CASES["topk"].items() if k != "k"}, seed=0)
    p = scalpel.run("sae", "--model", path, "--dir", d, "--prompt", "hi")
    assert p.returncode != 0 and "'k'" in p.stderr
    d, _ = write_sae(tmp_path / "ok", SAE_CASES["standard"], seed=0)
    doc = tmp_path / "bad_latent.json"
    doc.write_text(json.dumps({"version": 1, "interventions": [
        {"hook": "blocks.1.hook_resid_pre", "op": "sae_clamp", "latent": 96, "value": 1.0}]}))
    p = scalpel.run("logits", "--model", path, "--prompt", "hi", "--interventions", doc, "--sae", d)
    assert p.returncode != 0 and "intervention 0" in p.stderr and "latent" in p.stderr
    doc.write_text(json.dumps({"version": 1, "interventions": [
        {"hook": "blocks.0.hook_resid_pre", "op": "sae_clamp", "latent": 1, "value": 1.0}]}))
    p = scalpel.run("logits", "--model", path, "--prompt", "hi", "--interventions", doc, "--sae", d)
    assert p.returncode != 0 and "no SAE is loaded for 'blocks.0.hook_resid_pre'" in p.stderr


# ---------------------------------------------------------------- probes and ITI
def np_logreg(X, y, l2):
    """Primal Newton on standardized features; returns (mean, scale, w, b)."""
    mean = X.mean(0)
    std = X.std(0)
    scale = np.where(std > 1e-12 * (1 + np.abs(mean)), std, 1.0)
    Z = (X - mean) / scale
    n, d = Z.shape
    A = np.hstack([Z, np.ones((n, 1))])
    th = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0
    for _ in range(200):
        s = A @ th
        p = 1 / (1 + np.exp(-s))
        g = A.T @ (p - y) / n + reg * th
        if np.linalg.norm(g) < 1e-12:
            break
        H = (A * (p * (1 - p) / n)[:, None]).T @ A + np.diag(reg) + 1e-12 * np.eye(d + 1)
        th = th - np.linalg.solve(H, g)
    return mean, scale, th[:-1], th[-1]


def np_probe(Xtr, ytr, Xte, yte, l2):
    mean, scale, w, b = np_logreg(Xtr, ytr, l2)
    dec = lambda X: ((X - mean) / scale) @ w + b  # noqa: E731
    sp = lambda s: np.maximum(s, 0) + np.log1p(np.exp(-np.abs(s)))  # noqa: E731
    st = dec(Xte)
    return dict(w=w, b=b, train=np.mean((dec(Xtr) > 0) == ytr), test=np.mean((st > 0) == yte),
                loss=np.mean(sp(st) - yte * st))


@pytest.mark.parametrize("hook", ["blocks.*.hook_resid_post", "blocks.*.attn.hook_z"])
def test_probe_matches_numpy_logistic_regression(scalpel, tiny, ref, tmp_path, hook):
    path = tiny[TINY]["path"]
    m = ref(path)
    p = write_lines(tmp_path / "p.txt", TINY_POS)
    n = write_lines(tmp_path / "n.txt", TINY_NEG)
    r = scalpel.json("probe", "--model", path, "--positive", p, "--negative", n, "--hook", hook, "--full",
                     "--seed", "3", "--l2", "0.05")
    per_head = "hook_z" in hook
    assert r["per_head"] == per_head and r["rows"] == m.cfg["n_layers"] and r["cols"] == (4 if per_head else 1)
    tr, te = r["split"]["train"], r["split"]["test"]
    assert sorted(tr + te) == list(range(24)) and sum(i < 12 for i in te) == 3 and len(te) == 6
    y = np.array([1.0] * 12 + [0.0] * 12)
    for l in range(r["rows"]):
        name = hook.replace("*", str(l))
        X = np.vstack([last_token_acts(m, TINY_POS, name), last_token_acts(m, TINY_NEG, name)])
        for h in range(r["cols"]):
            Xh = X[:, h * 16:(h + 1) * 16] if per_head else X
            want = np_probe(Xh[tr], y[tr], Xh[te], y[te], 0.05)
            cell = r["probes"][l * r["cols"] + h]
            w = np.asarray(cell["w"])
            err = np.abs(w - want["w"]).max() / max(1.0, np.abs(want["w"]).max())
            print(f"{name} head {h}: test acc {r['test_accuracy'][l][h]:.3f}/{want['test']:.3f}, w rel err {err:.1e}")
            assert err < 1e-5 and abs(cell["b"] - want["b"]) < 1e-5
            assert r["test_accuracy"][l][h] == pytest.approx(want["test"])
            assert r["train_accuracy"][l][h] == pytest.approx(want["train"])
            assert r["test_loss"][l][h] == pytest.approx(want["loss"], rel=1e-5, abs=1e-7)


def test_iti_matches_numpy_and_runs(scalpel, tiny, ref, tmp_path):
    path = tiny[TINY]["path"]
    m = ref(path)
    p = write_lines(tmp_path / "p.txt", TINY_POS)
    n = write_lines(tmp_path / "n.txt", TINY_NEG)
    out = tmp_path / "iti.json"
    r = scalpel.json("probe", "--model", path, "--positive", p, "--negative", n, "--iti-top-k", "3", "--alpha", "4",
                     "--out", out, "--seed", "1")
    assert r["hook"] == "blocks.*.attn.hook_z"
    acc, loss = np.asarray(r["test_accuracy"]), np.asarray(r["test_loss"])
    order = sorted(range(acc.size), key=lambda i: (-acc.flat[i], loss.flat[i], i))[:3]
    chosen = [(h["layer"], h["head"]) for h in r["iti"]["heads"]]
    assert chosen == [divmod(i, 4) for i in order]
    doc = json.load(open(out))
    assert len(doc["interventions"]) == 3
    tr = r["split"]["train"]
    y = np.array([True] * 12 + [False] * 12)
    shifts = {}
    for (l, h), iv, head in zip(chosen, doc["interventions"], r["iti"]["heads"]):
        assert iv["hook"] == f"blocks.{l}.attn.hook_z" and iv["heads"] == [h] and iv["op"] == "add"
        assert iv["scale"] == 4 and len(iv["vector"]) == 16
        name = f"blocks.{l}.attn.hook_z"
        X = np.vstack([last_token_acts(m, TINY_POS, name), last_token_acts(m, TINY_NEG, name)])[:, h * 16:(h + 1) * 16]
        Xt, yt = X[tr], y[tr]
        u = Xt[yt].mean(0) - Xt[~yt].mean(0)
        u /= np.linalg.norm(u)
        sigma = (Xt @ u).std()
        assert head["sigma"] == pytest.approx(sigma, rel=1e-4)
        assert np.abs(np.asarray(iv["vector"]) - sigma * u).max() < 1e-4 * max(1.0, sigma)
        shifts[(l, h)] = 4 * sigma * u
    ids = m.tokenizer.encode("The dog sleeps in the sun")
    got = np.asarray(scalpel.json("logits", "--model", path, "--ids", ",".join(map(str, ids)), "--interventions", out,
                                  "--full")["logits"])

    def fn(name, v):
        hits = [(h, s) for (l, h), s in shifts.items() if name == f"blocks.{l}.attn.hook_z"]
        if not hits:
            return None
        v = v.copy()
        for h, s in hits:
            v[:, h, :] += s
        return v

    want, _ = ref_model.forward_hooked(m, ids, fn)
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())


# ---------------------------------------------------------------- bad input
def test_vector_bad_inputs(scalpel, tiny, tmp_path):
    path = tiny[TINY]["path"]
    p3 = write_lines(tmp_path / "p3.txt", TINY_POS[:3])
    n2 = write_lines(tmp_path / "n2.txt", TINY_NEG[:2])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    cases = [
        (["--positive", p3, "--negative", n2, "--method", "pca"], "same size (3 vs 2)"),
        (["--positive", p3, "--negative", n2, "--method", "actadd"], "actadd takes one prompt pair"),
        (["--positive", str(empty), "--negative", n2], "no prompts"),
        (["--positive", p3, "--negative", n2, "--method", "lda"], "--method: method 'lda' is not one of"),
        (["--positive", p3, "--negative", n2, "--hook", "blocks.7.hook_resid_post"], "layer 7 is out of range"),
        (["--positive", p3, "--negative", n2, "--hook", "blocks.*.attn.hook_pattern"], "attention pattern"),
        (["--positive", p3, "--negative", n2, "--position", "99"], "position 99 is outside"),
        (["--positive", p3, "--negative", n2, "--out", str(tmp_path / "x.txt")], ".json (intervention document) or .gguf"),
        (["--positive", p3, "--negative", n2, "--hook", "blocks.*.hook_mlp_out", "--out", str(tmp_path / "x.gguf")],
         "has no control-vector layer"),
        (["--positive", p3, "--negative", n2, "--layers", "0-5"], "is out of range (the model has 2 layers"),
        (["--plus", "a"], "give a prompt pair"),
    ]
    for args, msg in cases:
        p = scalpel.run("vector", "--model", path, *args)
        assert p.returncode != 0, args
        assert msg in p.stderr, f"{args}: {p.stderr}"
        assert "panicked" not in p.stderr
    p = scalpel.run("probe", "--model", path, "--positive", p3, "--negative", write_lines(tmp_path / "n1.txt", ["x"]))
    assert p.returncode != 0 and "at least 2 per class" in p.stderr
    p = scalpel.run("probe", "--model", path, "--positive", p3, "--negative", n2, "--iti-top-k", "2",
                    "--hook", "blocks.*.hook_resid_post")
    assert p.returncode != 0 and "attn.hook_z" in p.stderr
    doc = tmp_path / "unknown.json"
    doc.write_text(json.dumps({"version": 1, "interventions": [{"hook": "blocks.0.hook_resid_pre", "op": "add",
                                                                "vector": {"from": "file", "path": "nope.gguf"}}]}))
    p = scalpel.run("logits", "--model", path, "--prompt", "hi", "--interventions", doc)
    assert p.returncode != 0 and "intervention 0" in p.stderr and "nope.gguf" in p.stderr


def test_file_vector_source(scalpel, tiny, ref, tmp_path):
    """{"from": "file"}: a control vector GGUF (layer from the hook) or JSON, relative to the document."""
    path = tiny[TINY]["path"]
    m = ref(path)
    v = np.random.default_rng(5).normal(size=64).astype(np.float32)
    write_cv(tmp_path / "cv.gguf", {1: v})
    (tmp_path / "v.json").write_text(json.dumps([float(x) for x in -v]))
    doc = {"version": 1, "interventions": [
        {"hook": "blocks.1.hook_resid_post", "op": "add",
         "vector": {"from": "file", "path": "cv.gguf"}},
        {"hook": "blocks.0.hook_resid_post", "op": "add", "scale": 0.5, "vector": {"from": "file", "path": "v.json"}}]}
    dp = tmp_path / "doc.json"
    dp.write_text(json.dumps(doc))
    ids = m.tokenizer.encode("The dog sleeps")
    got = np.asarray(scalpel.json("logits", "--model", path, "--ids", ",".join(map(str, ids)), "--interventions", dp,
                                  "--full")["logits"])

    def fn(name, x):
        if name == "blocks.1.hook_resid_post":
            return x + v
        if name == "blocks.0.hook_resid_post":
            return x - 0.5 * v
        return None

    want, _ = ref_model.forward_hooked(m, ids, fn)
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())


# ---------------------------------------------------------------- SmolLM2: sentiment
SENT_POS = os.path.join(DATA, "sentiment_pos.txt")
SENT_NEG = os.path.join(DATA, "sentiment_neg.txt")


@requires_smol
def test_smollm_sentiment_vector_separates_and_steers(scalpel, smol, tmp_path):
    out = tmp_path / "sent.json"
    r = scalpel.json("vector", "--model", smol, "--positive", SENT_POS, "--negative", SENT_NEG, "--method", "mean_diff",
                     "--hook", "blocks.14.hook_resid_post", "--out", out, timeout=300)
    loo = [l["loo_accuracy"] for l in r["layers"]]
    print("sentiment mean_diff LOO accuracy per layer:", " ".join(f"{x:.2f}" for x in loo))
    print("Cohen's d per layer:", " ".join(f"{l['cohens_d']:.1f}" for l in r["layers"]))
    assert max(loo[10:20]) >= 0.95 and loo[0] <= 0.7, loo
    ids = ",".join(map(str, scalpel.json("tokenize", "--model", smol, "--prompt", "I watched the film and it was")["ids"]))
    good = scalpel.json("tokenize", "--model", smol, "--prompt", " great")["ids"][0]
    bad = scalpel.json("tokenize", "--model", smol, "--prompt", " terrible")["ids"][0]

    def ld(doc_path=None):
        args = ["logits", "--model", smol, "--ids", ids, "--full"] + (["--interventions", doc_path] if doc_path else [])
        last = scalpel.json(*args)["logits"][-1]
        return last[good] - last[bad]

    base = ld()
    doc = json.load(open(out))
    neg = tmp_path / "neg.json"
    doc["interventions"][0]["scale"] = -1.0
    neg.write_text(json.dumps(doc))
    plus, minus = ld(out), ld(neg)
    print(f"logit(' great') - logit(' terrible'): base {base:.3f}, +vector {plus:.3f}, -vector {minus:.3f}")
    assert plus > base + 1.0 and minus < base - 1.0


@requires_smol
def test_smollm_sentiment_probe_and_iti(scalpel, smol, tmp_path):
    r = scalpel.json("probe", "--model", smol, "--positive", SENT_POS, "--negative", SENT_NEG, timeout=300)
    acc = [row[0] for row in r["test_accuracy"]]
    print("sentiment probe held-out accuracy per layer (16 held out):", " ".join(f"{a:.2f}" for a in acc))
    assert acc[15] >= 0.9 and np.mean(acc[10:20]) >= 0.9, acc
    out = tmp_path / "iti.json"
    r = scalpel.json("probe", "--model", smol, "--positive", SENT_POS, "--negative", SENT_NEG, "--iti-top-k", "4",
                     "--alpha", "5", "--out", out, timeout=300)
    print("ITI heads:", [(h["layer"], h["head"], round(h["test_accuracy"], 3), round(h["sigma"], 3))
                         for h in r["iti"]["heads"]])
    assert r["rows"] == 30 and r["cols"] == 9
    assert all(h["test_accuracy"] >= 0.9 for h in r["iti"]["heads"])
    lg = scalpel.json("logits", "--model", smol, "--prompt", "The movie was", "--interventions", out)
    assert len(lg["interventions"]["applied"]) == 4


@requires_smol
def test_smollm_control_vector_gguf_round_trip(scalpel, smol, tmp_path):
    import gguf

    out = tmp_path / "sent.gguf"
    r = scalpel.json("vector", "--model", smol, "--positive", SENT_POS, "--negative", SENT_NEG, "--method", "pca",
                     "--layers", "10-20", "--out", out, "--full", timeout=300)
    rd = gguf.GGUFReader(str(out))
    assert rd.fields["controlvector.model_hint"].contents() == "llama"
    t = {x.name: np.asarray(x.data) for x in rd.tensors}
    assert sorted(t, key=lambda s: int(s.split(".")[1])) == [f"direction.{k}" for k in range(10, 21)]
    for k in range(10, 21):
        assert t[f"direction.{k}"].shape == (576,)
        assert np.array_equal(t[f"direction.{k}"], np.asarray(r["vectors"][k], dtype=np.float32))
    # blocks.{l}.hook_resid_pre is block l-1's output: direction.{l-1}; --normalize writes unit vectors
    out2 = tmp_path / "pre.gguf"
    r2 = scalpel.json("vector", "--model", smol, "--positive", SENT_POS, "--negative", SENT_NEG, "--hook",
                      "blocks.*.hook_resid_pre", "--layers", "0,15", "--out", out2, "--normalize", "--full", timeout=300)
    assert any("blocks.0.hook_resid_pre" in w for w in r2["warnings"])
    t2 = {x.name: np.asarray(x.data) for x in gguf.GGUFReader(str(out2)).tensors}
    assert list(t2) == ["direction.14"]
    v = np.asarray(r2["vectors"][15])
    assert np.abs(t2["direction.14"] - v / np.linalg.norm(v)).max() < 1e-6
