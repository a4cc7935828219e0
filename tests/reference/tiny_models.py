"""Tiny random checkpoints (seeded, deterministic) for testing the engine.

    python tiny_models.py OUTDIR        # writes everything + OUTDIR/manifest.json

Writes
  * GPT-2 Hugging Face directories (config.json, model.safetensors,
    tokenizer.json): gpt2 (bare GPT2Model names), gpt2_prefixed
    (`transformer.` prefix + lm_head.weight as GPT2LMHeadModel saves),
    gpt2_buffers (+ h.{i}.attn.bias / masked_bias buffers), gpt2_fp16,
    gpt2_sharded (2 shards + model.safetensors.index.json);
  * Llama Hugging Face directories: llama_hf (untied lm_head), llama_hf_tied,
    llama_hf_bf16;
  * llama GGUF files written the way llama.cpp's convert_hf_to_gguf.py writes
    them (Q/K rows permuted for interleaved rope): llama_{f32,f16,q8_0,q4_0,
    q4_1}_{tied,untied}.gguf (same weights as llama_hf / llama_hf_tied),
    llama_f32_bos.gguf (add_bos_token = true), and llama_kquant_{untied,tied}
    .gguf (d_model 256, Q4_K + Q6_K; gguf-py cannot quantize K-quants, so this
    file packs them itself and checks every tensor against gguf-py's
    dequantizer).
All tokenizers are the same tiny byte-level BPE: 256 byte tokens (id = byte
value), TINY_MERGES merges learned from SAMPLE_TEXT, then <|endoftext|>,
<|im_start|>, <|im_end|>.
"""
from __future__ import annotations

import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402

SAMPLE_TEXT = """The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.
def add(a, b):
    return a + b

In 2024 there were 365 days; in 2025 there were 365 days too. The the the.
Hello world! Hello there, hello again. Interpretability of the model is the goal.
"""
TINY_MERGES = 45
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

GPT2_CFG = dict(n_embd=64, n_layer=2, n_head=4, n_positions=64, layer_norm_epsilon=1e-5)
LLAMA_CFG = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                 num_hidden_layers=2, rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=64)
LLAMA_K_CFG = dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=2, intermediate_size=512,
                   num_hidden_layers=2, rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=64)

GGUF_TYPES = ["F32", "F16", "Q8_0", "Q4_0", "Q4_1"]


# ---------------------------------------------------------------- tokenizer
def tiny_vocab():
    """-> (tokens, merges, token_types)"""
    merges = bpe.train_merges(SAMPLE_TEXT, TINY_MERGES, pre="gpt2")
    b2u = bpe.bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    for a, b in merges:
        assert a + b not in tokens
        tokens.append(a + b)
    types = [bpe.TOKEN_NORMAL] * len(tokens) + [bpe.TOKEN_CONTROL] * len(SPECIALS)
    tokens += SPECIALS
    return tokens, merges, types


def tiny_tokenizer() -> bpe.BPETokenizer:
    tokens, merges, types = tiny_vocab()
    return bpe.BPETokenizer(tokens, merges, types, pre="gpt2", bos_id=tokens.index("<|endoftext|>"),
                            eos_id=tokens.index("<|endoftext|>"), chat_template=CHAT_TEMPLATE)


def tokenizer_json(merges_as_pairs: bool = False) -> dict:
    tokens, merges, types = tiny_vocab()
    n_normal = len(tokens) - len(SPECIALS)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": n_normal + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for i, s in enumerate(SPECIALS)
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens[:n_normal])},
            "merges": [list(m) for m in merges] if merges_as_pairs else [f"{a} {b}" for a, b in merges],
        },
    }


def vocab_size() -> int:
    return len(tiny_vocab()[0])


# ---------------------------------------------------------------- safetensors
_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.uint8): "U8",
              np.dtype(np.int64): "I64", np.dtype(np.bool_): "BOOL"}


def f32_to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """round-to-nearest-even f32 -> bf16, as uint16 bit patterns"""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


class BF16:
    """marker wrapper: store this f32 array as BF16"""

    def __init__(self, a):
        self.a = np.asarray(a, dtype=np.float32)


