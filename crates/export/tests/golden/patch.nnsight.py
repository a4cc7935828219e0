#!/usr/bin/env python3
"""A Scalpel intervention document, exported for nnsight by `scalpel export` (docs/export.md).

Needs nnsight (`pip install nnsight`). Runs locally, or on NDIF with --remote
(an NDIF API key; the model must be one NDIF hosts).
Run: python THIS.py [--model NAME_OR_DIR] [--prompt TEXT] [--max-new-tokens N] [--remote]

Every intervention of the document is exported.
"""

MODEL = "tests/fixtures/arch/llama"
ARCH = "llama"
PROMPT = "The cat sat on the mat and"
MAX_NEW_TOKENS = 0

# The interventions, in document order (`blocks.*` expanded per layer). Positions:
# negative indices count from the end of the prompt, as in Scalpel.
IV = [
    dict(index=0, hook="blocks.1.hook_resid_pre", op="patch", positions=("list", [1, -1]), heads=None, neurons=None, source="The cat ran on the mat and"),
    dict(index=1, hook="blocks.1.attn.hook_z", op="set_projection", positions=("all",), heads=[2], neurons=None, direction=[0.513052, -0.297584, -0.530008, -0.236155, 1.816476, -0.049801, 0.086619, -1.487073], value=None, cap=None, source="The cat ran on the mat and"),
    dict(index=2, hook="blocks.0.hook_mlp_out", op="mean", positions=("all",), heads=None, neurons=None, over=["The cat ran on the mat and", "Hello world"]),
    dict(index=3, hook="blocks.2.mlp.hook_post", op="set_projection", positions=("all",), heads=None, neurons=None, direction=[1.647339, 0.917488, 1.066935, 0.047673, 0.916655, 0.370947, 0.613189, -0.152193, -1.473888, 1.028854, -1.93496, -0.239937, -0.204522, -1.04286, 0.613123, -0.20033, -0.436868, 0.519842, -0.476579, 1.38898, 0.351455, -0.474333, -1.944265, -1.307753, 1.086831, -0.050604, -0.283125, 1.643252, -1.282649, -0.585658, -0.472588, 0.586337, -0.663535, -0.613418, -1.605149, 0.729349, 0.806139, -0.476377, 0.16334, -1.292646, -0.471813, 1.377951, 0.135731, 2.310363, -0.787193, 0.580284, -0.195506, 0.565818, -0.007211, -0.561198, -0.867617, 3.066037, -0.077345, -2.016661, -0.648601, 0.67804, -0.500008, 1.360446, 1.002398, -0.152339, -0.472216, -1.004801, -0.699967, -1.473143], value=2.0, cap=None, source=None),
]

# Where nnsight reads each hook, in the order the forward pass reaches it:
# (module path, "input" or "output", heads to split the last axis into, hook names).
SITES = [
    ("model.layers.0.mlp", "output", None, ["blocks.0.hook_mlp_out"]),
    ("model.layers.1", "input", None, ["blocks.1.hook_resid_pre"]),
    ("model.layers.1.self_attn.o_proj", "input", 4, ["blocks.1.attn.hook_z"]),
    ("model.layers.2.mlp.down_proj", "input", None, ["blocks.2.mlp.hook_post"]),
]

# ---- Scalpel's semantics, shared by the nnsight and TransformerLens exports ----
# Each hook value has a batch axis of 1: residual-like [1, pos, d], per head
# [1, pos, head, d_head], attention scores / pattern [1, head, query, key].
# An intervention builds a mask (positions x heads x units), computes the op
# on the whole value and keeps it where the mask is set, as Scalpel does.
# Generation re-runs the whole sequence each step (no KV cache), so a
# position means the same thing on every step: P is the prompt's length.
import argparse

import torch

PER_HEAD = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_z",
            "attn.q_norm.hook_normalized", "attn.k_norm.hook_normalized")
QUERY_KEY = ("attn.hook_attn_scores", "attn.hook_pattern")


def site(hook):
    return hook.split(".", 2)[2] if hook.startswith("blocks.") else hook


def axes(hook):
    """(position axis, head axis or None) of a hook's value."""
    s = site(hook)
    if s in QUERY_KEY:
        return 2, 1
    if s in PER_HEAD:
        return 1, 2
    return 1, None


