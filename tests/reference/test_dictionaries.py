"""Dictionaries in every format `scalpel features` reads, against independent
NumPy encoders/decoders written here from each format's own code
(docs/features.md), not from crates/dictionaries:

  * EleutherAI sparsify (sparsify/sparse_coder.py, fused_encoder.py):
    cfg.json + sae.safetensors (encoder.weight [n, d], encoder.bias [n],
    W_dec [n, d], b_dec [d], W_skip [d, d] with skip_connection); the folder
    name is the module (layers.N = resid_pre -> resid_post, layers.N.mlp =
    ln2.hook_normalized -> hook_mlp_out). encode: an autoencoder subtracts
    b_dec from its input, a transcoder does not; pre = relu(x W_enc^T + b);
    topk keeps the k largest; groupmax the largest of each of k contiguous
    groups. decode: f W_dec + b_dec (+ x W_skip^T).
  * Gemma Scope (params.npz from np.savez, or params.safetensors): W_enc
    [d_in, n], W_dec [n, d_out], b_enc, b_dec, threshold; JumpReLU
    relu(pre) * (pre > threshold), pre = x W_enc + b_enc (no b_dec on the
    input); the files do not name the hook (--hook / --hook-out).
  * SAELens skip_transcoder: the input normalised (layer_norm here), not
    undone on the output; out = f W_dec + b_dec + x W_skip^T on the raw x.
  * circuit-tracer transcoder sets (transcoder/single_layer_transcoder.py,
    activation_functions.py, utils/hf_utils.py): config.yaml (model_kind
    transcoder_set, feature_input_hook / feature_output_hook relative to the
    block, activation, k, transcoders) + layer_N.safetensors with W_enc
    [n, d_in], W_dec [n, d_out], b_enc, b_dec, activation_function.threshold,
    W_skip [d_out, d_in], k. pre = x W_enc^T + b_enc (nothing subtracted);
    JumpReLU pre * (pre > threshold) and TopK pre * gate, neither ReLU'd;
    relu otherwise. mlp.hook_in is the MLP's input (ln2.hook_normalized here).

`scalpel features --json --full` prints the dense latents and output; the
per-position top-k ids must be identical and activations within 1e-4.
Corpus mode (`--latent I --corpus FILE`) is checked against the same
encoders run window by window; sae_clamp (and ablation, value 0) through a
sparsify and a Gemma Scope SAE against the reference logits.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import ref_model
from conftest import hook_array, requires_smol

TINY = "llama_f32_untied"
PROMPT = "The dog sleeps in the warm sun."
TOL = 1e-4


# ---------------------------------------------------------------- reference encoders
def topk_dense(pre, k):
    f = np.zeros_like(pre)
    idx = np.argsort(-pre, axis=-1, kind="stable")[:, :k]
    rows = np.arange(len(pre))[:, None]
    f[rows, idx] = pre[rows, idx]
    return f


def groupmax_dense(pre, k):
    n, m = pre.shape
    g = pre.reshape(n, k, m // k)
    arg = g.argmax(-1)
    f = np.zeros_like(g)
    np.put_along_axis(f, arg[..., None], np.take_along_axis(g, arg[..., None], -1), -1)
    return f.reshape(n, m)


def sparsify_encode(cfg, W, x):
    """sparsify SparseCoder.encode: x - b_dec (autoencoders only), relu(linear), topk/groupmax."""
    sae_in = x if cfg.get("transcode") else x - W["b_dec"]
    pre = np.maximum(sae_in @ W["encoder.weight"].T + W["encoder.bias"], 0)
    if cfg.get("activation", "topk") == "groupmax":
        return groupmax_dense(pre, cfg["k"])
    return topk_dense(pre, cfg["k"])


def sparsify_decode(W, f, x):
    out = f @ W["W_dec"] + W["b_dec"]
    if "W_skip" in W:
        out = out + x @ W["W_skip"].T
    return out


def jumprelu_encode(W, x):
    pre = x @ W["W_enc"] + W["b_enc"]
    return np.maximum(pre, 0) * (pre > W["threshold"])


def plain_decode(W, f):
    return f @ W["W_dec"] + W["b_dec"]


def layer_norm_in(x):
    mu = x.mean(-1, keepdims=True)
    std = (x - mu).std(-1, ddof=1, keepdims=True)
    return (x - mu) / (std + 1e-5)


# ---------------------------------------------------------------- writers
def rnd(rng, *shape, scale=1.0):
    return (rng.normal(size=shape) * scale).astype(np.float32)


def write_sparsify(root, folder, cfg, seed, d_in):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    n = cfg.get("num_latents") or d_in * cfg.get("expansion_factor", 32)
    W = {"encoder.weight": rnd(rng, n, d_in, scale=1 / np.sqrt(d_in)), "encoder.bias": rnd(rng, n, scale=0.1),
         "W_dec": rnd(rng, n, d_in, scale=1 / np.sqrt(n)), "b_dec": rnd(rng, d_in, scale=0.1)}
    if cfg.get("skip_connection"):
        W["W_skip"] = rnd(rng, d_in, d_in, scale=0.3 / np.sqrt(d_in))
    d = os.path.join(str(root), folder)
    os.makedirs(d, exist_ok=True)
    save_file(W, os.path.join(d, "sae.safetensors"))
    with open(os.path.join(d, "cfg.json"), "w") as f:
        json.dump({**cfg, "d_in": d_in}, f)
    return d, {k: v.astype(np.float64) for k, v in W.items()}


def gemma_weights(seed, d_in, d_sae, d_out):
    rng = np.random.default_rng(seed)
    W = {"W_enc": rnd(rng, d_in, d_sae, scale=1 / np.sqrt(d_in)), "W_dec": rnd(rng, d_sae, d_out, scale=1 / np.sqrt(d_sae)),
         "b_enc": rnd(rng, d_sae, scale=0.1), "b_dec": rnd(rng, d_out, scale=0.1),
         "threshold": np.abs(rnd(rng, d_sae, scale=0.3))}
    return W


def write_gemma(d, W, kind, cfg=None):
    os.makedirs(d, exist_ok=True)
    if kind == "npz":
        np.savez(os.path.join(d, "params.npz"), **W)
    else:
        from safetensors.numpy import save_file

        # lower-case w_enc / w_dec, as some Gemma Scope files spell them
        save_file({("w" + k[1:] if k.startswith("W_") else k): v for k, v in W.items()},
                  os.path.join(d, "params.safetensors"))
    if cfg is not None:
        with open(os.path.join(d, "cfg.json"), "w") as f:
            json.dump(cfg, f)
    return str(d), {k: v.astype(np.float64) for k, v in W.items()}


# ---------------------------------------------------------------- checking
def hooks_of(m, ids):
    _, hooks = m.forward(ids)
    return {k: np.asarray(v, dtype=np.float64).reshape(len(ids), -1) for k, v in hooks.items()}


def check_features(r, f, out, y, k, label):
    """r: `scalpel features --json --full`; f: reference latents; out: reference
    output; y: the value at the output hook. Returns the measured errors."""
    got_f, got_out = np.asarray(r["latents"]), np.asarray(r["output"])
    assert got_f.shape == f.shape, (label, got_f.shape, f.shape)
    assert np.array_equal(got_f != 0, f != 0), f"{label}: active latents differ"
    ef = float(np.abs(got_f - f).max())
    eo = float(np.abs(got_out - out).max())
    err_ref = ((y - out) ** 2).sum(-1) / (y ** 2).sum(-1)
    err_got = np.array([p["reconstruction_error"] for p in r["positions"]])
    ee = float(np.abs(err_got - err_ref).max() / max(1.0, np.abs(err_ref).max()))
    worst_top = 0.0
    assert len(r["positions"]) == len(f)
    for p, row in zip(r["positions"], f):
        want = [i for i in np.argsort(-row, kind="stable")[:k] if row[i] > 0]
        got = [l["id"] for l in p["latents"]]
        assert got == want, f"{label}: position {p['position']}: top-{k} ids {got} != {want}"
        acts = np.array([l["activation"] for l in p["latents"]])
        if len(want):
            worst_top = max(worst_top, float(np.abs(acts - row[want]).max()))
        assert p["l0"] == int((row != 0).sum())
    print(f"{label}: max|dlatent| {ef:.2e}, max|dtop-k act| {worst_top:.2e}, max|doutput| {eo:.2e}, "
          f"rel d(recon err) {ee:.2e}, L0 {[p['l0'] for p in r['positions']]}")
    assert ef < TOL and worst_top < TOL and eo < TOL * max(1.0, np.abs(out).max()) and ee < TOL
    return ef, eo


def features(scalpel, path, d, ids, *extra, k=5):
    return scalpel.json("features", "--model", path, "--sae", d, "--ids", ",".join(map(str, ids)),
                        "--top-k", k, "--full", *extra)


# ---------------------------------------------------------------- sparsify
SPARSIFY = {
    # folder, cfg, (input hook, output hook)
    "sae_resid_topk": ("layers.1", dict(k=6, num_latents=96), ("blocks.1.hook_resid_post", None)),
    "sae_mlp_expansion": ("layers.0.mlp", dict(k=4, expansion_factor=2), ("blocks.0.hook_mlp_out", None)),
    "sae_groupmax": ("layers.0", dict(k=8, num_latents=96, activation="groupmax"), ("blocks.0.hook_resid_post", None)),
    "transcoder_mlp": ("layers.1.mlp", dict(k=7, num_latents=80, transcode=True, activation="topk"),
                       ("blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out")),
    "transcoder_mlp_skip": ("layers.0.mlp", dict(k=7, num_latents=80, transcode=True, skip_connection=True,
                                                  activation="topk"),
                            ("blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out")),
    "transcoder_block_skip": ("layers.1", dict(k=5, num_latents=64, transcode=True, skip_connection=True,
                                               activation="topk"),
                              ("blocks.1.hook_resid_pre", "blocks.1.hook_resid_post")),
}


@pytest.mark.parametrize("case", list(SPARSIFY))
def test_sparsify_matches_numpy(scalpel, tiny, ref, tmp_path, case):
    path = tiny[TINY]["path"]
    m = ref(path)
    folder, cfg, (h_in, h_out) = SPARSIFY[case]
    ids = m.tokenizer.encode(PROMPT)
    hooks = hooks_of(m, ids)
    x = hooks[h_in]
    d, W = write_sparsify(tmp_path / case, folder, cfg, seed=len(case), d_in=x.shape[1])
    r = features(scalpel, path, d, ids)
    assert r["hook"] == h_in and r.get("hook_out") == h_out
    assert r["dictionary"]["format"] == "sparsify"
    f = sparsify_encode(cfg, W, x)
    out = sparsify_decode(W, f, x)
    y = hooks[h_out or h_in]
    assert np.abs(np.asarray(r["input"]) - x).max() < TOL
    check_features(r, f, out, y, 5, f"sparsify {case}")
    assert max(p["l0"] for p in r["positions"]) <= cfg["k"]


# ---------------------------------------------------------------- Gemma Scope
@pytest.mark.parametrize("kind", ["npz", "safetensors"])
@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_post", "blocks.0.hook_mlp_out"])
def test_gemma_scope_jumprelu_matches_numpy(scalpel, tiny, ref, tmp_path, kind, hook):
    path = tiny[TINY]["path"]
    m = ref(path)
    ids = m.tokenizer.encode(PROMPT)
    hooks = hooks_of(m, ids)
    x = hooks[hook]
    d, W = write_gemma(tmp_path / f"gs_{kind}", gemma_weights(7, x.shape[1], 112, x.shape[1]), kind)
    r = features(scalpel, path, d, ids, "--hook", hook)
    assert r["hook"] == hook and r["dictionary"]["format"] == "gemma_scope"
    f = jumprelu_encode(W, x)
    check_features(r, f, plain_decode(W, f), x, 5, f"gemma scope {kind} {hook}")
    # without --hook (and no cfg.json) the files do not say where it reads
    p = scalpel.run("features", "--model", path, "--sae", d, "--ids", ",".join(map(str, ids)), "--json")
    assert p.returncode != 0 and "--hook" in p.stderr and "panicked" not in p.stderr


@pytest.mark.parametrize("kind", ["npz", "affine_safetensors"])
def test_gemma_scope_transcoder(scalpel, tiny, ref, tmp_path, kind):
    """Gemma Scope transcoders (as SAELens loads them): ln2.hook_normalized -> hook_mlp_out, JumpReLU;
    Gemma Scope 2's affine ones add x @ affine_skip_connection ([d_in, d_out], as circuit-tracer's
    load_gemma_scope_2_transcoder reads it: W_skip = its transpose)."""
    path = tiny[TINY]["path"]
    m = ref(path)
    ids = m.tokenizer.encode(PROMPT)
    hooks = hooks_of(m, ids)
    h_in, h_out = "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"
    x, y = hooks[h_in], hooks[h_out]
    W = gemma_weights(11, x.shape[1], 72, y.shape[1])
    if kind == "affine_safetensors":
        W["affine_skip_connection"] = rnd(np.random.default_rng(5), x.shape[1], y.shape[1], scale=0.3 / np.sqrt(x.shape[1]))
    d, W = write_gemma(tmp_path / "gst", W, "npz" if kind == "npz" else "safetensors")
    r = features(scalpel, path, d, ids, "--hook", h_in, "--hook-out", h_out)
    assert r["hook"] == h_in and r["hook_out"] == h_out
    f = jumprelu_encode(W, x)
    out = plain_decode(W, f) + (x @ W["affine_skip_connection"] if "affine_skip_connection" in W else 0)
    check_features(r, f, out, y, 5, f"gemma scope transcoder ({kind})")


# ---------------------------------------------------------------- SAELens skip transcoder
def test_saelens_skip_transcoder_layer_norm(scalpel, tiny, ref, tmp_path):
    from safetensors.numpy import save_file

    path = tiny[TINY]["path"]
    m = ref(path)
    ids = m.tokenizer.encode(PROMPT)
    hooks = hooks_of(m, ids)
    h_in, h_out = "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"
    x, y = hooks[h_in], hooks[h_out]
    rng = np.random.default_rng(3)
    d_in, d_out, n = x.shape[1], y.shape[1], 90
    W = {"W_enc": rnd(rng, d_in, n, scale=1 / np.sqrt(d_in)), "W_dec": rnd(rng, n, d_out, scale=1 / np.sqrt(n)),
         "b_enc": rnd(rng, n, scale=0.1), "b_dec": rnd(rng, d_out, scale=0.1),
         "W_skip": rnd(rng, d_out, d_in, scale=0.3 / np.sqrt(d_in))}
    d = tmp_path / "skip_tc"
    os.makedirs(d)
    save_file(W, str(d / "sae_weights.safetensors"))
    cfg = {"architecture": "skip_transcoder", "d_in": d_in, "d_out": d_out, "d_sae": n, "apply_b_dec_to_input": False,
           "normalize_activations": "layer_norm", "sae_lens_version": "6.5.0",
           "metadata": {"hook_name": h_in, "hook_name_out": h_out}}
    (d / "cfg.json").write_text(json.dumps(cfg))
    W = {k: v.astype(np.float64) for k, v in W.items()}
    r = features(scalpel, path, str(d), ids)
    pre = layer_norm_in(x) @ W["W_enc"] + W["b_enc"]
    f = np.maximum(pre, 0)
    out = f @ W["W_dec"] + W["b_dec"] + x @ W["W_skip"].T
    check_features(r, f, out, y, 5, "saelens skip_transcoder")


# ---------------------------------------------------------------- circuit-tracer
def write_circuit_tracer(d, layer, config, seed, d_in, d_out, n, threshold=None, skip=False, k=None, name=None):
    """A circuit-tracer set folder: config.yaml (text, as its configs are
    written) and one layer's file, in its layout (W_enc [n, d_in])."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    W = {"W_enc": rnd(rng, n, d_in, scale=1 / np.sqrt(d_in)), "W_dec": rnd(rng, n, d_out, scale=1 / np.sqrt(n)),
         "b_enc": rnd(rng, n, scale=0.3), "b_dec": rnd(rng, d_out, scale=0.1)}
    if threshold is not None:
        W["activation_function.threshold"] = threshold(rng, n)
    if skip:
        W["W_skip"] = rnd(rng, d_out, d_in, scale=0.3 / np.sqrt(d_in))
    os.makedirs(d, exist_ok=True)
    file = name or f"layer_{layer}.safetensors"
    tensors = dict(W)
    if k is not None:
        tensors["k"] = np.array(k, dtype=np.int64)
    save_file(tensors, os.path.join(str(d), file))
    with open(os.path.join(str(d), "config.yaml"), "w") as f:
        f.write(config)
    return os.path.join(str(d), file), {k: v.astype(np.float64) for k, v in W.items()}