def write_safetensors(path: str, tensors: dict, metadata: dict | None = None):
    """Minimal safetensors writer (supports BF16 through the BF16 wrapper)."""
    header, blobs, off = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        if isinstance(t, BF16):
            shape, dt, raw = list(t.a.shape), "BF16", f32_to_bf16_bits(t.a).tobytes()
        else:
            t = np.ascontiguousarray(t)
            shape, dt, raw = list(t.shape), _ST_DTYPES[t.dtype], t.tobytes()
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Minimal independent safetensors reader -> float32/other numpy arrays (BF16 upcast to f32)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    np_types = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "U8": np.uint8, "I64": np.int64,
                "BOOL": np.bool_, "I32": np.int32, "BF16": np.uint16}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[base + a:base + b], dtype=np_types[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":
            arr = bf16_bits_to_f32(arr)
        out[name] = arr
    return out


# ---------------------------------------------------------------- weights
def gpt2_weights(seed: int = 1234) -> dict[str, np.ndarray]:
    c = GPT2_CFG
    d, L, V, P = c["n_embd"], c["n_layer"], vocab_size(), c["n_positions"]
    rng = np.random.default_rng(seed)
    n = lambda *s, std=1.0: (rng.standard_normal(s) * std).astype(np.float32)  # noqa: E731
    w = {"wte.weight": n(V, d, std=0.3), "wpe.weight": n(P, d, std=1.0)}
    for i in range(L):
        p = f"h.{i}."
        w[p + "ln_1.weight"] = 1 + n(d, std=0.1)
        w[p + "ln_1.bias"] = n(d, std=0.05)
        w[p + "attn.c_attn.weight"] = n(d, 3 * d, std=0.2)
        w[p + "attn.c_attn.bias"] = n(3 * d, std=0.05)
        w[p + "attn.c_proj.weight"] = n(d, d, std=0.12)
        w[p + "attn.c_proj.bias"] = n(d, std=0.05)
        w[p + "ln_2.weight"] = 1 + n(d, std=0.1)
        w[p + "ln_2.bias"] = n(d, std=0.05)
        w[p + "mlp.c_fc.weight"] = n(d, 4 * d, std=0.15)
        w[p + "mlp.c_fc.bias"] = n(4 * d, std=0.05)
        w[p + "mlp.c_proj.weight"] = n(4 * d, d, std=0.08)
        w[p + "mlp.c_proj.bias"] = n(d, std=0.05)
    w["ln_f.weight"] = 1 + n(d, std=0.1)
    w["ln_f.bias"] = n(d, std=0.05)
    return w


def llama_weights(cfg: dict, seed: int, tied: bool) -> dict[str, np.ndarray]:
    """Hugging Face LlamaForCausalLM names and [out, in] layout."""
    d, H, KV, F, L = (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
                      cfg["intermediate_size"], cfg["num_hidden_layers"])
    hd = d // H
    V = vocab_size()
    rng = np.random.default_rng(seed)
    n = lambda *s, std=1.0: (rng.standard_normal(s) * std).astype(np.float32)  # noqa: E731
    w = {"model.embed_tokens.weight": n(V, d, std=8 / np.sqrt(d))}  # logits stay O(10) when tied
    for i in range(L):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + n(d, std=0.1)
        w[p + "self_attn.q_proj.weight"] = n(H * hd, d, std=1.5 / np.sqrt(d))
        w[p + "self_attn.k_proj.weight"] = n(KV * hd, d, std=1.5 / np.sqrt(d))
        w[p + "self_attn.v_proj.weight"] = n(KV * hd, d, std=1 / np.sqrt(d))
        w[p + "self_attn.o_proj.weight"] = n(d, H * hd, std=1 / np.sqrt(H * hd))
        w[p + "post_attention_layernorm.weight"] = 1 + n(d, std=0.1)
        w[p + "mlp.gate_proj.weight"] = n(F, d, std=1.5 / np.sqrt(d))
        w[p + "mlp.up_proj.weight"] = n(F, d, std=1 / np.sqrt(d))
        w[p + "mlp.down_proj.weight"] = n(d, F, std=1 / np.sqrt(F))
    w["model.norm.weight"] = 1 + n(d, std=0.1)
    if not tied:
        w["lm_head.weight"] = n(V, d, std=0.5)
    return w


# ---------------------------------------------------------------- HF directories
def _write_tokenizer_files(out: str, merges_as_pairs: bool, llama: bool):
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(merges_as_pairs), f, ensure_ascii=False, indent=1)
    tc = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": None,
          "model_max_length": 64, "add_bos_token": False, "tokenizer_class": "GPT2Tokenizer"}
    if llama:
        tc["chat_template"] = CHAT_TEMPLATE
        tc["eos_token"] = "<|im_end|>"
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=1)


