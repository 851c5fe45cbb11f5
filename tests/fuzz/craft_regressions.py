#!/usr/bin/env python3
"""Writes the hand-made hostile inputs of tests/fuzz/regressions/<target>/crafted-*: huge declared
shapes and counts, offsets pointing backwards, zero-length streams, duplicate tensor names, deep
nesting. Every one must be refused with an nwc::Error (or accepted, for the benign ones) without
allocating far more than its size; CTest's fuzz_replay_* tests replay them under the normal build
and `make asan-test`, scripts/fuzz.sh with -rss_limit_mb/-malloc_limit_mb. Run once; the output is
committed (re-running rewrites the same files)."""
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(ROOT, "regressions")
GOLDEN = os.path.join(ROOT, "..", "golden", "golden-v1.nwc")


def write(target, name, data):
    d = os.path.join(OUT, "fuzz_" + target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "crafted-" + name), "wb") as f:
        f.write(data)


from xxh64 import xxh64  # noqa: E402  (a sibling module: the script's own directory)


# ---- safetensors -------------------------------------------------------------------------------
def st(header, data=b"", length=None):
    h = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(h) if length is None else length) + h + data


def tensor(dtype, shape, a, b):
    return {"dtype": dtype, "shape": shape, "data_offsets": [a, b]}


write("safetensors", "huge-shape", st(json.dumps({"w": tensor("F32", [1 << 40, 1 << 40], 0, 16)}), bytes(16)))
write("safetensors", "shape-overflow", st(json.dumps({"w": tensor("F32", [1 << 62, 8], 0, 16)}), bytes(16)))
write("safetensors", "backward-offsets", st(json.dumps({"w": tensor("F32", [4], 16, 0)}), bytes(16)))
write("safetensors", "huge-header-length", st("{}", b"", 1 << 62))
write("safetensors", "zero-length-tensor", st(json.dumps({"w": tensor("F32", [0], 0, 0)})))
write("safetensors", "duplicate-names",
      st('{"w":' + json.dumps(tensor("F32", [4], 0, 16)) + ',"w":' + json.dumps(tensor("F32", [4], 0, 16)) + "}", bytes(16)))
write("safetensors", "overlap", st(json.dumps({"a": tensor("F32", [4], 0, 16), "b": tensor("F32", [4], 8, 24)}), bytes(24)))
# .nwcc codec files are safetensors files: the same hostile headers, plus a bad codec config.
for name in ("huge-shape", "duplicate-names", "backward-offsets"):
    src = os.path.join(OUT, "fuzz_safetensors", "crafted-" + name)
    write("codec_file", name, open(src, "rb").read())
def codec(meta):
    return st(json.dumps({"__metadata__": {"nwc.codec": json.dumps(meta)},
                          "w": tensor("F32", [4], 0, 16)}), bytes(16))


write("codec_file", "huge-config", codec({"format": "nwcc", "version": 1, "config": {
    "chunk": 1 << 30, "width": 1 << 30, "blocks": 1 << 20, "latent": 1 << 30, "levels": 255}}))
write("codec_file", "format-not-a-string", codec({"format": 7, "version": 1}))
write("codec_file", "config-not-an-object", codec({"format": "nwcc", "version": 1, "config": 3}))
write("safetensors", "deep-json", st('{"__metadata__":' + "[" * 100000 + "]" * 100000 + "}"))

# ---- GGUF --------------------------------------------------------------------------------------
def gstr(s):
    return struct.pack("<Q", len(s)) + s.encode()


def gguf(n_tensors, n_kv, body):
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + body


def tinfo(name, dims, ty, off):
    return gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ty, off)


