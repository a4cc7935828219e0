#!/usr/bin/env python3
"""Writes tiny random checkpoints of every architecture Scalpel opens, with
transformers itself, and what transformers computes on them.

Run on a development machine (needs torch, transformers, tokenizers,
safetensors, sentencepiece and gguf; CI does not run it, it reads the files):

    /path/to/venv/bin/python tests/reference/make_arch_fixtures.py [--out tests/fixtures/arch]

For each architecture it writes `<out>/<name>/`:
  config.json, model.safetensors, tokenizer.json, tokenizer_config.json
      a Hugging Face checkpoint saved by `save_pretrained` (random weights:
      every weight, norms included, drawn so that activations and logits
      spread; bf16 for the `*_bf16` checkpoints);
  expected.safetensors
      float32 tensors computed by transformers (eager attention, float32
      arithmetic on the stored weights): `p{i}.ids` (int64), `p{i}.logits`
      [t, vocab], and per layer `p{i}.blocks.{l}.hook_resid_post`,
      `.attn.hook_pattern` [head, q, k], `.attn.hook_z` [t, head, d_head],
      `.mlp.hook_post` [t, d_mlp];
  expected.json
      the prompts, their ids, and the transformers/torch versions.

It also writes `<out>/spm_gguf/`: a SentencePiece (BPE, byte fallback)
tokenizer trained here, `tokenizer.model`, the same vocabulary in a tiny
llama GGUF (`tokenizer.ggml.model = llama`, as llama.cpp's converter writes
it), and the ids sentencepiece gives on varied text (`expected.json`).

The text is written for this project (below); nothing is downloaded.
"""

import argparse
import json
import os
import shutil
import tempfile

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

# Varied text for training the tiny tokenizers: prose, dialogue, code,
# numbers, and a little French, German and Spanish.
CORPUS = """The quick brown fox jumps over the lazy dog near the river bank.
When Mary and John went to the store, John gave a drink to Mary.
Alice said: "I think the answer is forty-two." Bob laughed and asked why.
def add(a, b):
    return a + b  # returns the sum of 12 and 30
for i in range(10): print(i * i)
The year 1969 was followed by 1970, 1971 and 1972; prices rose 3.5% each year.
Le chat dort sur le canapé pendant que la pluie tombe doucement.
Der Hund läuft schnell über die grüne Wiese und bellt laut.
El niño come una manzana roja en la cocina de su abuela.
Photosynthesis converts light energy into chemical energy stored in sugar.
User: What is the capital of France? Assistant: The capital of France is Paris.
She opened the window, looked at the stars, and wrote a short letter home.
{"name": "scalpel", "version": 1, "layers": [0, 1, 2]}
"""

PROMPTS = [
    "The quick brown fox jumps over the dog.",
    "def add(a, b): 1970 à Paris",
]

SPM_TEXTS = [
    "Hello world",
    " leading space and  double  spaces",
    "The year 1969 was followed by 1970.",
    "Le chat dort sur le canapé.",
    "unseen glyphs: 漢字 ✓ 🙂",
    "tabs\tand\nnewlines\n\nend",
    "def f(x):\n    return x**2",
]