def circuit_tracer_encode(W, x, activation, k=None):
    pre = x @ W["W_enc"].T + W["b_enc"]
    if activation == "topk":
        return topk_dense(pre, k)  # x * gate: the k largest, negative or not
    if "activation_function.threshold" in W:
        return pre * (pre > W["activation_function.threshold"])
    return np.maximum(pre, 0)


def circuit_tracer_decode(W, f, x):
    out = f @ W["W_dec"] + W["b_dec"]
    if "W_skip" in W:
        out = out + x @ W["W_skip"].T
    return out


CT_HEAD = "model_name: tiny\nmodel_kind: transcoder_set\nscan: tiny-test\n"
CIRCUIT_TRACER = {
    # config body, layer, (input hook, output hook), writer options
    "jumprelu_skip_mlp_in_out": ("feature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n", 1,
                                 ("blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"),
                                 # some thresholds negative: the gate keeps negative activations
                                 dict(threshold=lambda rng, n: rnd(rng, n, scale=0.4), skip=True)),
    "topk_resid_mid_listed": ('feature_input_hook: "hook_resid_mid"\nfeature_output_hook: "hook_mlp_out"\n'
                              "activation: topk\nk: 44\ntranscoders:\n  - hf://tiny/set/a0.safetensors\n"
                              "  - hf://tiny/set/a1.safetensors?revision=main\n", 0,
                              ("blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out"), dict(k=44, name="a0.safetensors")),
    "relu_templated_hooks": ('feature_input_hook: "blocks.{layer}.hook_resid_pre"\n'
                             'feature_output_hook: "blocks.{layer}.hook_mlp_out"\nactivation: relu\n', 1,
                             ("blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out"), dict()),
}


