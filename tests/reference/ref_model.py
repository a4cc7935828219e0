"""Independent NumPy reference forward passes (float64 by default).

  * llama from GGUF: every tensor dequantized with gguf.quants.dequantize,
    computed in the GGUF row layout with llama.cpp's interleaved rope
    (rotate pairs (2i, 2i+1) by pos * theta^(-2i/d));
  * llama from a Hugging Face directory (safetensors): rotate_half rope on
    the two halves of each head;
  * GPT-2 from a Hugging Face directory: LayerNorm, learned positions,
    gelu_new (tanh), Conv1D (x @ W + b).

Model.forward(ids) -> (logits [pos, vocab], hooks) where hooks uses
TransformerLens names for one sequence (no batch dim):
  hook_embed, hook_pos_embed (gpt2), blocks.{l}.hook_resid_pre,
  blocks.{l}.ln1.hook_normalized, blocks.{l}.attn.hook_q/_k/_v [pos, head, d_head]
  (k, v with the kv-head count), blocks.{l}.attn.hook_rot_q/_rot_k (llama),
  blocks.{l}.attn.hook_attn_scores [head, q, k] (scaled, masked = -inf),
  blocks.{l}.attn.hook_pattern, blocks.{l}.attn.hook_z [pos, head, d_head],
  blocks.{l}.hook_attn_out, hook_resid_mid, ln2.hook_normalized,
  mlp.hook_pre, mlp.hook_pre_linear (llama), mlp.hook_post, hook_mlp_out,
  hook_resid_post, ln_final.hook_normalized.
hook_normalized is the norm's full output (weight, and bias for LayerNorm,
applied), i.e. what TransformerLens shows with fold_ln=False.

Layout contract: for GGUF models q/k/rot_q/rot_k hooks are converted to the
Hugging Face head-dim order (GGUF dim 2i+j <-> HF dim j*(d/2)+i), which is
what the engine reports.

    python ref_model.py MODEL --prompt "text" [--hook NAME] [--generate N]
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402


# ---------------------------------------------------------------- helpers
def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    return xc / np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True) + eps) * w + b


def gelu_new(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def rope_interleaved(x, theta):
    """llama.cpp LLAMA_ROPE_TYPE_NORM on [pos, head, d]: pairs (2i, 2i+1)."""
    P, _, d = x.shape
    i = np.arange(d // 2, dtype=np.float64)
    ang = np.arange(P, dtype=np.float64)[:, None] * theta ** (-2.0 * i / d)[None, :]  # [P, d/2]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def rope_half(x, theta):
    """Hugging Face rotate_half rope on [pos, head, d]: pairs (i, i + d/2)."""
    P, _, d = x.shape
    i = np.arange(d // 2, dtype=np.float64)
    ang = np.arange(P, dtype=np.float64)[:, None] * theta ** (-2.0 * i / d)[None, :]
    ang = np.concatenate([ang, ang], axis=-1)
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    rot = np.concatenate([-x2, x1], axis=-1)
    return x * c + rot * s


def gguf_to_hf_order(x):
    """[..., d] within-head GGUF (interleaved) order -> HF (halves) order:
    hf[j*(d/2)+i] = gguf[2i+j]."""
    d = x.shape[-1]
    return x.reshape(*x.shape[:-1], d // 2, 2).swapaxes(-1, -2).reshape(x.shape)


def attention(q, k, v, n_rep):
    """q [P,H,hd], k/v [P,KV,hd] -> scores [H,P,P] (masked -inf), pattern, z [P,H,hd]"""
    P, H, hd = q.shape
    kk = np.repeat(k, n_rep, axis=1)  # q head h uses kv head h // n_rep (HF repeat_kv, llama.cpp)
    vv = np.repeat(v, n_rep, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, kk) / np.sqrt(hd)
    mask = np.triu(np.ones((P, P), dtype=bool), k=1)
    scores = np.where(mask[None], -np.inf, scores)
    pattern = softmax(scores, -1)
    z = np.einsum("hqk,khd->qhd", pattern, vv)
    return scores, pattern, z


# ---------------------------------------------------------------- model
class Model:
    def __init__(self, arch, cfg, weights, layout, tokenizer, dtype=np.float64, path=None):
        self.arch, self.cfg, self.w, self.layout, self.tokenizer = arch, cfg, weights, layout, tokenizer
        self.dtype, self.path = dtype, path

    # cfg keys: d_model n_layers n_heads n_kv_heads d_head d_mlp vocab eps rope_theta n_ctx eos_id
    def forward(self, ids, want_hooks=True):
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or len(ids) == 0:
            raise ValueError("ids must be a non-empty 1-D sequence")
        if self.arch == "llama":
            return self._llama(ids, want_hooks)
        return self._gpt2(ids, want_hooks)

    def _llama(self, ids, want_hooks):
        c, w, dt = self.cfg, self.w, self.dtype
        H, KV, hd, eps, theta = c["n_heads"], c["n_kv_heads"], c["d_head"], c["eps"], c["rope_theta"]
        P = len(ids)
        hooks = {}
        rec = (lambda k, v: hooks.__setitem__(k, v)) if want_hooks else (lambda k, v: None)
        fix = gguf_to_hf_order if self.layout == "gguf" else (lambda a: a)
        rope = rope_interleaved if self.layout == "gguf" else rope_half
        x = w["embed"][ids].astype(dt)
        rec("hook_embed", x)
        for l in range(c["n_layers"]):
            L = w["layers"][l]
            p = f"blocks.{l}."
            rec(p + "hook_resid_pre", x)
            h = rmsnorm(x, L["attn_norm"], eps)
            rec(p + "ln1.hook_normalized", h)
            q = (h @ L["wq"].T).reshape(P, H, hd)
            k = (h @ L["wk"].T).reshape(P, KV, hd)
            v = (h @ L["wv"].T).reshape(P, KV, hd)
            rq, rk = rope(q, theta), rope(k, theta)
            rec(p + "attn.hook_q", fix(q))
            rec(p + "attn.hook_k", fix(k))
            rec(p + "attn.hook_v", v)
            rec(p + "attn.hook_rot_q", fix(rq))
            rec(p + "attn.hook_rot_k", fix(rk))
            scores, pattern, z = attention(rq, rk, v, H // KV)
            rec(p + "attn.hook_attn_scores", scores)
            rec(p + "attn.hook_pattern", pattern)
            rec(p + "attn.hook_z", z)
            attn_out = z.reshape(P, H * hd) @ L["wo"].T
            rec(p + "hook_attn_out", attn_out)
            x = x + attn_out
            rec(p + "hook_resid_mid", x)
            h2 = rmsnorm(x, L["ffn_norm"], eps)
            rec(p + "ln2.hook_normalized", h2)
            gate = h2 @ L["w_gate"].T
            up = h2 @ L["w_up"].T
            post = silu(gate) * up
            rec(p + "mlp.hook_pre", gate)
            rec(p + "mlp.hook_pre_linear", up)
            rec(p + "mlp.hook_post", post)
            mlp_out = post @ L["w_down"].T
            rec(p + "hook_mlp_out", mlp_out)
            x = x + mlp_out
            rec(p + "hook_resid_post", x)
        f = rmsnorm(x, w["norm_f"], eps)
        rec("ln_final.hook_normalized", f)
        logits = f @ w["lm_head"].T
        return logits, hooks

    def _gpt2(self, ids, want_hooks):
        c, w, dt = self.cfg, self.w, self.dtype
        H, hd, eps, d = c["n_heads"], c["d_head"], c["eps"], c["d_model"]
        P = len(ids)
        if P > c["n_ctx"]:
            raise ValueError("sequence longer than n_positions")
        hooks = {}
        rec = (lambda k, v: hooks.__setitem__(k, v)) if want_hooks else (lambda k, v: None)
        e = w["wte"][ids].astype(dt)
        pe = w["wpe"][:P].astype(dt)
        rec("hook_embed", e)
        rec("hook_pos_embed", pe)
        x = e + pe
        for l in range(c["n_layers"]):
            L = w["layers"][l]
            p = f"blocks.{l}."
            rec(p + "hook_resid_pre", x)
            h = layernorm(x, L["ln_1.weight"], L["ln_1.bias"], eps)
            rec(p + "ln1.hook_normalized", h)
            qkv = h @ L["attn.c_attn.weight"] + L["attn.c_attn.bias"]  # Conv1D: [d, 3d]
            q, k, v = (qkv[:, i * d:(i + 1) * d].reshape(P, H, hd) for i in range(3))
            rec(p + "attn.hook_q", q)
            rec(p + "attn.hook_k", k)
            rec(p + "attn.hook_v", v)
            scores, pattern, z = attention(q, k, v, 1)
            rec(p + "attn.hook_attn_scores", scores)
            rec(p + "attn.hook_pattern", pattern)
            rec(p + "attn.hook_z", z)
            attn_out = z.reshape(P, d) @ L["attn.c_proj.weight"] + L["attn.c_proj.bias"]
            rec(p + "hook_attn_out", attn_out)
            x = x + attn_out
            rec(p + "hook_resid_mid", x)
            h2 = layernorm(x, L["ln_2.weight"], L["ln_2.bias"], eps)
            rec(p + "ln2.hook_normalized", h2)
            pre = h2 @ L["mlp.c_fc.weight"] + L["mlp.c_fc.bias"]
            post = gelu_new(pre)
            rec(p + "mlp.hook_pre", pre)
            rec(p + "mlp.hook_post", post)
            mlp_out = post @ L["mlp.c_proj.weight"] + L["mlp.c_proj.bias"]
            rec(p + "hook_mlp_out", mlp_out)
            x = x + mlp_out
            rec(p + "hook_resid_post", x)
        f = layernorm(x, w["ln_f.weight"], w["ln_f.bias"], eps)
        rec("ln_final.hook_normalized", f)
        logits = f @ w["wte"].T
        return logits, hooks

    def greedy(self, ids, n_new, stop_at_eos=False):
        """Greedy decoding by full recomputation (no KV cache).
        Returns (new_ids, margins) where margins[i] = top1 - top2 logit at step i."""
        ids = list(ids)
        out, margins = [], []
        for _ in range(n_new):
            logits, _ = self.forward(ids, want_hooks=False)
            last = logits[-1]
            order = np.argsort(-last, kind="stable")
            nxt = int(order[0])
            margins.append(float(last[order[0]] - last[order[1]]))
            out.append(nxt)
            ids.append(nxt)
            if stop_at_eos and nxt == self.cfg.get("eos_id"):
                break
        return out, margins

    def hook_names(self):
        _, h = self.forward([0], want_hooks=True)
        return list(h)


# ---------------------------------------------------------------- loading
def load_gguf(path, dtype=np.float64) -> Model:
    import gguf

    r = gguf.GGUFReader(path)
    f = r.fields
    get = lambda k, default=None: f[k].contents() if k in f else default  # noqa: E731
    arch = get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: architecture {arch!r} not supported by the reference")
    T = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type)
        want = tuple(int(x) for x in reversed(t.shape))
        a = np.asarray(a).reshape(want)
        T[t.name] = a.astype(dtype)
    d = get("llama.embedding_length")
    H = get("llama.attention.head_count")
    KV = get("llama.attention.head_count_kv", H)
    cfg = dict(d_model=d, n_layers=get("llama.block_count"), n_heads=H, n_kv_heads=KV, d_head=d // H,
               d_mlp=get("llama.feed_forward_length"), vocab=T["token_embd.weight"].shape[0],
               eps=float(get("llama.attention.layer_norm_rms_epsilon")),
               rope_theta=float(get("llama.rope.freq_base", 10000.0)), n_ctx=get("llama.context_length"),
               eos_id=get("tokenizer.ggml.eos_token_id"), bos_id=get("tokenizer.ggml.bos_token_id"))
    layers = []
    for i in range(cfg["n_layers"]):
        g = f"blk.{i}."
        layers.append(dict(attn_norm=T[g + "attn_norm.weight"], wq=T[g + "attn_q.weight"], wk=T[g + "attn_k.weight"],
                           wv=T[g + "attn_v.weight"], wo=T[g + "attn_output.weight"],
                           ffn_norm=T[g + "ffn_norm.weight"], w_gate=T[g + "ffn_gate.weight"],
                           w_up=T[g + "ffn_up.weight"], w_down=T[g + "ffn_down.weight"]))
    w = dict(embed=T["token_embd.weight"], layers=layers, norm_f=T["output_norm.weight"],
             lm_head=T.get("output.weight", T["token_embd.weight"]))
    tok = bpe.BPETokenizer.from_gguf(path)
    return Model("llama", cfg, w, "gguf", tok, dtype, path)


def _read_hf_weights(d):
    from tiny_models import read_safetensors

    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as fh:
            files = sorted(set(json.load(fh)["weight_map"].values()))
        T = {}
        for fn in files:
            T.update(read_safetensors(os.path.join(d, fn)))
        return T
    return read_safetensors(os.path.join(d, "model.safetensors"))


def load_hf(d, dtype=np.float64) -> Model:
    with open(os.path.join(d, "config.json")) as fh:
        hc = json.load(fh)
    T = {k: v.astype(dtype) for k, v in _read_hf_weights(d).items()}
    tok = bpe.BPETokenizer.from_tokenizer_json(os.path.join(d, "tokenizer.json"))
    mt = hc["model_type"]
    if mt == "gpt2":
        T = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in T.items()}
        dm, H = hc["n_embd"], hc["n_head"]
        cfg = dict(d_model=dm, n_layers=hc["n_layer"], n_heads=H, n_kv_heads=H, d_head=dm // H,
                   d_mlp=hc.get("n_inner") or 4 * dm, vocab=hc["vocab_size"], eps=hc["layer_norm_epsilon"],
                   n_ctx=hc["n_positions"], eos_id=hc.get("eos_token_id"))
        assert hc.get("activation_function", "gelu_new") == "gelu_new"
        keys = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                "mlp.c_proj.weight", "mlp.c_proj.bias"]
        layers = [{k: T[f"h.{i}.{k}"] for k in keys} for i in range(cfg["n_layers"])]
        w = dict(wte=T["wte.weight"], wpe=T["wpe.weight"], layers=layers, **{"ln_f.weight": T["ln_f.weight"],
                                                                            "ln_f.bias": T["ln_f.bias"]})
        return Model("gpt2", cfg, w, "hf", tok, dtype, d)
    if mt == "llama":
        dm, H = hc["hidden_size"], hc["num_attention_heads"]
        KV = hc.get("num_key_value_heads", H)
        cfg = dict(d_model=dm, n_layers=hc["num_hidden_layers"], n_heads=H, n_kv_heads=KV,
                   d_head=hc.get("head_dim", dm // H), d_mlp=hc["intermediate_size"], vocab=hc["vocab_size"],
                   eps=hc["rms_norm_eps"], rope_theta=hc.get("rope_theta", 10000.0),
                   n_ctx=hc.get("max_position_embeddings"), eos_id=hc.get("eos_token_id"))
        layers = []
        for i in range(cfg["n_layers"]):
            p = f"model.layers.{i}."
            layers.append(dict(attn_norm=T[p + "input_layernorm.weight"], wq=T[p + "self_attn.q_proj.weight"],
                               wk=T[p + "self_attn.k_proj.weight"], wv=T[p + "self_attn.v_proj.weight"],
                               wo=T[p + "self_attn.o_proj.weight"], ffn_norm=T[p + "post_attention_layernorm.weight"],
                               w_gate=T[p + "mlp.gate_proj.weight"], w_up=T[p + "mlp.up_proj.weight"],
                               w_down=T[p + "mlp.down_proj.weight"]))
        lm = T["model.embed_tokens.weight"] if hc.get("tie_word_embeddings", False) else T["lm_head.weight"]
        w = dict(embed=T["model.embed_tokens.weight"], layers=layers, norm_f=T["model.norm.weight"], lm_head=lm)
        return Model("llama", cfg, w, "hf", tok, dtype, d)
    raise ValueError(f"{d}: model_type {mt!r} not supported by the reference")


def load(path, dtype=np.float64) -> Model:
    if os.path.isdir(path):
        return load_hf(path, dtype)
    return load_gguf(path, dtype)


def kl_divergence(logits_p, logits_q):
    """KL(p || q) per position, from logits [pos, vocab]."""
    lp, lq = log_softmax(np.asarray(logits_p, np.float64)), log_softmax(np.asarray(logits_q, np.float64))
    return (np.exp(lp) * (lp - lq)).sum(-1)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt")
    ap.add_argument("--ids")
    ap.add_argument("--hook")
    ap.add_argument("--generate", type=int, default=0)
    ap.add_argument("--top-k", type=int, default=5)
    a = ap.parse_args()
    m = load(a.model)
    ids = [int(x) for x in a.ids.split(",")] if a.ids else m.tokenizer.encode(a.prompt)
    logits, hooks = m.forward(ids)
    last = logits[-1]
    top = np.argsort(-last)[: a.top_k]
    out = {"ids": ids, "argmax": [int(i) for i in logits.argmax(-1)],
           "top": [{"id": int(i), "token": m.tokenizer.token_text(int(i)), "logit": float(last[i])} for i in top],
           "logsumexp": float(np.log(np.exp(last - last.max()).sum()) + last.max())}
    if a.hook:
        v = hooks[a.hook]
        out["hook"] = {"name": a.hook, "shape": list(v.shape), "first": [float(x) for x in v.ravel()[:8]]}
    if a.generate:
        new, _ = m.greedy(ids, a.generate)
        out["generated"] = {"ids": new, "text": m.tokenizer.decode(new)}
    print(json.dumps(out, ensure_ascii=False, indent=1))


# ---------------------------------------------------------------- hooked forward (interventions)
def hf_to_gguf_order(x):
    """Inverse of gguf_to_hf_order: [..., d] HF (halves) order -> GGUF (interleaved)."""
    d = x.shape[-1]
    return x.reshape(*x.shape[:-1], 2, d // 2).swapaxes(-1, -2).reshape(x.shape)


def mm(x, w):
    """x [..., n] @ w [n, m] as one 2-D product (numpy's stacked matmul is far slower)."""
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


def _blocks(model, ids, x, first_layer, h, join=None):
    """Runs blocks first_layer.. on x [B, P, d] (B sequences of the same ids),
    calling h(name, value [B, ...]) -> value at every hook. join(l, x) may
    return a new x before layer l (used to add sequences that start there).
    Returns the final norm's output [B, P, d]."""
    c, w = model.cfg, model.w
    P = len(ids)
    mask = np.triu(np.ones((P, P), dtype=bool), k=1)

    def attend(l, q, k, v, n_rep):
        p = f"blocks.{l}."
        hd = q.shape[-1]
        kk, vv = np.repeat(k, n_rep, axis=2), np.repeat(v, n_rep, axis=2)
        scores = np.einsum("bqhd,bkhd->bhqk", q, kk) / np.sqrt(hd)
        scores = h(p + "attn.hook_attn_scores", np.where(mask[None, None], -np.inf, scores))
        with np.errstate(invalid="ignore"):
            pattern = h(p + "attn.hook_pattern", softmax(scores, -1))
        return h(p + "attn.hook_z", np.einsum("bhqk,bkhd->bqhd", pattern, vv))

    if model.arch == "llama":
        H, KV, hd, eps, theta = c["n_heads"], c["n_kv_heads"], c["d_head"], c["eps"], c["rope_theta"]
        gg = model.layout == "gguf"
        to_hf = gguf_to_hf_order if gg else (lambda a: a)
        from_hf = hf_to_gguf_order if gg else (lambda a: a)
        rope1 = rope_interleaved if gg else rope_half
        rope = lambda a: np.stack([rope1(a[b], theta) for b in range(a.shape[0])])  # noqa: E731
        qk = lambda name, a: from_hf(h(name, to_hf(a)))  # noqa: E731
        for l in range(first_layer, c["n_layers"]):
            if join is not None:
                x = join(l, x)
            B = x.shape[0]
            L, p = w["layers"][l], f"blocks.{l}."
            x = h(p + "hook_resid_pre", x)
            hn = h(p + "ln1.hook_normalized", rmsnorm(x, L["attn_norm"], eps))
            q = qk(p + "attn.hook_q", mm(hn, L["wq"].T).reshape(B, P, H, hd))
            k = qk(p + "attn.hook_k", mm(hn, L["wk"].T).reshape(B, P, KV, hd))
            v = h(p + "attn.hook_v", mm(hn, L["wv"].T).reshape(B, P, KV, hd))
            rq = qk(p + "attn.hook_rot_q", rope(q))
            rk = qk(p + "attn.hook_rot_k", rope(k))
            z = attend(l, rq, rk, v, H // KV)
            x = h(p + "hook_resid_mid", x + h(p + "hook_attn_out", mm(z.reshape(B, P, H * hd), L["wo"].T)))
            h2 = h(p + "ln2.hook_normalized", rmsnorm(x, L["ffn_norm"], eps))
            gate = h(p + "mlp.hook_pre", mm(h2, L["w_gate"].T))
            up = h(p + "mlp.hook_pre_linear", mm(h2, L["w_up"].T))
            post = h(p + "mlp.hook_post", silu(gate) * up)
            x = h(p + "hook_resid_post", x + h(p + "hook_mlp_out", mm(post, L["w_down"].T)))
        return h("ln_final.hook_normalized", rmsnorm(x, w["norm_f"], eps))
    H, hd, eps, d = c["n_heads"], c["d_head"], c["eps"], c["d_model"]
    for l in range(first_layer, c["n_layers"]):
        if join is not None:
            x = join(l, x)
        B = x.shape[0]
        L, p = w["layers"][l], f"blocks.{l}."
        x = h(p + "hook_resid_pre", x)
        hn = h(p + "ln1.hook_normalized", layernorm(x, L["ln_1.weight"], L["ln_1.bias"], eps))
        qkv = mm(hn, L["attn.c_attn.weight"]) + L["attn.c_attn.bias"]
        q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(B, P, H, hd) for i in range(3))
        q, k, v = h(p + "attn.hook_q", q), h(p + "attn.hook_k", k), h(p + "attn.hook_v", v)
        z = attend(l, q, k, v, 1)
        attn_out = h(p + "hook_attn_out", mm(z.reshape(B, P, d), L["attn.c_proj.weight"]) + L["attn.c_proj.bias"])
        x = h(p + "hook_resid_mid", x + attn_out)
        h2 = h(p + "ln2.hook_normalized", layernorm(x, L["ln_2.weight"], L["ln_2.bias"], eps))
        pre = h(p + "mlp.hook_pre", mm(h2, L["mlp.c_fc.weight"]) + L["mlp.c_fc.bias"])
        post = h(p + "mlp.hook_post", gelu_new(pre))
        x = h(p + "hook_resid_post", x + h(p + "hook_mlp_out", mm(post, L["mlp.c_proj.weight"]) + L["mlp.c_proj.bias"]))
    return h("ln_final.hook_normalized", layernorm(x, w["ln_f.weight"], w["ln_f.bias"], eps))


def _embed(model, ids, h):
    w, dt = model.w, model.dtype
    if model.arch == "llama":
        return h("hook_embed", w["embed"][ids][None].astype(dt))
    P = len(ids)
    return h("hook_embed", w["wte"][ids][None].astype(dt)) + h("hook_pos_embed", w["wpe"][:P][None].astype(dt))


def _unembed(model, f):
    return mm(f, (model.w["lm_head"] if model.arch == "llama" else model.w["wte"]).T)


def forward_hooked(model, ids, fn=None, from_layer=0, resid=None, record=None, last_only=False):
    """Forward pass that lets `fn(name, value)` replace any hook value.

    Same conventions as Model.forward (TransformerLens names, one sequence, no
    batch dim, q/k/rot_q/rot_k in Hugging Face head-dim order even for GGUF).
    `fn` returns the new value (same shape) or None to leave it alone; the
    value a hook holds afterwards is what the rest of the model uses, and what
    `record` (a set of names, or None for none) saves. With `from_layer` > 0,
    `resid` is the value of blocks.{from_layer}.hook_resid_pre and the run
    starts there (earlier layers cannot change). Returns (logits [pos, vocab]
    or [vocab] when last_only, {name: value}).
    """
    ids = np.asarray(ids, dtype=np.int64)
    rec = {}

    def h(name, v):
        if fn is not None:
            out = fn(name, v[0])
            if out is not None:
                assert out.shape == v.shape[1:], (name, out.shape, v.shape)
                v = np.asarray(out, dtype=np.float64)[None]
        if record is not None and name in record:
            rec[name] = np.array(v[0], copy=True)
        return v

    x = _embed(model, ids, h) if from_layer == 0 else np.asarray(resid, dtype=np.float64)[None]
    f = _blocks(model, ids, x, from_layer, h)[0]
    return _unembed(model, f[-1] if last_only else f), rec


def forward_cells(model, ids, cells):
    """Many hooked runs of the same ids at once, for patching sweeps: cells is a
    list of (from_layer, resid, fn) with resid the value of
    blocks.{from_layer}.hook_resid_pre and fn(name, value) as in
    forward_hooked (per sequence). Each run starts at its own layer; the runs
    of a layer share its matrix products. Returns last-position logits [len(cells), vocab]."""
    ids = np.asarray(ids, dtype=np.int64)
    order = sorted(range(len(cells)), key=lambda i: cells[i][0])
    active = []  # cell indices, in the batch's order

    def join(l, x):
        new = [i for i in order if cells[i][0] == l]
        if not new:
            return x
        active.extend(new)
        add = np.stack([np.asarray(cells[i][1], dtype=np.float64) for i in new])
        return add if x is None or x.shape[0] == 0 else np.concatenate([x, add])

    def h(name, v):
        for b, i in enumerate(active):
            out = cells[i][2](name, v[b])
            if out is not None:
                assert out.shape == v.shape[1:], (name, out.shape, v.shape)
                v = v.copy()
                v[b] = out
        return v

    first = min(c[0] for c in cells)
    f = _blocks(model, ids, None, first, h, join=join)
    logits = _unembed(model, f[:, -1])
    out = np.empty((len(cells), logits.shape[-1]))
    for b, i in enumerate(active):
        out[i] = logits[b]
    return out


def greedy_hooked(model, ids, n_new, make_fn, stop_ids=()):
    """Greedy decoding by full recomputation; `make_fn(seq_len)` gives the hook
    function for a pass over `seq_len` tokens. Returns (new_ids, margins)."""
    ids = list(ids)
    out, margins = [], []
    for _ in range(n_new):
        last, _ = forward_hooked(model, ids, make_fn(len(ids)), last_only=True)
        order = np.argsort(-last, kind="stable")
        nxt = int(order[0])
        margins.append(float(last[order[0]] - last[order[1]]))
        out.append(nxt)
        ids.append(nxt)
        if nxt in stop_ids:
            break
    return out, margins


# ---------------------------------------------------------------- block weights (low_rank / LASER)
LLAMA_MATRICES = {"q": "wq", "k": "wk", "v": "wv", "o": "wo", "gate": "w_gate", "up": "w_up", "down": "w_down"}
GPT2_MATRICES = {"o": "attn.c_proj.weight", "up": "mlp.c_fc.weight", "down": "mlp.c_proj.weight"}  # Conv1D [in, out]


def block_weight(model, layer, matrix):
    """Block weight `matrix` (q k v o gate up down) of `layer` as [out, in] float64. GGUF q/k rows
    are in their stored (interleaved) order; GPT-2's q/k/v are column slices of the fused c_attn.
    Raises KeyError for a matrix the model does not have (GPT-2 has no gate)."""
    L = model.w["layers"][layer]
    if model.arch == "llama":
        return np.asarray(L[LLAMA_MATRICES[matrix]], np.float64)
    d = model.cfg["d_model"]
    if matrix in ("q", "k", "v"):
        i = "qkv".index(matrix)
        return np.asarray(L["attn.c_attn.weight"][:, i * d:(i + 1) * d], np.float64).T
    return np.asarray(L[GPT2_MATRICES[matrix]], np.float64).T


def with_block_weight(model, layer, matrix, w):
    """A copy of `model` whose block weight `matrix` of `layer` is `w` ([out, in]); biases and every
    other array are shared with the original (which is left unchanged)."""
    w = np.asarray(w, np.float64)
    layers = list(model.w["layers"])
    L = dict(layers[layer])
    if model.arch == "llama":
        key = LLAMA_MATRICES[matrix]
        assert L[key].shape == w.shape, (L[key].shape, w.shape)
        L[key] = w
    elif matrix in ("q", "k", "v"):
        d = model.cfg["d_model"]
        i = "qkv".index(matrix)
        fused = np.array(L["attn.c_attn.weight"], np.float64, copy=True)
        fused[:, i * d:(i + 1) * d] = w.T
        L["attn.c_attn.weight"] = fused
    else:
        key = GPT2_MATRICES[matrix]
        assert L[key].shape == w.T.shape, (L[key].shape, w.shape)
        L[key] = w.T
    layers[layer] = L
    return Model(model.arch, model.cfg, {**model.w, "layers": layers}, model.layout, model.tokenizer,
                 model.dtype, model.path)


def low_rank_approx(w, k):
    """Rank-k approximation of a matrix from its SVD (the k largest singular values; Eckart-Young)."""
    u, s, vt = np.linalg.svd(np.asarray(w, np.float64), full_matrices=False)
    return (u[:, :k] * s[:k]) @ vt[:k]
