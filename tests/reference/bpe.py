"""Pure-Python byte-level BPE tokenizer (GPT-2 algorithm), independent of the
Rust engine and of the `tokenizers` library.

Loads from GGUF metadata (tokenizer.ggml.tokens / merges / token_type / pre)
or from a Hugging Face tokenizer.json (BPE model with a ByteLevel
pre-tokenizer, optionally preceded by Digits(individual_digits=true)).

Pre-tokenization:
  * control / special tokens are matched whole (longest match first) before
    anything else and are never merged or split;
  * "smollm" (llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM, HF's
    Sequence[Digits(individual_digits), ByteLevel]): every \\p{N} character is
    its own piece, then GPT-2's regex runs on the remaining pieces;
  * "gpt2": GPT-2's regex only.

Usage:  python bpe.py FILE.gguf|tokenizer.json "some text"
"""
from __future__ import annotations

import json
import sys
from functools import lru_cache

import regex  # the `regex` module (PyPI) supports \p{L} / \p{N}

GPT2_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)

# Token types used by llama.cpp / gguf (gguf.TokenType)
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


@lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


@lru_cache(maxsize=None)
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


# ---------------------------------------------------------------- pre-tokenizer
_GPT2_RE = regex.compile(GPT2_PATTERN)


def gpt2_split(text: str) -> list[str]:
    return _GPT2_RE.findall(text)


_DIGIT_RE = regex.compile(r"(\p{N})")


def split_digits(text: str) -> list[str]:
    """HF Digits(individual_digits=True) / llama.cpp regex "\\p{N}": each
    numeric character becomes its own piece, the rest stays together."""
    return [p for p in _DIGIT_RE.split(text) if p]


def pre_tokenize(text: str, pre: str = "gpt2") -> list[str]:
    if pre in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva", "digits"):
        pieces = []
        for p in split_digits(text):
            pieces.extend(gpt2_split(p))
        return pieces
    if pre in ("gpt2", "default", "gpt-2", ""):
        return gpt2_split(text)
    raise ValueError(f"unsupported pre-tokenizer {pre!r}")