def gpt2_config() -> dict:
    c = GPT2_CFG
    eot = tiny_vocab()[0].index("<|endoftext|>")
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": c["n_embd"],
            "n_layer": c["n_layer"], "n_head": c["n_head"], "n_positions": c["n_positions"], "n_ctx": c["n_positions"],
            "n_inner": None, "vocab_size": vocab_size(), "layer_norm_epsilon": c["layer_norm_epsilon"],
            "activation_function": "gelu_new", "bos_token_id": eot, "eos_token_id": eot,
            "tie_word_embeddings": True, "torch_dtype": "float32"}


def write_gpt2_dir(out: str, variant: str = "plain", seed: int = 1234):
    """variant: plain | prefixed | buffers | fp16 | sharded"""
    os.makedirs(out, exist_ok=True)
    w = gpt2_weights(seed)
    cfg = gpt2_config()
    if variant == "prefixed":
        w = {"transformer." + k: v for k, v in w.items()}
        w["lm_head.weight"] = w["transformer.wte.weight"].copy()
    elif variant == "buffers":
        P = GPT2_CFG["n_positions"]
        tril = np.tril(np.ones((P, P), dtype=np.float32)).reshape(1, 1, P, P)
        for i in range(GPT2_CFG["n_layer"]):
            w[f"h.{i}.attn.bias"] = tril
            w[f"h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    elif variant == "fp16":
        w = {k: v.astype(np.float16) for k, v in w.items()}
        cfg["torch_dtype"] = "float16"
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    if variant == "sharded":
        names = list(w)
        half = len(names) // 2
        shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
        wmap = {}
        for fn, ns in shards.items():
            write_safetensors(os.path.join(out, fn), {k: w[k] for k in ns}, {"format": "pt"})
            wmap.update({k: fn for k in ns})
        total = sum(v.nbytes for v in w.values())
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": wmap}, f, indent=1)
    else:
        write_safetensors(os.path.join(out, "model.safetensors"), w, {"format": "pt"})
    _write_tokenizer_files(out, merges_as_pairs=False, llama=False)


def llama_config(cfg: dict, tied: bool, dtype: str = "float32") -> dict:
    toks = tiny_vocab()[0]
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **cfg,
            "head_dim": cfg["hidden_size"] // cfg["num_attention_heads"], "vocab_size": vocab_size(),
            "tie_word_embeddings": tied, "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
            "bos_token_id": toks.index("<|endoftext|>"), "eos_token_id": toks.index("<|im_end|>"),
            "torch_dtype": dtype}


def write_llama_dir(out: str, tied: bool = False, bf16: bool = False, seed: int = 99):
    os.makedirs(out, exist_ok=True)
    w = llama_weights(LLAMA_CFG, seed, tied)
    if bf16:
        w = {k: BF16(v) for k, v in w.items()}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(llama_config(LLAMA_CFG, tied, "bfloat16" if bf16 else "float32"), f, indent=1)
    write_safetensors(os.path.join(out, "model.safetensors"), w, {"format": "pt"})
    _write_tokenizer_files(out, merges_as_pairs=True, llama=True)


