"""Shared fixtures: the CLI runner, tiny models, malformed inputs, SmolLM2.

Environment:
  SCALPEL_BIN    path of the scalpel binary (default <repo>/target/release/scalpel)
  SCALPEL_MODEL  path of SmolLM2-135M-Instruct.Q4_1.gguf (default <repo>/models/...)
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import bad_inputs  # noqa: E402
import ref_model  # noqa: E402
import tiny_models  # noqa: E402

SCALPEL_BIN = os.environ.get("SCALPEL_BIN", os.path.join(REPO, "target", "release", "scalpel"))
SMOL_PATH = os.environ.get("SCALPEL_MODEL", os.path.join(REPO, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))

requires_smol = pytest.mark.skipif(not os.path.exists(SMOL_PATH),
                                   reason=f"SmolLM2 model file not found at {SMOL_PATH} (set SCALPEL_MODEL)")


class CliError(AssertionError):
    pass


class Scalpel:
    """Runs the CLI. Every call records its command line so failures print a repro."""

    def __init__(self, binary):
        self.binary = binary

    def run(self, *args, timeout=120):
        cmd = [self.binary, *[str(a) for a in args]]
        t0 = time.time()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                               env={"SCALPEL_MODEL_DIR": os.path.dirname(SMOL_PATH), **os.environ,
                                    "RUST_BACKTRACE": "0"})
        except subprocess.TimeoutExpired as e:
            raise CliError(f"timed out after {timeout}s: {repro(cmd)}") from e
        p.elapsed = time.time() - t0
        p.cmd = cmd
        return p

    def json(self, *args, timeout=120):
        p = self.run(*args, "--json", timeout=timeout)
        if p.returncode != 0:
            raise CliError(f"exit {p.returncode}: {repro(p.cmd)}\nstderr: {p.stderr[-2000:]}")
        assert "panicked" not in p.stderr, f"panic in stderr: {repro(p.cmd)}\n{p.stderr[-2000:]}"
        try:
            return json.loads(p.stdout)
        except json.JSONDecodeError as e:
            raise CliError(f"stdout is not JSON ({e}): {repro(p.cmd)}\nstdout: {p.stdout[:2000]}") from e


def repro(cmd):
    import shlex

    return " ".join(shlex.quote(c) for c in cmd)


def ids_arg(ids):
    return ",".join(str(int(i)) for i in ids)


def to_float(v):
    """JSON cannot encode -inf: accept -Infinity (Python's json), null, or the strings "-inf"/"-Infinity"."""
    if v is None:
        return -math.inf
    if isinstance(v, str):
        return float(v.replace("Infinity", "inf"))
    return float(v)


def hook_array(resp):
    vals = np.array([to_float(v) for v in resp["values"]], dtype=np.float64)
    shape = [int(s) for s in resp["shape"]]
    assert vals.size == int(np.prod(shape)), f"{resp['hook']}: {vals.size} values for shape {shape}"
    return vals.reshape(shape)


def close_report(got, want):
    """max abs error on finite entries + whether the non-finite pattern matches"""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    fin = np.isfinite(want)
    same_nonfinite = bool(np.array_equal(np.isfinite(got), fin) and np.all(got[~fin] == want[~fin]))
    err = float(np.max(np.abs(got[fin] - want[fin]))) if fin.any() else 0.0
    return err, same_nonfinite


@pytest.fixture(scope="session")
def scalpel():
    if not (os.path.isfile(SCALPEL_BIN) and os.access(SCALPEL_BIN, os.X_OK)):
        pytest.fail(f"scalpel binary not found at {SCALPEL_BIN}: run `cargo build --release --bin scalpel` "
                    f"or set SCALPEL_BIN", pytrace=False)
    return Scalpel(SCALPEL_BIN)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """{name: {path, kind, ...}} of every tiny model (see tiny_models.write_all)."""
    d = tmp_path_factory.mktemp("tiny")
    return tiny_models.write_all(str(d))


@pytest.fixture(scope="session")
def bad_cases(tiny, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    tiny_dir = os.path.dirname(tiny["llama_f32_untied"]["path"])
    return bad_inputs.make_all(tiny_dir, str(d))


_REF_CACHE: dict = {}


def reference(path):
    m = _REF_CACHE.get(path)
    if m is None:
        m = _REF_CACHE[path] = ref_model.load(path)
    return m


@pytest.fixture(scope="session")
def ref():
    return reference


@pytest.fixture(scope="session")
def smol():
    if not os.path.exists(SMOL_PATH):
        pytest.skip(f"SmolLM2 model file not found at {SMOL_PATH} (set SCALPEL_MODEL)")
    return SMOL_PATH


@pytest.fixture(scope="session")
def smol_ref(smol):
    return reference(smol)
