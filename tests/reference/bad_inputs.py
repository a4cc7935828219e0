"""Malformed model files for the error-handling tests.

    python bad_inputs.py TINY_DIR OUTDIR     # TINY_DIR = output of tiny_models.py

Each case is a dict {name, path, where, what}: the CLI must exit non-zero
within a few seconds, never panic, and print on stderr a message containing
at least one of `where` (the file / field at fault) and at least one of
`what` (the problem); both case-insensitive.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import sys

import numpy as np

# GGUF value types
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


class GGUFLayout:
    """Byte offsets of every field of a GGUF v2/v3 file (independent parser)."""

    def __init__(self, data: bytes):
        self.data = data
        assert data[:4] == b"GGUF"
        self.version, self.n_tensors, self.n_kv = struct.unpack_from("<IQQ", data, 4)
        pos = 24
        self.kv = {}  # key -> dict(key_len_off, type_off, value_off, type, [array_count_off])
        for _ in range(self.n_kv):
            kl_off = pos
            key, pos = self._str(pos)
            (vt,) = struct.unpack_from("<I", data, pos)
            ent = dict(key_len_off=kl_off, type_off=pos, value_off=pos + 4, type=vt)
            pos += 4
            if vt == ARRAY:
                (et, n) = struct.unpack_from("<IQ", data, pos)
                ent.update(elem_type=et, count_off=pos + 4, count=n)
                pos += 12
                for _ in range(n):
                    pos = self._skip(et, pos)
            else:
                pos = self._skip(vt, pos)
            self.kv[key] = ent
        self.alignment = 32
        if "general.alignment" in self.kv:
            (self.alignment,) = struct.unpack_from("<I", data, self.kv["general.alignment"]["value_off"])
        self.tensors = {}
        for _ in range(self.n_tensors):
            name_off = pos
            name, pos = self._str(pos)
            (nd,) = struct.unpack_from("<I", data, pos)
            dims_off = pos + 4
            dims = struct.unpack_from(f"<{nd}Q", data, dims_off)
            pos = dims_off + 8 * nd
            (tt, off) = struct.unpack_from("<IQ", data, pos)
            self.tensors[name] = dict(name_off=name_off, ndims_off=dims_off - 4, dims_off=dims_off, dims=dims,
                                      type_off=pos, type=tt, offset_off=pos + 4, offset=off)
            pos += 12
        self.info_end = pos
        self.data_start = (pos + self.alignment - 1) // self.alignment * self.alignment

    def _str(self, pos):
        (n,) = struct.unpack_from("<Q", self.data, pos)
        return self.data[pos + 8:pos + 8 + n].decode("utf-8"), pos + 8 + n

    def _skip(self, t, pos):
        if t == STRING:
            (n,) = struct.unpack_from("<Q", self.data, pos)
            return pos + 8 + n
        if t == ARRAY:
            (et, n) = struct.unpack_from("<IQ", self.data, pos)
            pos += 12
            for _ in range(n):
                pos = self._skip(et, pos)
            return pos
        return pos + struct.calcsize(_SCALAR[t])


TRUNC = ["truncat", "eof", "end of file", "unexpected end", "too short", "short read", "fill whole buffer"]
MISSING = ["missing", "not found", "no such file", "does not exist", "cannot find", "cannot open", "failed to open",
           "os error 2", "absent", "no tensor"]
OOB = ["bounds", "beyond", "exceeds", "past the end", "outside", "truncat", "offset"]


def _patch(data: bytes, off: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, off, value)
    return bytes(b)


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def make_bad_ggufs(good_gguf: str, outdir: str) -> list[dict]:
    with open(good_gguf, "rb") as f:
        good = f.read()
    L = GGUFLayout(good)
    cases = []

    def add(name, data, what, where=()):
        p = _write(os.path.join(outdir, name), data)
        cases.append(dict(name=name, path=p, where=[name, *where], what=what))

    add("truncated_header.gguf", good[:L.kv["tokenizer.ggml.tokens"]["count_off"] + 40], TRUNC)
    add("truncated_data.gguf", good[:len(good) - 3000], TRUNC + OOB)
    add("bad_magic.gguf", b"GGUX" + good[4:], ["magic", "not a gguf"])
    add("bad_version.gguf", _patch(good, 4, "<I", 99), ["version"])
    add("huge_tensor_count.gguf", _patch(good, 8, "<Q", 1 << 61), ["tensor count", "tensor_count", "too many", "count", TRUNC[0]])
    add("huge_kv_count.gguf", _patch(good, 16, "<Q", 1 << 61), ["kv", "metadata", "too many", "count", TRUNC[0]])
    add("huge_string_len.gguf", _patch(good, 24, "<Q", 1 << 62), ["string", "length", "too long", TRUNC[0]])
    add("huge_array_len.gguf", _patch(good, L.kv["tokenizer.ggml.tokens"]["count_off"], "<Q", 1 << 61),
        ["array", "length", "too long", "count", TRUNC[0]], ["tokenizer.ggml.tokens"])
    q = L.tensors["blk.0.attn_q.weight"]
    add("huge_tensor_dims.gguf", _patch(_patch(good, q["dims_off"], "<Q", 1 << 32), q["dims_off"] + 8, "<Q", 1 << 32),
        ["dim", "shape", "overflow", "size", "too large"], ["blk.0.attn_q.weight"])
    add("huge_n_dims.gguf", _patch(good, q["ndims_off"], "<I", 1000), ["dim"], ["blk.0.attn_q.weight"])
    add("unknown_tensor_type.gguf", _patch(good, q["type_off"], "<I", 1000), ["type"], ["blk.0.attn_q.weight"])
    # IQ4_NL (20): a real ggml type with the same 32-element blocks but 18 bytes each (Q8_0 is 34)
    add("unsupported_tensor_type.gguf", _patch(good, q["type_off"], "<I", 20), ["type", "IQ4_NL", "unsupported"], ["blk.0.attn_q.weight"])
    last = max(L.tensors.values(), key=lambda t: t["offset"])
    lname = [k for k, v in L.tensors.items() if v is last][0]
    add("tensor_out_of_bounds.gguf", _patch(good, last["offset_off"], "<Q", 1 << 40), OOB, [lname])
    misaligned = _patch(good, q["offset_off"], "<Q", q["offset"] + 1)
    add("misaligned_tensor.gguf", misaligned, ["align", "offset"], ["blk.0.attn_q.weight"])
    return cases


def make_unsupported_arch_gguf(path: str):
    import gguf

    w = gguf.GGUFWriter(path, "mamba")
    w.add_block_count(1)
    w.add_embedding_length(8)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def make_missing_tensor_gguf(good_gguf: str, path: str, drop: str = "blk.1.ffn_down.weight"):
    """Rewrite a GGUF without one tensor (via gguf-py reader + writer)."""
    import gguf

    r = gguf.GGUFReader(good_gguf)
    w = gguf.GGUFWriter(path, r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), vt, sub_type=f.types[-1])
        else:
            w.add_key_value(k, f.contents(), vt)
    for t in r.tensors:
        if t.name == drop:
            continue
        w.add_tensor(t.name, np.asarray(t.data), raw_shape=[int(x) for x in reversed(t.shape)], raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def make_bad_hf_dirs(good_dir: str, outdir: str) -> list[dict]:
    cases = []

    def clone(name):
        d = os.path.join(outdir, name)
        if os.path.exists(d):
            shutil.rmtree(d)
        shutil.copytree(good_dir, d)
        return d

    st = os.path.join(good_dir, "model.safetensors")
    with open(st, "rb") as f:
        good = f.read()
    (hn,) = struct.unpack_from("<Q", good, 0)
    header = json.loads(good[8:8 + hn])

    d = clone("st_header_too_long")
    _write(os.path.join(d, "model.safetensors"), _patch(good, 0, "<Q", 1 << 40))
    cases.append(dict(name="st_header_too_long", path=d, where=["model.safetensors", "st_header_too_long"],
                      what=["header", "too large", "too long", "length", "invalid", TRUNC[0]]))

    d = clone("st_bad_json")
    _write(os.path.join(d, "model.safetensors"), struct.pack("<Q", 16) + b"{not json at all" + good[8 + hn:])
    cases.append(dict(name="st_bad_json", path=d, where=["model.safetensors", "st_bad_json"],
                      what=["header", "json", "invalid", "parse"]))

    d = clone("st_offsets_oob")
    h2 = dict(header)
    k = "wte.weight"
    a, b = h2[k]["data_offsets"]
    h2[k] = dict(h2[k], data_offsets=[a + (1 << 30), b + (1 << 30)])
    hb = json.dumps(h2).encode()
    hb += b" " * (-len(hb) % 8)
    _write(os.path.join(d, "model.safetensors"), struct.pack("<Q", len(hb)) + hb + good[8 + hn:])
    cases.append(dict(name="st_offsets_oob", path=d, where=["model.safetensors", "wte.weight"], what=OOB + ["invalid"]))

    d = clone("st_missing_tensor")
    from tiny_models import read_safetensors, write_safetensors

    t = read_safetensors(st)
    del t["ln_f.weight"]
    write_safetensors(os.path.join(d, "model.safetensors"), t, {"format": "pt"})
    cases.append(dict(name="st_missing_tensor", path=d, where=["ln_f.weight"], what=MISSING))

    d = clone("missing_tokenizer")
    os.remove(os.path.join(d, "tokenizer.json"))
    cases.append(dict(name="missing_tokenizer", path=d, where=["tokenizer.json"], what=MISSING))

    d = clone("missing_config")
    os.remove(os.path.join(d, "config.json"))
    cases.append(dict(name="missing_config", path=d, where=["config.json"], what=MISSING))

    d = clone("unsupported_arch_hf")
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    cfg["model_type"] = "bert"
    cfg["architectures"] = ["BertModel"]
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    cases.append(dict(name="unsupported_arch_hf", path=d, where=["config.json", "model_type", "bert"],
                      what=["bert", "unsupported", "not supported", "unknown"]))

    d = clone("bad_tokenizer_json")
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        f.write('{"model": {"type": "BPE", "vocab": ')
    cases.append(dict(name="bad_tokenizer_json", path=d, where=["tokenizer.json"],
                      what=["parse", "json", "invalid", "eof", "expected"]))
    return cases


def make_all(tiny_dir: str, outdir: str) -> list[dict]:
    os.makedirs(outdir, exist_ok=True)
    cases = make_bad_ggufs(os.path.join(tiny_dir, "llama_q8_0_untied.gguf"), outdir)
    p = os.path.join(outdir, "unsupported_arch.gguf")
    make_unsupported_arch_gguf(p)
    cases.append(dict(name="unsupported_arch.gguf", path=p, where=["unsupported_arch.gguf", "general.architecture"],
                      what=["mamba"]))
    p = os.path.join(outdir, "missing_tensor.gguf")
    make_missing_tensor_gguf(os.path.join(tiny_dir, "llama_f32_untied.gguf"), p)
    cases.append(dict(name="missing_tensor.gguf", path=p, where=["missing_tensor.gguf", "blk.1.ffn_down.weight"],
                      what=["blk.1.ffn_down.weight"]))
    p = os.path.join(outdir, "empty.gguf")
    _write(p, b"")
    cases.append(dict(name="empty.gguf", path=p, where=["empty.gguf"], what=TRUNC + ["empty", "magic"]))
    cases.append(dict(name="nonexistent.gguf", path=os.path.join(outdir, "nonexistent.gguf"),
                      where=["nonexistent.gguf"], what=MISSING))
    cases += make_bad_hf_dirs(os.path.join(tiny_dir, "gpt2"), outdir)
    return cases


if __name__ == "__main__":
    for c in make_all(sys.argv[1], sys.argv[2]):
        print(c)