def resolve(sel, P, T):
    """Absolute positions < T; negative indices count from the end of the prompt (length P)."""
    kind = sel[0]
    if kind == "all":
        ps = range(T)
    elif kind == "prompt":
        ps = range(min(P, T))
    elif kind == "generated":
        ps = range(P, T)
    elif kind == "list":
        ps = [p + P if p < 0 else p for p in sel[1]]
    else:
        a, b = (v + P if v < 0 else v for v in sel[1:])
        ps = range(a, b)
    return sorted({p for p in ps if 0 <= p < T})


def axis_mask(n, idx, axis, dim, device):
    m = torch.zeros(n, dtype=torch.bool, device=device)
    if idx:
        m[torch.tensor(list(idx), device=device)] = True
    shape = [1] * dim
    shape[axis] = n
    return m.view(shape)


def mask(h, iv, P, limit=None):
    pa, ha = axes(iv["hook"])
    T = h.shape[pa]
    ps = [p for p in resolve(iv["positions"], P, T) if limit is None or p < limit]
    m = axis_mask(T, ps, pa, h.dim(), h.device)
    if iv["heads"] is not None:
        m = m & axis_mask(h.shape[ha], iv["heads"], ha, h.dim(), h.device)
    if iv["neurons"] is not None:
        m = m & axis_mask(h.shape[-1], iv["neurons"], h.dim() - 1, h.dim(), h.device)
    return m


def vec(v, h):
    return torch.tensor(v, dtype=torch.float32, device=h.device)


def unit(v, h):
    u = vec(v, h)
    return u / u.norm()


def source_value(src, iv, h, P):
    """The clean run on iv's source at the same hook, laid over h; and its length."""
    val = src[iv["source"]][iv["hook"]].to(h.device).float()
    pa = axes(iv["hook"])[0]
    n = val.shape[pa]
    if n != P:
        raise ValueError(f"intervention {iv['index']} ({iv['op']}): the source {iv['source']!r} has {n} tokens "
                         f"but the prompt has {P}; Scalpel needs the same token length")
    full = h.clone()
    k = min(n, h.shape[pa])
    full.narrow(pa, 0, k).copy_(val.narrow(pa, 0, k))
    return full, n


def apply(x, iv, P, src):
    """One intervention on one hook value x; returns the new value."""
    h = x.float()
    op = iv["op"]
    limit = None
    if op == "add":
        new = h + iv["scale"] * vec(iv["vector"], h)
    elif op == "scale":
        new = h * iv["factor"]
    elif op == "zero":
        new = torch.zeros_like(h)
    elif op == "mean":
        pa = axes(iv["hook"])[0]
        if iv["over"] is None:
            new = h.narrow(pa, 0, min(P, h.shape[pa])).mean(dim=pa, keepdim=True).expand_as(h)
        else:
            new = src[("over", iv["index"])][iv["hook"]].to(h.device).expand_as(h)
    elif op == "patch":
        new, limit = source_value(src, iv, h, P)
    elif op == "project_out":
        u = unit(iv["direction"], h)
        new = h - (h @ u)[..., None] * u
    elif op == "set_projection":
        u = unit(iv["direction"], h)
        p = h @ u
        if iv["value"] is not None:
            c = torch.full_like(p, iv["value"])
        elif iv["cap"] is not None:
            c = torch.clamp(p, max=iv["cap"])
        else:
            s, limit = source_value(src, iv, h, P)
            c = s @ u
        new = h + (c - p)[..., None] * u
    elif op == "knockout":
        keys = resolve(iv["keys"], P, h.shape[-1])
        m = mask(h, iv, P) & axis_mask(h.shape[-1], keys, h.dim() - 1, h.dim(), h.device)
        fill = float("-inf") if site(iv["hook"]) == "attn.hook_attn_scores" else 0.0
        return torch.where(m, torch.full_like(x, fill), x)
    else:
        raise ValueError(f"intervention {iv['index']}: unknown op {op!r}")
    return torch.where(mask(h, iv, P, limit), new, h).to(x.dtype)


def by_hook():
    """Hook name -> its interventions in document order."""
    out = {}
    for iv in IV:
        out.setdefault(iv["hook"], []).append(iv)
    return out


def source_texts():
    """Text -> hook names whose clean values the document needs (patch / set_projection sources, mean 'over')."""
    need = {}
    for iv in IV:
        texts = list(iv["over"] or []) if iv["op"] == "mean" else []
        if iv.get("source") is not None:
            texts.append(iv["source"])
        for t in texts:
            need.setdefault(t, set()).add(iv["hook"])
    return need