@pytest.mark.parametrize("case", list(CIRCUIT_TRACER))
def test_circuit_tracer_matches_numpy(scalpel, tiny, ref, tmp_path, case):
    path = tiny[TINY]["path"]
    m = ref(path)
    body, layer, (h_in, h_out), opts = CIRCUIT_TRACER[case]
    ids = m.tokenizer.encode(PROMPT)
    hooks = hooks_of(m, ids)
    x, y = hooks[h_in], hooks[h_out]
    f_path, W = write_circuit_tracer(tmp_path / case, layer, CT_HEAD + body, len(case), x.shape[1], y.shape[1], 80, **opts)
    r = features(scalpel, path, f_path, ids)
    assert r["hook"] == h_in and r["hook_out"] == h_out, r["hook"]
    activation = "topk" if "topk" in body else None
    f = circuit_tracer_encode(W, x, activation, opts.get("k"))
    if case.startswith("jumprelu") or activation == "topk":
        print(f"{case}: {int((f < 0).sum())} negative activations kept (no ReLU)")
        assert (f < 0).any(), "the case should exercise circuit-tracer's gates without a ReLU"
    check_features(r, f, circuit_tracer_decode(W, f, x), y, 5, f"circuit-tracer {case}")
    # A decoder row steers at the output hook, as any transcoder's.
    doc = tmp_path / "row.json"
    doc.write_text(json.dumps({"version": 1, "interventions": [
        {"hook": h_out, "op": "add", "scale": 2.0, "vector": {"from": "sae", "latent": 3}}]}))
    got = hook_array(scalpel.json("activations", "--model", path, "--ids", ",".join(map(str, ids)), "--hook", h_out,
                                  "--interventions", doc, "--sae", f_path))
    assert np.abs(got - (y + 2.0 * W["W_dec"][3])).max() < TOL