def train_tokenizer(style, vocab_size):
    """A small BPE tokenizer in the style of the architecture's own:
    'bytelevel' (GPT-2, Pythia, Qwen) or 'spm' (Gemma: ▁ for spaces, byte fallback)."""
    if style == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=1)
        tok.train_from_iterator(CORPUS.splitlines(), trainer)
        return tok, {"bos": None, "eos": "<|endoftext|>", "pad": "<|endoftext|>"}
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials + byte_tokens, min_frequency=1)
    tok.train_from_iterator([l.replace(" ", "▁") for l in CORPUS.splitlines()], trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)])
    return tok, {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>"}


def save_tokenizer(tok, special, out):
    tok.save(os.path.join(out, "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 128,
           "eos_token": special["eos"], "pad_token": special["pad"]}
    if special["bos"]:
        cfg["bos_token"] = special["bos"]
        cfg["add_bos_token"] = True
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)


def spread_weights(model, seed):
    """Random weights with spread: N(0, 0.3) matrices and embeddings, norm
    weights around their identity (1, or 0 for Gemma's (1 + w)), biases N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = name.lower()
            if "norm" in n or "layernorm" in n or n.endswith("ln_f.weight"):
                base = 0.0 if "gemma" in type(model).__name__.lower() else 1.0
                if name.endswith("bias"):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
                else:
                    p.copy_(base + torch.randn(p.shape, generator=g) * 0.3)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def architectures(vocab):
    """(name, config class, model class, config kwargs, tokenizer style, dtype)."""
    T = transformers
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  max_position_embeddings=128, tie_word_embeddings=False)
    return [
        # transformers 5 writes rope_parameters; a non-default base catches a reader that ignores it.
        ("llama", T.LlamaConfig, T.LlamaForCausalLM,
         dict(common, num_attention_heads=4, num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 50000.0},
              rms_norm_eps=1e-5), "bytelevel", torch.float32),
        ("qwen2", T.Qwen2Config, T.Qwen2ForCausalLM,
         dict(common, num_attention_heads=4, num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
              rms_norm_eps=1e-6, tie_word_embeddings=True), "bytelevel", torch.float32),
        # head_dim independent of hidden_size / heads; stored in bf16.
        ("qwen3_bf16", T.Qwen3Config, T.Qwen3ForCausalLM,
         dict(common, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
              rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, rms_norm_eps=1e-6, tie_word_embeddings=True),
         "bytelevel", torch.bfloat16),
        ("gpt_neox", T.GPTNeoXConfig, T.GPTNeoXForCausalLM,
         dict(vocab_size=vocab, hidden_size=32, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
              max_position_embeddings=128, use_parallel_residual=True, hidden_act="gelu",
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
              tie_word_embeddings=False), "bytelevel", torch.float32),
        # Small caps and window so soft-capping and sliding attention change the numbers.
        ("gemma2", T.Gemma2Config, T.Gemma2ForCausalLM,
         dict(common, num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=12,
              attn_logit_softcapping=4.0, final_logit_softcapping=6.0, sliding_window=4,
              layer_types=["sliding_attention", "full_attention", "sliding_attention"],
              hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True), "spm", torch.float32),
        ("gemma3", T.Gemma3TextConfig, T.Gemma3ForCausalLM,
         dict(common, num_attention_heads=4, num_key_value_heads=1, head_dim=8, query_pre_attn_scalar=8,
              sliding_window=4, layer_types=["sliding_attention", "sliding_attention", "full_attention"],
              rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                               "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
              hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True), "spm", torch.bfloat16),
        # For llama.cpp's GGUF converter (make_arch_gguf.py), whose Gemma 3
        # files do not carry what the model above varies: every 6th layer
        # full, the sliding layers' RoPE base 10000, scores × head_dim^-½ —
        # llama.cpp's fixed values, so the GGUF and transformers agree.
        ("gemma3_gguf", T.Gemma3TextConfig, T.Gemma3ForCausalLM,
         dict(common, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=1, head_dim=8, query_pre_attn_scalar=8,
              sliding_window=4, layer_types=["sliding_attention"] * 5 + ["full_attention"],
              rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                               "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
              hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True), "spm", torch.float32),
        # The same for Gemma 2, whose GGUF files fix even layers sliding and
        # scores × head_dim^-½ (llama.cpp's `gemma2.cpp`); the soft-caps and
        # the window travel in the file.
        ("gemma2_gguf", T.Gemma2Config, T.Gemma2ForCausalLM,
         dict(common, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8,
              attn_logit_softcapping=4.0, final_logit_softcapping=6.0, sliding_window=4,
              layer_types=["sliding_attention", "full_attention"] * 2,
              hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True), "spm", torch.float32),
    ]


def capture(model, ids):
    """Logits and hook values of one prompt, by forward hooks on the modules
    transformers itself runs (eager attention, float32)."""
    base = model.model if hasattr(model, "model") else model.gpt_neox
    layers = base.layers
    cfg = model.config
    n_heads = cfg.num_attention_heads
    out = {}
    handles = []

    def on_layer(l):
        def hook(_m, _inp, output):
            h = output[0] if isinstance(output, tuple) else output
            out[f"blocks.{l}.hook_resid_post"] = h[0]
        return hook

    def on_z(l):
        def hook(_m, inp):
            z = inp[0][0]
            out[f"blocks.{l}.attn.hook_z"] = z.reshape(z.shape[0], n_heads, -1)
        return hook

    def on_mlp_post(l):
        def hook(_m, inp):
            out[f"blocks.{l}.mlp.hook_post"] = inp[0][0]
        return hook

    for l, layer in enumerate(layers):
        handles.append(layer.register_forward_hook(on_layer(l)))
        attn = layer.self_attn if hasattr(layer, "self_attn") else layer.attention
        o_proj = attn.o_proj if hasattr(attn, "o_proj") else attn.dense
        handles.append(o_proj.register_forward_pre_hook(on_z(l)))
        mlp = layer.mlp
        down = mlp.down_proj if hasattr(mlp, "down_proj") else mlp.dense_4h_to_h
        handles.append(down.register_forward_pre_hook(on_mlp_post(l)))
    with torch.no_grad():
        res = model(torch.tensor([ids]), output_attentions=True)
    for h in handles:
        h.remove()
    for l, a in enumerate(res.attentions):
        out[f"blocks.{l}.attn.hook_pattern"] = a[0]
    out["logits"] = res.logits[0]
    return out


def write_arch(name, cfg_cls, model_cls, kwargs, style, dtype, out_root, seed):
    out = os.path.join(out_root, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    tok, special = train_tokenizer(style, 320 if style == "bytelevel" else 384)
    vocab = tok.get_vocab_size()
    kwargs = dict(kwargs, vocab_size=vocab)
    for k in ("bos", "eos", "pad"):
        if special[k]:
            kwargs[f"{k}_token_id"] = tok.token_to_id(special[k])
    cfg = cfg_cls(**kwargs)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    spread_weights(model, seed)
    model = model.to(dtype)
    model.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tok, special, out)
    # The reference runs in float32 on exactly the stored weights.
    model = model_cls.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    # transformers 5 rebuilds some tokenizers by model type (e.g. Qwen2's
    # digit-splitting pre-tokenizer): save what it actually runs, so the
    # committed tokenizer.json is the tokenizer the ids come from.
    fast = transformers.AutoTokenizer.from_pretrained(out)
    fast.save_pretrained(out)
    fast = transformers.AutoTokenizer.from_pretrained(out)
    tensors, prompts = {}, []
    for i, text in enumerate(PROMPTS):
        ids = fast(text)["input_ids"]
        got = capture(model, ids)
        tensors[f"p{i}.ids"] = np.asarray(ids, np.int64)
        for k, v in got.items():
            tensors[f"p{i}.{k}"] = v.float().contiguous().numpy()
        prompts.append({"text": text, "ids": ids, "argmax": got["logits"].argmax(-1).tolist()})
    save_file(tensors, os.path.join(out, "expected.safetensors"))
    meta = {"architecture": type(model).__name__, "stored_dtype": str(dtype).replace("torch.", ""),
            "transformers": transformers.__version__, "torch": torch.__version__, "prompts": prompts}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(meta, f, indent=1)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{name}: {type(model).__name__}, vocab {vocab}, {size / 1024:.0f} KiB")


def write_spm_gguf(out_root):
    """A sentencepiece BPE model with byte fallback (Llama-2 settings), its
    vocabulary in a tiny llama GGUF as llama.cpp's converter writes it, and
    sentencepiece's own ids for varied text."""
    import gguf
    import sentencepiece as spm

    out = os.path.join(out_root, "spm_gguf")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "spm")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(CORPUS.splitlines()), model_prefix=prefix, model_type="bpe", vocab_size=400,
            byte_fallback=True, split_digits=True, normalization_rule_name="identity", add_dummy_prefix=True,
            remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, character_coverage=1.0,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
        shutil.copy(prefix + ".model", os.path.join(out, "tokenizer.model"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "tokenizer.model"))
    n = sp.get_piece_size()
    tokens, scores, types = [], [], []
    for i in range(n):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(gguf.TokenType.CONTROL)
        elif sp.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        elif sp.is_unused(i):
            types.append(gguf.TokenType.UNUSED)
        else:
            types.append(gguf.TokenType.NORMAL)
    d, layers, heads, ff = 32, 1, 4, 64
    w = gguf.GGUFWriter(os.path.join(out, "tiny-spm.gguf"), "llama")
    w.add_name("tiny-spm")
    w.add_context_length(64)
    w.add_embedding_length(d)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    rng = np.random.default_rng(0)
    t = lambda *shape: (rng.standard_normal(shape) * 0.3).astype(np.float32)
    w.add_tensor("token_embd.weight", t(n, d))
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    for l in range(layers):
        for name, shape in [("attn_q", (d, d)), ("attn_k", (d, d)), ("attn_v", (d, d)), ("attn_output", (d, d)),
                            ("ffn_gate", (ff, d)), ("ffn_up", (ff, d)), ("ffn_down", (d, ff))]:
            w.add_tensor(f"blk.{l}.{name}.weight", t(*shape))
        w.add_tensor(f"blk.{l}.attn_norm.weight", np.ones(d, np.float32))
        w.add_tensor(f"blk.{l}.ffn_norm.weight", np.ones(d, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    cases = [{"text": s, "ids": [sp.bos_id()] + sp.encode(s)} for s in SPM_TEXTS]
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"sentencepiece": spm.__version__, "add_bos": True, "cases": cases}, f, indent=1, ensure_ascii=False)
    print(f"spm_gguf: vocab {n}, {len(cases)} texts")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "fixtures", "arch"))
    ap.add_argument("--only", nargs="*", help="write only these fixtures (names as in architectures())")
    args = ap.parse_args()
    torch.set_default_dtype(torch.float32)
    for k, arch in enumerate(architectures(0)):
        if not args.only or arch[0] in args.only:
            write_arch(*arch, out_root=args.out, seed=1000 + k)
    if not args.only:
        write_spm_gguf(args.out)


if __name__ == "__main__":
    main()