def pool_means(src):
    """mean 'over' a prompt set: the mean over every token of every prompt, per hook."""
    for iv in IV:
        if iv["op"] == "mean" and iv["over"]:
            pa = axes(iv["hook"])[0]
            vals = [src[t][iv["hook"]].float() for t in iv["over"]]
            total = sum(v.sum(dim=pa, keepdim=True) for v in vals)
            src[("over", iv["index"])] = {iv["hook"]: total / sum(v.shape[pa] for v in vals)}
    return src


def run(model, prompt):
    """The prompt's token ids and its logits [1, pos, vocab] under the document."""
    ids = tokens(model, prompt)
    src = pool_means(capture(model, source_texts()))
    return ids, forward(model, ids, ids.shape[1], src)


def generate(model, prompt, n):
    """Greedy generation under the document; each step re-runs the whole sequence."""
    ids = tokens(model, prompt)
    P = ids.shape[1]
    src = pool_means(capture(model, source_texts()))
    for _ in range(n):
        nxt = forward(model, ids, P, src)[0, -1].argmax().view(1, 1).to(ids.device)
        ids = torch.cat([ids, nxt], dim=1)
        if nxt.item() == getattr(tokenizer_of(model), "eos_token_id", None):
            break
    return ids


def main(extra_args=()):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=MODEL, help="Hugging Face id or local directory")
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--save-logits", help="write the prompt's logits (torch.save) to this file")
    for flag, kw in extra_args:
        ap.add_argument(flag, **kw)
    a = ap.parse_args()
    model = load(a.model, a.device, getattr(torch, a.dtype), a)
    ids, logits = run(model, a.prompt)
    tok = tokenizer_of(model)
    print(f"prompt: {a.prompt!r} -> {ids.shape[1]} tokens {ids[0].tolist()}")
    last = logits[0, -1].float()
    top = last.topk(min(a.top_k, last.shape[-1]))
    print("next token (logit):")
    for v, i in zip(top.values.tolist(), top.indices.tolist()):
        print(f"  {tok.decode([i])!r:>16} {v:.4f}")
    if a.save_logits:
        torch.save(logits.detach().cpu(), a.save_logits)
    if a.max_new_tokens > 0:
        out = generate(model, a.prompt, a.max_new_tokens)
        print("generated:", repr(tok.decode(out[0, ids.shape[1]:].tolist())))


# ---- nnsight ----
REMOTE = False


def load(name, device, dtype, args=None):
    global REMOTE
    from nnsight import LanguageModel
    REMOTE = bool(args is not None and args.remote)
    if REMOTE:
        return LanguageModel(name)
    return LanguageModel(name, device_map=device, dispatch=True, dtype=dtype)


def tokenizer_of(model):
    return model.tokenizer


def tokens(model, text):
    return model.tokenizer(text, return_tensors="pt").input_ids


def module(model, path):
    m = model
    for part in path.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return m


def capture(model, need):
    src = {}
    for text, hooks in need.items():
        saved = {}
        with model.trace(tokens(model, text), remote=REMOTE):
            for path, kind, nh, names in SITES:
                if any(n in hooks for n in names):
                    mod = module(model, path)
                    raw = mod.input if kind == "input" else mod.output
                    x = raw[0] if isinstance(raw, tuple) else raw
                    saved[(path, kind)] = x.save()
        src[text] = {}
        for path, kind, nh, names in SITES:
            for n in names:
                if n in hooks:
                    x = saved[(path, kind)]
                    src[text][n] = x if nh is None else x.view(*x.shape[:-1], nh, -1)
    return src


def forward(model, ids, P, src):
    hooks = by_hook()
    with model.trace(ids, remote=REMOTE):
        for path, kind, nh, names in SITES:
            mod = module(model, path)
            raw = mod.input if kind == "input" else mod.output
            x = raw[0] if isinstance(raw, tuple) else raw
            x = x if nh is None else x.view(*x.shape[:-1], nh, -1)
            for name in names:
                for iv in hooks[name]:
                    x = apply(x, iv, P, src)
            x = x if nh is None else x.reshape(*x.shape[:-2], -1)
            if kind == "input":
                mod.input = x
            else:
                mod.output = (x,) + tuple(raw[1:]) if isinstance(raw, tuple) else x
        logits = model.output.logits.save()
    return logits


if __name__ == "__main__":
    main([("--remote", dict(action="store_true", help="run on NDIF (needs an NDIF API key)"))])