write("gguf", "huge-tensor-count", gguf(1 << 62, 0, bytes(64)))
write("gguf", "huge-kv-count", gguf(0, 1 << 62, bytes(64)))
write("gguf", "huge-string", gguf(0, 1, struct.pack("<Q", 1 << 62) + bytes(32)))
write("gguf", "huge-array", gguf(0, 1, gstr("k") + struct.pack("<IIQ", 9, 4, 1 << 60) + bytes(32)))
write("gguf", "nested-arrays", gguf(0, 1, gstr("k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 5000))
write("gguf", "huge-dims", gguf(1, 0, tinfo("token_embd.weight", [1 << 32, 1 << 32, 1 << 32, 1 << 32], 0, 0) + bytes(64)))
write("gguf", "duplicate-names", gguf(2, 0, tinfo("output_norm.weight", [4], 0, 0) + tinfo("output_norm.weight", [4], 0, 0) + bytes(32)))
write("gguf", "backward-offset", gguf(1, 0, tinfo("output_norm.weight", [4], 0, (1 << 64) - 32) + bytes(64)))
write("gguf", "zero-dim", gguf(1, 0, tinfo("output_norm.weight", [0], 0, 0) + bytes(32)))

# ---- llama2.c ----------------------------------------------------------------------------------
def l2c(*h, data=b""):
    return struct.pack("<7i", *h) + data


write("llama2c", "huge-dims", l2c(1 << 30, 1 << 30, 1 << 20, 1, 1, 1 << 30, 1 << 30, data=bytes(64)))
write("llama2c", "negative-dims", l2c(-64, -1, -5, 8, 4, -512, -256, data=bytes(64)))
write("llama2c", "zero-dims", l2c(0, 0, 0, 0, 0, 0, 0))
write("llama2c", "heads-not-dividing", l2c(64, 172, 1, 7, 3, 32, 16, data=bytes(1024)))
write("llama2c", "int-min-vocab", l2c(8, 8, 1, 1, 1, -(1 << 31), 1, data=bytes(64)))

# ---- containers (golden-v1 with a rewritten manifest, checksums made right) ---------------------
def container(edit, patch=None):
    f = bytearray(open(GOLDEN, "rb").read())
    moff, mlen = struct.unpack_from("<QQ", f, len(f) - 40)
    j = json.loads(f[moff:moff + mlen])
    edit(j)
    if patch:
        patch(j, f)
    text = json.dumps(j).encode()
    foot = bytearray(f[-40:])
    struct.pack_into("<QQQ", foot, 0, moff, len(text), xxh64(text))
    return f[:moff] + text + bytes(foot)


def pipeline_tensor(j):
    return next(t for t in j["tensors"] if t["storage"] == "pipeline")


def dup(j):
    j["tensors"].append(dict(j["tensors"][0]))


def huge_shape(j):
    pipeline_tensor(j)["shape"] = [1 << 40, 1 << 40]


def raw_huge_shape(j):
    t = next(t for t in j["tensors"] if t["storage"] != "pipeline")
    t["shape"] = [1 << 20, 1 << 20]


def backwards(j):
    s = pipeline_tensor(j)["streams"][0]
    s["offset"] = 0


def zero_len(j):
    for s in pipeline_tensor(j)["streams"]:
        s["length"] = 0
        s["xxh64"] = "%016x" % xxh64(b"")


def huge_symbols(j):
    for b in pipeline_tensor(j)["blocks"]:
        b[2] = 1 << 40


def huge_count_of_blocks(j):
    t = pipeline_tensor(j)
    t["blocks"] = [list(t["blocks"][0]) for _ in range(10000)]


def zstd_bomb(j, f):
    """A losslessly stored tensor as "zstd" whose frame header declares 2^40 bytes (its shape)."""
    t = next(t for t in j["tensors"] if t["storage"] != "pipeline" and t["streams"][0]["length"] >= 14)
    t["storage"] = "zstd"
    t["dtype"] = "F32"
    t["shape"] = [1 << 20, 1 << 18]
    s = t["streams"][0]
    s["role"] = "zstd"
    a = s["offset"]
    f[a:a + 14] = bytes.fromhex("28b52ffd") + bytes([0xC0, 0]) + struct.pack("<Q", 1 << 40)
    s["xxh64"] = "%016x" % xxh64(bytes(f[a:a + s["length"]]))


if os.path.exists(GOLDEN):
    write("container", "zstd-declares-1TiB", container(lambda j: None, zstd_bomb))
    write("container", "duplicate-names", container(dup))
    write("container", "huge-shape", container(huge_shape))
    write("container", "raw-huge-shape", container(raw_huge_shape))
    write("container", "offset-into-header", container(backwards))
    write("container", "zero-length-streams", container(zero_len))
    write("container", "huge-symbol-count", container(huge_symbols))
    write("container", "many-blocks", container(huge_count_of_blocks))
    write("container", "deep-json", container(lambda j: j["extra"].update({"x": json.loads("[" * 500 + "]" * 500)})))

# ---- pipelines ---------------------------------------------------------------------------------
write("pipeline", "deep-inline-tables", b"[pipeline]\nname = \"x\"\nexclude = " + b"[" * 100000 + b"]" * 100000 + b"\n")
write("pipeline", "duplicate-tables", b"[pipeline]\nname = \"x\"\n[pipeline]\nname = \"y\"\n")
write("pipeline", "many-overrides", b"[pipeline]\nname = \"x\"\n[quantizer]\nplugin = \"nwc.quant.uniform\"\n" + b"[[override]]\nmatch = \"*\"\nquantizer = { bits = 8 }\n" * 1000)

# ---- entropy coders: u32 symbol count + stream -------------------------------------------------
for t in ("raw", "zstd", "rans"):
    write("entropy_" + t, "zero-length-stream", struct.pack("<I", 1000))
    write("entropy_" + t, "empty-input", b"")
    write("entropy_" + t, "zero-symbols-with-stream", struct.pack("<I", 0) + bytes(16))
write("entropy_raw", "width-33", struct.pack("<I", 100) + bytes([33]) + bytes(4) + bytes(500))
write("entropy_zstd", "huge-content-size",
      struct.pack("<I", 16) + bytes([1]) + bytes(4) + bytes.fromhex("28b52ffd") + bytes([0xC0, 0]) + struct.pack("<Q", 1 << 62) + bytes(8))
write("entropy_rans", "interleave-code-3", struct.pack("<I", 100) + bytes([1, 0x31]) + bytes(64))
write("entropy_rans_cdf", "zero-length-stream",
      struct.pack("<I", 64) + struct.pack("<BHHBBB", 16, 1, 3, 0, 0, 0) + struct.pack("<3I", 0, 32768, 65536) + struct.pack("<H", 3) + struct.pack("<i", 0))
# Two levels of one channel, rows of 3 symbols, the second row's level out of range: refused.
write("entropy_rans_cdf", "row-level-out-of-range",
      struct.pack("<I", 6) + struct.pack("<BHHBBB", 16, 1, 3, 2, 0, 3) +
      struct.pack("<6I", 0, 32768, 65536, 0, 16384, 65536) + struct.pack("<2H", 3, 3) +
      struct.pack("<2i", 0, 0) + bytes([1, 7]) + bytes([1, 0x22]) + bytes(16))
write("nwc_stream", "zero-length-stream", struct.pack("<IB", 64, 0))
print("written under", OUT)