# ---------------------------------------------------------------- K-quant packers
def _f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def quantize_q4_k(rows: np.ndarray) -> np.ndarray:
    """Simple (not llama.cpp's optimal) Q4_K encoder: 256-element super-blocks
    of 8 sub-blocks of 32, 6-bit scales/mins. Layout: d f16, dmin f16,
    scales[12], qs[128]. Returns uint8 [rows, cols/256*144]."""
    rows = np.asarray(rows, dtype=np.float32)
    R, C = rows.shape
    assert C % 256 == 0
    x = rows.reshape(-1, 8, 32)  # [nb, sub, 32]
    nb = x.shape[0]
    mn = np.minimum(x.min(-1), 0.0)
    mx = np.maximum(x.max(-1), 0.0)
    scale = (mx - mn) / 15.0
    mins = -mn
    d = _f16(scale.max(-1) / 63.0)
    dmin = _f16(mins.max(-1) / 63.0)
    df, dminf = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(df > 0, np.clip(np.rint(scale / df), 0, 63), 0).astype(np.uint8)
        mi = np.where(dminf > 0, np.clip(np.rint(mins / dminf), 0, 63), 0).astype(np.uint8)
        es = (df * sc)[..., None]
        em = (dminf * mi)[..., None]
        q = np.where(es > 0, np.clip(np.rint((x + em) / es), 0, 15), 0).astype(np.uint8)
    scales = np.zeros((nb, 12), np.uint8)
    scales[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = (mi[:, 0:4] & 63) | ((mi[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0xF) | ((mi[:, 4:8] & 0xF) << 4)
    q = q.reshape(nb, 4, 2, 32)  # [chunk, lo/hi, l]
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(nb, 128)
    out = np.concatenate([d.reshape(nb, 1).view(np.uint8), dmin.reshape(nb, 1).view(np.uint8), scales, qs], axis=1)
    return out.reshape(R, -1)


def quantize_q6_k(rows: np.ndarray) -> np.ndarray:
    """Simple Q6_K encoder: 16 sub-blocks of 16 with int8 scales, 6-bit
    quants. Layout: ql[128], qh[64], scales[16] (int8), d f16 -> 210 bytes."""
    rows = np.asarray(rows, dtype=np.float32)
    R, C = rows.shape
    assert C % 256 == 0
    x = rows.reshape(-1, 16, 16)
    nb = x.shape[0]
    s = np.abs(x).max(-1) / 31.0
    d = _f16(s.max(-1) / 127.0)
    df = d.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(df > 0, np.clip(np.rint(s / df), -128, 127), 0).astype(np.int8)
        es = (df * sc.astype(np.float32))[..., None]
        q = np.where(es != 0, np.clip(np.rint(x / es), -32, 31), 0).astype(np.int16) + 32
    q = q.astype(np.uint8).reshape(nb, 2, 2, 2, 32)  # [half, s(nibble), t, l]; element = 128h+32(2s+t)+l
    lo = q & 0xF
    ql = (lo[:, :, 0] | (lo[:, :, 1] << 4)).reshape(nb, 128)  # byte 64h + 32t + l
    hi = (q >> 4).reshape(nb, 2, 4, 32)  # [half, k, l]
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(nb, 64)
    out = np.concatenate([ql, qh, sc.view(np.uint8), d.reshape(nb, 1).view(np.uint8)], axis=1)
    return out.reshape(R, -1)


def quantize(arr: np.ndarray, qtype_name: str):
    """f32 [rows, cols] -> (packed uint8 [rows, bytes], gguf.GGMLQuantizationType); F32/F16 pass through."""
    import gguf

    qt = gguf.GGMLQuantizationType[qtype_name]
    if qtype_name == "Q4_K":
        q = quantize_q4_k(arr)
    elif qtype_name == "Q6_K":
        q = quantize_q6_k(arr)
    else:
        q = gguf.quants.quantize(np.ascontiguousarray(arr, dtype=np.float32), qt)
    if qtype_name not in ("F32", "F16"):
        # independent check of the packing against gguf-py's dequantizer
        deq = gguf.quants.dequantize(q, qt)
        assert deq.shape == arr.shape, (deq.shape, arr.shape)
        err = np.abs(deq - arr).max() / (np.abs(arr).max() + 1e-12)
        assert err < 0.2, f"{qtype_name} round trip error {err}"
    return q, qt


# ---------------------------------------------------------------- GGUF
def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute: HF rotate_half row order ->
    llama.cpp interleaved (GGUF row 2i+j of a head = HF row j*(d/2)+i)."""
    rows, cols = w.shape
    return w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def write_llama_gguf(path: str, hf: dict, cfg: dict, types: dict | str, tied: bool, pre: str = "gpt2",
                     add_bos: bool = False, name: str = "tiny-llama"):
    """hf: HF-named f32 weights. types: one type name for all 2-D tensors, or
    a dict {"default": T, "token_embd": T, "output": T, "attn_v": T, "ffn_down": T}."""
    import gguf

    if isinstance(types, str):
        types = {"default": types}
    tmap = lambda key: types.get(key, types["default"])  # noqa: E731
    d, H, KV, F, L = (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
                      cfg["intermediate_size"], cfg["num_hidden_layers"])
    tokens, merges, ttypes = tiny_vocab()
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(d)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_rope_dimension_count(d // H)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_vocab_size(len(tokens))
    w.add_file_type({"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q4_K": 15}[types["default"]])
    w.add_quantization_version(2)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(ttypes)
    w.add_token_merges([f"{a} {b}" for a, b in merges])
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(add_bos)
    w.add_chat_template(CHAT_TEMPLATE)

    def put(gname, arr, key):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim == 1:
            w.add_tensor(gname, arr)  # norms stay F32, as llama.cpp does
            return
        t = tmap(key)
        if t == "F32":
            w.add_tensor(gname, arr)
        elif t == "F16":
            w.add_tensor(gname, arr.astype(np.float16))
        else:
            q, qt = quantize(arr, t)
            w.add_tensor(gname, q, raw_dtype=qt)

    put("token_embd.weight", hf["model.embed_tokens.weight"], "token_embd")
    for i in range(L):
        p, g = f"model.layers.{i}.", f"blk.{i}."
        put(g + "attn_norm.weight", hf[p + "input_layernorm.weight"], "")
        put(g + "attn_q.weight", permute_qk(hf[p + "self_attn.q_proj.weight"], H), "attn_q")
        put(g + "attn_k.weight", permute_qk(hf[p + "self_attn.k_proj.weight"], KV), "attn_k")
        put(g + "attn_v.weight", hf[p + "self_attn.v_proj.weight"], "attn_v")
        put(g + "attn_output.weight", hf[p + "self_attn.o_proj.weight"], "attn_output")
        put(g + "ffn_norm.weight", hf[p + "post_attention_layernorm.weight"], "")
        put(g + "ffn_gate.weight", hf[p + "mlp.gate_proj.weight"], "ffn_gate")
        put(g + "ffn_up.weight", hf[p + "mlp.up_proj.weight"], "ffn_up")
        put(g + "ffn_down.weight", hf[p + "mlp.down_proj.weight"], "ffn_down")
    put("output_norm.weight", hf["model.norm.weight"], "")
    if not tied:
        put("output.weight", hf["lm_head.weight"], "output")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------- everything
def write_all(outdir: str) -> dict:
    """Writes every tiny model; returns (and writes manifest.json) {name: {path, kind, ...}}."""
    os.makedirs(outdir, exist_ok=True)
    man = {}
    for variant in ["plain", "prefixed", "buffers", "fp16", "sharded"]:
        nm = "gpt2" if variant == "plain" else f"gpt2_{variant}"
        write_gpt2_dir(os.path.join(outdir, nm), variant)
        man[nm] = {"path": os.path.join(outdir, nm), "kind": "gpt2_hf"}
    for nm, tied, bf16 in [("llama_hf", False, False), ("llama_hf_tied", True, False), ("llama_hf_bf16", False, True)]:
        write_llama_dir(os.path.join(outdir, nm), tied=tied, bf16=bf16)
        man[nm] = {"path": os.path.join(outdir, nm), "kind": "llama_hf"}
    for tied in (False, True):
        hf = llama_weights(LLAMA_CFG, 99, tied)
        for t in GGUF_TYPES:
            nm = f"llama_{t.lower()}_{'tied' if tied else 'untied'}"
            pre = "smollm" if t in ("Q4_0", "F16") else "gpt2"
            p = os.path.join(outdir, nm + ".gguf")
            write_llama_gguf(p, hf, LLAMA_CFG, t, tied, pre=pre, name=nm)
            man[nm] = {"path": p, "kind": "llama_gguf", "type": t, "tied": tied, "pre": pre}
    hf = llama_weights(LLAMA_CFG, 99, False)
    p = os.path.join(outdir, "llama_f32_bos.gguf")
    write_llama_gguf(p, hf, LLAMA_CFG, "F32", False, add_bos=True, name="llama_f32_bos")
    man["llama_f32_bos"] = {"path": p, "kind": "llama_gguf", "type": "F32", "tied": False, "add_bos": True}
    for tied in (False, True):
        hf = llama_weights(LLAMA_K_CFG, 7, tied)
        types = {"default": "Q4_K", "attn_v": "Q6_K", "ffn_down": "Q6_K", "output": "Q6_K"}
        if tied:
            types["token_embd"] = "Q6_K"
        nm = f"llama_kquant_{'tied' if tied else 'untied'}"
        p = os.path.join(outdir, nm + ".gguf")
        write_llama_gguf(p, hf, LLAMA_K_CFG, types, tied, name=nm)
        man[nm] = {"path": p, "kind": "llama_gguf", "type": "Q4_K/Q6_K", "tied": tied}
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump(man, f, indent=1)
    return man


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    m = write_all(sys.argv[1])
    print(json.dumps(m, indent=1))