def test_circuit_tracer_refused_by_name(scalpel, tiny, ref, tmp_path):
    path = tiny[TINY]["path"]
    d_model = ref(path).cfg["d_model"]

    def refused(target, want):
        p = scalpel.run("features", "--model", path, "--sae", target, "--prompt", "hi", "--json")
        assert p.returncode != 0 and "panicked" not in p.stderr, p.stderr
        assert want in p.stderr, f"{want!r} not in: {p.stderr}"
        print("refused:", p.stderr.strip().splitlines()[-1])

    hooks = "feature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n"
    f, _ = write_circuit_tracer(tmp_path / "a", 0, CT_HEAD + hooks, 0, d_model, d_model, 16)
    refused(tmp_path / "a", "give one layer's file")
    os.remove(tmp_path / "a" / "config.yaml")
    refused(f, "config.yaml beside it")
    f, _ = write_circuit_tracer(tmp_path / "b", 0, CT_HEAD.replace("transcoder_set", "cross_layer_transcoder") + hooks,
                                0, d_model, d_model, 16)
    refused(f, "cross-layer transcoder")
    f, _ = write_circuit_tracer(tmp_path / "c", 0, CT_HEAD + hooks.replace("mlp.hook_in", "ln2.hook_normalized"),
                                0, d_model, d_model, 16)
    refused(f, "before the norm's weight")
    f, _ = write_circuit_tracer(tmp_path / "d", 0, CT_HEAD + hooks, 0, d_model // 2, d_model, 16)
    refused(f, f"d_in is {d_model // 2}")
    f, _ = write_circuit_tracer(tmp_path / "e", 40, CT_HEAD + hooks, 0, d_model, d_model, 16)
    refused(f, "blocks.40.ln2.hook_normalized")
    f, _ = write_circuit_tracer(tmp_path / "g", 0, CT_HEAD + hooks + "activation: topk\nk: 4\n", 0, d_model, d_model, 16, k=5)
    refused(f, "config.yaml says k = 4")
    f, _ = write_circuit_tracer(tmp_path / "h", 0, "model_kind: [transcoder_set\n", 0, d_model, d_model, 16)
    refused(f, "not valid YAML")


# ---------------------------------------------------------------- corpus mode
CORPUS = ["The dog sleeps in the warm sun.", "I love the warm sun today", "Hello world! The cat is happy",
          "What a lovely day in the park", "The cake was sweet and soft", "We lost the game, bad luck",
          "", "She smiles at the bright sky and the dog barks"]


def test_corpus_top_contexts_match_numpy(scalpel, tiny, ref, tmp_path):
    path = tiny[TINY]["path"]
    m = ref(path)
    folder, cfg, (h_in, _) = SPARSIFY["sae_resid_topk"]
    d, W = write_sparsify(tmp_path / "c", folder, cfg, seed=5, d_in=m.cfg["d_model"])
    max_tokens = 5
    windows = []
    for line in CORPUS:
        if line.strip():
            ids = m.tokenizer.encode(line)
            windows += [ids[i:i + max_tokens] for i in range(0, len(ids), max_tokens)]
    acts = [sparsify_encode(cfg, W, hooks_of(m, w)[h_in]) for w in windows]
    # the latent that fires in the most windows, so that the cut-off matters
    counts = np.array([[a[:, j].max() > 0 for a in acts] for j in range(acts[0].shape[1])]).sum(1)
    latent = int(np.argmax(counts))
    n_ctx = 3
    assert counts[latent] > n_ctx
    best = sorted(((float(a[:, latent].max()), w, int(np.argmax(a[:, latent]))) for w, a in enumerate(acts)
                   if a[:, latent].max() > 0), key=lambda t: -t[0])[:n_ctx]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n")
    r = scalpel.json("features", "--model", path, "--sae", d, "--latent", latent, "--corpus", corpus,
                     "--max-tokens", max_tokens, "--contexts", n_ctx)
    assert r["latent"] == latent and r["windows"] == len(windows)
    assert r["tokens"] == sum(len(w) for w in windows)
    got = r["contexts"]
    assert [c["window"] for c in got] == [b[1] for b in best]
    worst = 0.0
    for c, (act, w, pos) in zip(got, best):
        assert c["ids"] == list(windows[w]) and c["position"] == pos
        worst = max(worst, abs(c["activation"] - act),
                    float(np.abs(np.asarray(c["activations"]) - acts[w][:, latent]).max()))
    print(f"corpus: latent {latent} fires in {counts[latent]}/{len(windows)} windows; top {n_ctx} "
          f"windows {[b[1] for b in best]}, max|dact| {worst:.2e}")
    assert worst < TOL
    # the same pass counts where the latent fires and bins its activations (log-spaced, 4 per decade from 1e-2)
    vals = np.concatenate([a[:, latent] for a in acts])
    vals = vals[vals > 0]
    assert r["fires"] == len(vals)
    counts = r["histogram"]["counts"]
    want = np.bincount(np.clip(np.floor((np.log10(vals) + 2) * 4), 0, len(counts) - 1).astype(int), minlength=len(counts))
    assert sum(counts) == len(vals) and np.abs(np.asarray(counts) - want).sum() <= 2, (counts, want.tolist())
    # a latent out of range is refused by name
    p = scalpel.run("features", "--model", path, "--sae", d, "--latent", 96, "--corpus", corpus, "--json")
    assert p.returncode != 0 and "latent 96" in p.stderr and "panicked" not in p.stderr


# ---------------------------------------------------------------- clamp and ablate through the dictionary
def clamp_case(scalpel, m, path, tmp_path, d, hook, encode, decode, latent, value, label, atol=None, clean=None, x=None):
    ids = m.tokenizer.encode(PROMPT)
    if x is None:
        x = hooks_of(m, ids)[hook]
    doc = {"version": 1, "interventions": [{"hook": hook, "op": "sae_clamp", "latent": latent, "value": value}]}
    dp = tmp_path / f"clamp_{label}.json"
    dp.write_text(json.dumps(doc))
    f = encode(x)
    f2 = f.copy()
    f2[:, latent] = value
    delta = decode(f2) - decode(f)

    def fn(name, v):
        return v + delta.reshape(v.shape) if name == hook else None

    want, _ = ref_model.forward_hooked(m, ids, fn)
    if clean is None:
        clean, _ = m.forward(ids, want_hooks=False)
    got = np.asarray(scalpel.json("logits", "--model", path, "--ids", ",".join(map(str, ids)),
                                  "--interventions", dp, "--sae", d, "--full")["logits"])
    err = float(np.abs(got - want).max())
    moved = float(np.abs(want - clean).max())
    print(f"{label}: latent {latent} -> {value}: max|dlogit| {err:.2e} (the clamp moves logits by up to {moved:.3f}; "
          f"largest |logit| {np.abs(want).max():.2f})")
    assert moved > 1e-3, f"{label}: the clamp did nothing to compare"
    assert err < (atol if atol is not None else TOL * max(1.0, np.abs(want).max()))
    return err


@pytest.mark.parametrize("value", [0.0, 3.0])
def test_clamp_and_ablate_through_sparsify_and_gemma_scope(scalpel, tiny, ref, tmp_path, value):
    path = tiny[TINY]["path"]
    m = ref(path)
    ids = m.tokenizer.encode(PROMPT)
    hooks = hooks_of(m, ids)
    # sparsify TopK SAE at blocks.1.hook_resid_post; clamp a latent that is active somewhere
    folder, cfg, (hook, _) = SPARSIFY["sae_resid_topk"]
    d, W = write_sparsify(tmp_path / "s", folder, cfg, seed=2, d_in=hooks[hook].shape[1])
    f = sparsify_encode(cfg, W, hooks[hook])
    latent = int(np.argmax((f > 0).sum(0)))
    clamp_case(scalpel, m, path, tmp_path, d, hook, lambda x: sparsify_encode(cfg, W, x),
               lambda f: f @ W["W_dec"] + W["b_dec"], latent, value, f"sparsify clamp {value}")
    # Gemma Scope JumpReLU (.npz) at blocks.0.hook_mlp_out, hook named by a cfg.json
    hook = "blocks.0.hook_mlp_out"
    d, W = write_gemma(tmp_path / "g", gemma_weights(4, hooks[hook].shape[1], 80, hooks[hook].shape[1]), "npz",
                       cfg={"hook_name": hook})
    f = jumprelu_encode(W, hooks[hook])
    latent = int(np.argmax((f > 0).sum(0)))
    clamp_case(scalpel, m, path, tmp_path, d, hook, lambda x: jumprelu_encode(W, x),
               lambda f: plain_decode(W, f), latent, value, f"gemma scope clamp {value}")


def test_transcoder_decoder_row_steers_its_output_hook(scalpel, tiny, ref, tmp_path):
    """{"from": "sae"} with a transcoder: the decoder row lives at the output hook."""
    path = tiny[TINY]["path"]
    m = ref(path)
    folder, cfg, (_, h_out) = SPARSIFY["transcoder_mlp"]
    ids = m.tokenizer.encode("The dog sleeps")
    hooks = hooks_of(m, ids)
    d, W = write_sparsify(tmp_path / "t", folder, cfg, seed=9, d_in=hooks[h_out].shape[1])
    doc = {"version": 1, "interventions": [{"hook": h_out, "op": "add", "scale": 2.0,
                                            "vector": {"from": "sae", "latent": 4}}]}
    dp = tmp_path / "row.json"
    dp.write_text(json.dumps(doc))
    got = hook_array(scalpel.json("activations", "--model", path, "--ids", ",".join(map(str, ids)), "--hook", h_out,
                                  "--interventions", dp, "--sae", d))
    assert np.abs(got - (hooks[h_out] + 2.0 * W["W_dec"][4])).max() < TOL
    # clamping a transcoder through an error term is refused, naming why
    dp.write_text(json.dumps({"version": 1, "interventions": [
        {"hook": h_out, "op": "sae_clamp", "latent": 1, "value": 1.0}]}))
    p = scalpel.run("logits", "--model", path, "--ids", ",".join(map(str, ids)), "--interventions", dp, "--sae", d)
    assert p.returncode != 0 and "transcoder" in p.stderr and "panicked" not in p.stderr


# ---------------------------------------------------------------- bad inputs
def test_bad_dictionaries_are_refused_by_name(scalpel, tiny, ref, tmp_path):
    from safetensors.numpy import save_file

    path = tiny[TINY]["path"]
    m = ref(path)
    d_model, n_layers = m.cfg["d_model"], m.cfg["n_layers"]

    def refused(d, *extra, want):
        p = scalpel.run("features", "--model", path, "--sae", d, "--prompt", "hi", "--json", *extra)
        assert p.returncode != 0, f"{d} was accepted"
        assert "panicked" not in p.stderr, p.stderr
        for w in want if isinstance(want, list) else [want]:
            assert w in p.stderr, f"{w!r} not in: {p.stderr}"
        print("refused:", p.stderr.strip().splitlines()[-1])
        return p.stderr

    refused(tmp_path / "nowhere", want="not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, want="no dictionary weights")
    # sparsify: wrong d_in for the hook, unknown folder, layer out of range, bad activation, wrong shape
    d, _ = write_sparsify(tmp_path / "a", "layers.0", dict(k=4, num_latents=32), 0, d_in=d_model // 2)
    refused(d, want=[f"d_in is {d_model // 2}", f"d_model is {d_model}"])
    d, _ = write_sparsify(tmp_path / "b", "encoder_stuff", dict(k=4, num_latents=32), 0, d_in=d_model)
    refused(d, want="sparsify folder 'encoder_stuff'")
    d, _ = write_sparsify(tmp_path / "c", f"layers.{n_layers + 3}", dict(k=4, num_latents=32), 0, d_in=d_model)
    refused(d, want=f"blocks.{n_layers + 3}.hook_resid_post")
    d, _ = write_sparsify(tmp_path / "e", "layers.0", dict(k=4, num_latents=32, activation="softmax"), 0, d_in=d_model)
    refused(d, want="activation 'softmax'")
    d, _ = write_sparsify(tmp_path / "f", "layers.0", dict(k=4, num_latents=32), 0, d_in=d_model)
    (tmp_path / "f" / "layers.0" / "cfg.json").write_text(json.dumps({"k": 4, "num_latents": 48, "d_in": d_model}))
    refused(d, want=["encoder.weight", "[32,", "[48,"])
    os.remove(os.path.join(d, "cfg.json"))
    refused(d, want="cfg.json is missing")
    # SAELens: unknown architecture; two weights files
    d = tmp_path / "g"
    d.mkdir()
    save_file({"W_enc": np.zeros((d_model, 8), np.float32)}, str(d / "sae_weights.safetensors"))
    (d / "cfg.json").write_text(json.dumps({"architecture": "gated", "d_in": d_model, "d_sae": 8,
                                            "hook_name": "blocks.0.hook_resid_pre"}))
    refused(d, want="architecture 'gated' is not supported")
    save_file({"W_enc": np.zeros((d_model, 8), np.float32)}, str(d / "sae.safetensors"))
    refused(d, want="more than one weights file")
    # Gemma Scope: a compressed archive, a missing threshold, a transcoder without its output hook
    gw = gemma_weights(0, d_model, 16, d_model)
    d = tmp_path / "h"
    d.mkdir()
    np.savez_compressed(d / "params.npz", **gw)
    refused(d, "--hook", "blocks.0.hook_resid_post", want="np.savez_compressed")
    d, _ = write_gemma(tmp_path / "i", {k: v for k, v in gw.items() if k != "threshold"}, "npz")
    refused(d, "--hook", "blocks.0.hook_resid_post", want="'threshold'")
    d, _ = write_gemma(tmp_path / "j", gemma_weights(0, d_model, 16, d_model * 2), "npz")
    refused(d, "--hook", "blocks.0.hook_resid_post", want="output hook")
    d, _ = write_gemma(tmp_path / "k", gemma_weights(0, d_model, 16, d_model), "npz")
    refused(d, "--hook", "blocks.0.hook_nonsense", want="blocks.0.hook_nonsense")


# ---------------------------------------------------------------- the default model
@requires_smol
def test_smollm_sparsify_sae_and_transcoder(scalpel, smol, smol_ref, tmp_path):
    """SmolLM2-135M with tiny random sparsify dictionaries (576-wide, as
    EleutherAI/sae-SmolLM2-135M-64x but 512 latents). The model's own
    activations differ from the float64 reference by its forward-pass error
    (test_activations: atol 1e-3): the dictionary is checked exactly on the
    CLI's input (--full), and the input against the reference."""
    m = smol_ref
    ids = m.tokenizer.encode("The capital of France is Paris, and the capital of Germany is")
    hooks = hooks_of(m, ids)
    for folder, cfg, (h_in, h_out) in [
        ("layers.6", dict(k=16, num_latents=512), ("blocks.6.hook_resid_post", None)),
        ("layers.3.mlp", dict(k=16, num_latents=512, transcode=True, skip_connection=True, activation="topk"),
         ("blocks.3.ln2.hook_normalized", "blocks.3.hook_mlp_out")),
    ]:
        d, W = write_sparsify(tmp_path / folder, folder, cfg, seed=13, d_in=576)
        r = features(scalpel, smol, d, ids, k=8)
        assert r["hook"] == h_in and r.get("hook_out") == h_out
        x = np.asarray(r["input"])
        ex = float(np.abs(x - hooks[h_in]).max())
        assert np.allclose(x, hooks[h_in], atol=1e-3, rtol=2e-5), f"{h_in}: input differs by {ex}"
        y = np.asarray(r["target"])
        assert np.allclose(y, hooks[h_out or h_in], atol=1e-3, rtol=2e-5)
        f = sparsify_encode(cfg, W, x)
        check_features(r, f, sparsify_decode(W, f, x), y, 8, f"smollm sparsify {folder} (input vs reference {ex:.1e})")
        # from the reference's own activations: the same latents fire
        f_ref = sparsify_encode(cfg, W, hooks[h_in])
        same = np.mean([set(np.flatnonzero(a)) == set(np.flatnonzero(b)) for a, b in zip(f, f_ref)])
        print(f"  active sets equal to the float64 reference's at {same:.0%} of positions, "
              f"max|dlatent| {np.abs(f - f_ref).max():.1e}")
        assert same == 1.0
    # circuit-tracer: a JumpReLU skip transcoder on layer 4's MLP (mlp.hook_in -> mlp.hook_out)
    body, (h_in, h_out) = CIRCUIT_TRACER["jumprelu_skip_mlp_in_out"][0], ("blocks.4.ln2.hook_normalized", "blocks.4.hook_mlp_out")
    f_path, W = write_circuit_tracer(tmp_path / "ct", 4, CT_HEAD + body, 13, 576, 576, 512,
                                     threshold=lambda rng, n: np.abs(rnd(rng, n, scale=0.5)), skip=True)
    r = features(scalpel, smol, f_path, ids, k=8)
    assert r["hook"] == h_in and r["hook_out"] == h_out
    x, y = np.asarray(r["input"]), np.asarray(r["target"])
    assert np.allclose(x, hooks[h_in], atol=1e-3, rtol=2e-5) and np.allclose(y, hooks[h_out], atol=1e-3, rtol=2e-5)
    f = circuit_tracer_encode(W, x, None)
    check_features(r, f, circuit_tracer_decode(W, f, x), y, 8, "smollm circuit-tracer layer_4")


@requires_smol
def test_smollm_clamp_and_ablate(scalpel, smol, smol_ref, tmp_path):
    m = smol_ref
    ids = m.tokenizer.encode(PROMPT)  # clamp_case runs PROMPT
    folder, cfg, hook = "layers.6", dict(k=16, num_latents=512), "blocks.6.hook_resid_post"
    d, W = write_sparsify(tmp_path / folder, folder, cfg, seed=13, d_in=576)
    clean, hooks = m.forward(ids)
    x = np.asarray(hooks[hook], dtype=np.float64).reshape(len(ids), -1)
    f = sparsify_encode(cfg, W, x)
    latent = int(np.argmax((f > 0).sum(0)))
    for value in [0.0, 20.0]:
        # the model's own forward error (test_logits: 1e-3) bounds the logits' agreement
        clamp_case(scalpel, m, smol, tmp_path, d, hook, lambda x: sparsify_encode(cfg, W, x),
                   lambda f: f @ W["W_dec"] + W["b_dec"], latent, value, f"smollm clamp {value}", atol=1e-3, clean=clean, x=x)
