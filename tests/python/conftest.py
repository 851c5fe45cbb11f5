"""Fixtures of the Python suite: where the build, the sources and the shared data are, the built
`nwc` executable, and readers of model and safetensors files written here with NumPy alone, so
that the module is checked against code that does not share its C++.

CTest (python/CMakeLists.txt) sets PYTHONPATH to the build tree's package and
NWC_TEST_BINARY_DIR, NWC_TEST_SOURCE_DIR and NWC_TEST_DATA_DIR; NWC_DATA, when set, wins for the
data (as in the C++ tests).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import nwc


def _env_dir(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run the suite through ctest (python_pytest) or "
                           "set it to the build / source directory")
    return Path(value)


BINARY_DIR = _env_dir("NWC_TEST_BINARY_DIR")
SOURCE_DIR = _env_dir("NWC_TEST_SOURCE_DIR")
DATA_DIR = Path(os.environ.get("NWC_DATA") or os.environ.get("NWC_TEST_DATA_DIR") or "")
NWC = BINARY_DIR / "bin" / "nwc"
PIPELINES = SOURCE_DIR / "pipelines"
STORIES = DATA_DIR / "models" / "stories260K" / "stories260K.bin"
STORIES_TOKENIZER = DATA_DIR / "models" / "stories260K" / "tok512.bin"
TINYSTORIES_656K = DATA_DIR / "models" / "tinystories656K"
EVAL_TEXT = DATA_DIR / "text" / "tinystories-eval.txt"
CALIB_TEXT = DATA_DIR / "text" / "tinystories-calib.txt"


def _check_data() -> None:
    for p in (STORIES, STORIES_TOKENIZER, EVAL_TEXT, CALIB_TEXT, TINYSTORIES_656K):
        if not p.exists():
            raise RuntimeError(f"{p}: missing (shared data; set NWC_DATA to its directory)")
    if not NWC.exists():
        raise RuntimeError(f"{NWC}: missing (build the nwc target)")


_check_data()


# Evaluation and calibration exist only in builds with the LibTorch model runtime (as the C++
# tests that need it are left out of builds without it); test_eval checks that such builds refuse.
needs_runtime = pytest.mark.skipif(not nwc.HAS_RUNTIME,
                                   reason="built without the model runtime (NWC_WITH_RUNTIME=OFF)")


def run_nwc(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    """Runs the built nwc executable; returns the completed process (text output)."""
    cmd = [str(NWC), *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr}")
    return p


def nwc_json(*args: object) -> dict:
    return json.loads(run_nwc(*args, "--json").stdout)


def cli_error(*args: object) -> str:
    """The message `nwc` prints after 'error: ' for a failing command."""
    p = run_nwc(*args, check=False)
    assert p.returncode != 0, f"nwc {args} succeeded"
    line = p.stderr.strip().splitlines()[-1]
    assert ": error: " in line, line
    return line.split(": error: ", 1)[1]


def read_safetensors(path: Path) -> "OrderedDict[str, np.ndarray]":
    """A safetensors file's tensors (F32, F16, BF16 as float32) in file order."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = memoryview(data)[8 + n:]
    out = OrderedDict()
    entries = sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                     key=lambda kv: kv[1]["data_offsets"][0])
    for name, info in entries:
        a, b = info["data_offsets"]
        raw = body[a:b]
        if info["dtype"] == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif info["dtype"] == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif info["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise AssertionError(f"{path}: {name}: dtype {info['dtype']}")
        out[name] = arr.reshape(info["shape"])
    return out


def read_llama2c(path: Path) -> tuple["OrderedDict[str, np.ndarray]", dict]:
    """A llama2.c checkpoint (7 x int32 header, then float32 tensors) as HF Llama names in the
    file's order — nwc's reader order — and the architecture it implies (interleaved RoPE)."""
    data = path.read_bytes()
    dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack("<7i", data[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    head = dim // heads
    floats = np.frombuffer(data, dtype="<f4", offset=28)
    pos = 0
    out: OrderedDict[str, np.ndarray] = OrderedDict()

    def take(shape):
        nonlocal pos
        n = int(np.prod(shape))
        a = floats[pos:pos + n].reshape(shape).copy()
        pos += n
        return a

    def per_layer(suffix, shape):
        stacked = take((layers, *shape))
        for i in range(layers):
            out[f"model.layers.{i}.{suffix}"] = stacked[i]

    out["model.embed_tokens.weight"] = take((vocab, dim))
    per_layer("input_layernorm.weight", (dim,))
    per_layer("self_attn.q_proj.weight", (dim, dim))
    per_layer("self_attn.k_proj.weight", (kv_heads * head, dim))
    per_layer("self_attn.v_proj.weight", (kv_heads * head, dim))
    per_layer("self_attn.o_proj.weight", (dim, dim))
    per_layer("post_attention_layernorm.weight", (dim,))
    per_layer("mlp.gate_proj.weight", (hidden, dim))
    per_layer("mlp.down_proj.weight", (dim, hidden))
    per_layer("mlp.up_proj.weight", (hidden, dim))
    out["model.norm.weight"] = take((dim,))
    pos += seq * head  # freq_cis real and imaginary halves (legacy files)
    if not shared:
        out["lm_head.weight"] = take((vocab, dim))
    arch = {"family": "llama", "dim": dim, "hidden_dim": hidden, "n_layers": layers,
            "n_heads": heads, "n_kv_heads": kv_heads, "vocab_size": vocab, "max_seq_len": seq,
            "norm_eps": 1e-5, "rope_theta": 10000.0, "rope_style": "interleaved",
            "tied_embeddings": shared}
    return out, arch


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes and float32 bit patterns (NaNs and signed zeros included)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.fixture(scope="session")
def stories() -> tuple["OrderedDict[str, np.ndarray]", dict]:
    return read_llama2c(STORIES)


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    """A directory shared by the session's tests (containers made once by the CLI)."""
    return tmp_path_factory.mktemp("nwc")


@pytest.fixture(scope="session")
def cli_containers(work: Path) -> dict[str, Path]:
    """stories260K compressed by the CLI with three pipelines: RTN with raw side tensors, RTN
    8-bit with zstd side tensors, and the NWC neural codec with rANS."""
    out = {}
    for name in ("rtn-4bit-g32", "rtn-8bit-g64-zstd", "nwc-datafree-l300"):
        path = work / f"cli-{name}.nwc"
        run_nwc("compress", STORIES, "-p", PIPELINES / f"{name}.toml", "-o", path, "--quiet")
        out[name] = path
    return out