# ---------------------------------------------------------------- tokenizer
class BPETokenizer:
    def __init__(self, tokens: list[str], merges: list[tuple[str, str]], token_types: list[int] | None = None,
                 special: list[str] | None = None, pre: str = "gpt2", bos_id: int | None = None,
                 eos_id: int | None = None, add_bos: bool = False, chat_template: str | None = None):
        self.tokens = list(tokens)
        self.vocab = {t: i for i, t in enumerate(self.tokens)}
        self.ranks = {tuple(m): r for r, m in enumerate(merges)}
        self.token_types = list(token_types) if token_types is not None else [TOKEN_NORMAL] * len(tokens)
        if special is None:
            special = [t for t, ty in zip(self.tokens, self.token_types) if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED)]
        self.special = set(special)
        self.pre = pre
        self.bos_id, self.eos_id, self.add_bos = bos_id, eos_id, add_bos
        self.chat_template = chat_template
        self._special_sorted = sorted(self.special, key=len, reverse=True)
        self._cache: dict[str, list[int]] = {}

    # -- loading ---------------------------------------------------------------
    @classmethod
    def from_gguf(cls, path: str) -> "BPETokenizer":
        import gguf

        r = gguf.GGUFReader(path)
        f = r.fields

        def get(k, default=None):
            return f[k].contents() if k in f else default

        model = get("tokenizer.ggml.model")
        if model != "gpt2":
            raise ValueError(f"{path}: tokenizer.ggml.model={model!r} is not a byte-level BPE")
        tokens = get("tokenizer.ggml.tokens")
        merges = [tuple(m.split(" ", 1)) for m in get("tokenizer.ggml.merges")]
        return cls(tokens, merges, get("tokenizer.ggml.token_type"), pre=get("tokenizer.ggml.pre", "gpt2"),
                   bos_id=get("tokenizer.ggml.bos_token_id"), eos_id=get("tokenizer.ggml.eos_token_id"),
                   add_bos=bool(get("tokenizer.ggml.add_bos_token", False)),
                   chat_template=get("tokenizer.chat_template"))

    @classmethod
    def from_tokenizer_json(cls, path: str) -> "BPETokenizer":
        with open(path, encoding="utf-8") as fh:
            j = json.load(fh)
        m = j["model"]
        if m.get("type") != "BPE":
            raise ValueError(f"{path}: model type {m.get('type')!r} is not BPE")
        vocab = m["vocab"]
        n = max(vocab.values()) + 1
        added = j.get("added_tokens") or []
        n = max([n] + [a["id"] + 1 for a in added])
        tokens = [""] * n
        for t, i in vocab.items():
            tokens[i] = t
        types = [TOKEN_NORMAL] * n
        special = []
        for a in added:
            tokens[a["id"]] = a["content"]
            types[a["id"]] = TOKEN_CONTROL if a.get("special") else TOKEN_USER_DEFINED
            special.append(a["content"])
        merges = [tuple(x.split(" ", 1)) if isinstance(x, str) else tuple(x) for x in m["merges"]]
        pre = "gpt2"
        pt = j.get("pre_tokenizer") or {}
        seq = pt.get("pretokenizers", [pt]) if pt.get("type") == "Sequence" else [pt]
        for p in seq:
            if p.get("type") == "Digits" and p.get("individual_digits"):
                pre = "smollm"
        return cls(tokens, merges, types, special=special, pre=pre)

    @classmethod
    def load(cls, path: str) -> "BPETokenizer":
        import os

        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        if path.endswith(".gguf"):
            return cls.from_gguf(path)
        return cls.from_tokenizer_json(path)

    # -- encoding --------------------------------------------------------------
    def _bpe(self, word: str) -> list[str]:
        """GPT-2 BPE: repeatedly merge the lowest-rank adjacent pair (all its
        non-overlapping occurrences, left to right)."""
        parts = list(word)
        if len(parts) < 2:
            return parts
        ranks = self.ranks
        while True:
            best, best_rank = None, None
            for a, b in zip(parts, parts[1:]):
                r = ranks.get((a, b))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = (a, b), r
            if best is None:
                return parts
            a, b = best
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
            if len(parts) == 1:
                return parts

    def _encode_piece(self, piece: str) -> list[int]:
        ids = self._cache.get(piece)
        if ids is None:
            b2u = bytes_to_unicode()
            word = "".join(b2u[b] for b in piece.encode("utf-8"))
            ids = []
            for sym in self._bpe(word):
                if sym in self.vocab:
                    ids.append(self.vocab[sym])
                else:  # unreachable for a complete byte vocabulary; fall back to bytes
                    for ch in sym:
                        if ch not in self.vocab:
                            raise KeyError(f"byte symbol {ch!r} missing from vocabulary")
                        ids.append(self.vocab[ch])
            self._cache[piece] = ids
        return ids

    def split_special(self, text: str, parse_special: bool = True) -> list[tuple[str, bool]]:
        if not parse_special or not self.special:
            return [(text, False)]
        out, buf, i = [], [], 0
        while i < len(text):
            for s in self._special_sorted:
                if text.startswith(s, i):
                    if buf:
                        out.append(("".join(buf), False))
                        buf = []
                    out.append((s, True))
                    i += len(s)
                    break
            else:
                buf.append(text[i])
                i += 1
        if buf:
            out.append(("".join(buf), False))
        return out

    def encode(self, text: str, parse_special: bool = True, add_bos: bool | None = None) -> list[int]:
        ids: list[int] = []
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids.append(self.bos_id)
        for chunk, is_special in self.split_special(text, parse_special):
            if is_special:
                ids.append(self.vocab[chunk])
                continue
            for piece in pre_tokenize(chunk, self.pre):
                ids.extend(self._encode_piece(piece))
        return ids

    # -- decoding --------------------------------------------------------------
    def token_bytes(self, i: int) -> bytes:
        t = self.tokens[i]
        if t in self.special or self.token_types[i] in (TOKEN_CONTROL, TOKEN_USER_DEFINED):
            return t.encode("utf-8")
        u2b = unicode_to_bytes()
        return bytes(u2b[c] for c in t)

    def decode(self, ids, skip_special: bool = False) -> str:
        data = b"".join(self.token_bytes(i) for i in ids
                        if not (skip_special and self.token_types[i] == TOKEN_CONTROL))
        return data.decode("utf-8", errors="replace")

    def token_text(self, i: int) -> str:
        return self.decode([i])

    def render_chat(self, messages, add_generation_prompt=True) -> str:
        import jinja2

        env = jinja2.Environment()
        return env.from_string(self.chat_template).render(messages=messages,
                                                          add_generation_prompt=add_generation_prompt)


def train_merges(text: str, n_merges: int, pre: str = "gpt2") -> list[tuple[str, str]]:
    """Tiny deterministic BPE trainer (most frequent pair, ties broken by the
    pair's string order) over the pre-tokenized words of `text`."""
    from collections import Counter

    b2u = bytes_to_unicode()
    words = Counter("".join(b2u[b] for b in p.encode("utf-8")) for p in pre_tokenize(text, pre))
    seqs = {w: list(w) for w in words}
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, c in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], tuple(-ord(ch) for ch in kv[0][0] + "\0" + kv[0][1])))[0]
        merges.append(best)
        for w in seqs:
            s, out, i = seqs[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == best[0] and s[i + 1] == best[1]:
                    out.append(s[i] + s[i + 1]); i += 2
                else:
                    out.append(s[i]); i += 1
            seqs[w] = out
    return merges


if __name__ == "__main__":
    tok = BPETokenizer.load(sys.argv[1])
    ids = tok.encode(sys.argv[2])
    print(json.dumps({"ids": ids, "tokens": [tok.token_text(i) for i in ids]}, ensure_ascii=False))
