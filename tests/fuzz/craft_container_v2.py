#!/usr/bin/env python3
"""Writes the hand-made hostile version 2 containers of tests/fuzz/regressions/fuzz_container/
crafted-v2-*: truncations, malformed varints, string-table indices out of range, stream lengths that
run past or fall short of the stream area, streams shifted over each other, huge counts, shapes and
symbol counts, zstd frames that declare or expand to too much, string-table expansion bombs, deep
JSON, invalid UTF-8, checksum mismatches. They start from tests/golden/golden-v2.nwc (real plugins,
real streams) with its manifest decompressed and stored (encoding 0), so the fuzzer also gets
mutable binary manifests to start from (crafted-v2-stored-golden is that file unchanged, and
benign). Every one must be refused with a one-line nwc::Error, or accepted when benign, without
allocating far more than its size. Needs the zstd command-line tool. Run once; the output is
committed (re-running rewrites the same files). The layout is docs/container.md, version 2."""
import copy
import os
import struct
import subprocess

ROOT = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(ROOT, "regressions", "fuzz_container")
GOLDEN = os.path.join(ROOT, "..", "golden", "golden-v2.nwc")

from xxh64 import xxh64  # noqa: E402  (a sibling module: the script's own directory)


# ---- the version 2 manifest body ----------------------------------------------------------------
def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def parse(b):
    p = 0

    def v():
        nonlocal p
        x, s = 0, 0
        while True:
            c = b[p]
            p += 1
            x |= (c & 0x7F) << s
            s += 7
            if not c & 0x80:
                return x

    def byte():
        nonlocal p
        p += 1
        return b[p - 1]

    m = {}
    strings = []
    for _ in range(v()):
        n = v()
        strings.append(b[p:p + n])
        p += n
    m["strings"] = strings
    m["head"] = [v() for _ in range(6)]
    m["configs"] = [[[v() for _ in range(5)] for _ in range(v())] for _ in range(v())]
    tensors = []
    for _ in range(v()):
        t = {"name": [v() for _ in range(v())], "dtype": byte(), "storage": byte()}
        t["shape"] = [v() for _ in range(v())]
        t["config"] = v()
        t["blocks"] = [[v(), v()] for _ in range(v())]
        tensors.append(t)
    m["tensors"] = tensors
    runs = []
    for _ in range(v()):
        owner = v()
        if owner == 0:
            runs.append({"owner": 0, "gap": v()})
        else:
            runs.append({"owner": owner, "streams": [[v(), v(), v()] for _ in range(v())]})
    m["runs"] = runs
    m["sums"] = [struct.unpack_from("<Q", b, q)[0] for q in range(p, len(b), 8)]
    return m


def encode(m):
    o = bytearray(varint(len(m["strings"])))
    for s in m["strings"]:
        o += varint(len(s)) + s
    for x in m["head"]:
        o += varint(x)
    o += varint(len(m["configs"]))
    for c in m["configs"]:
        o += varint(len(c))
        for st in c:
            for x in st:
                o += varint(x)
    o += varint(len(m["tensors"]))
    for t in m["tensors"]:
        o += varint(len(t["name"])) + b"".join(varint(x) for x in t["name"])
        o += bytes([t["dtype"], t["storage"]]) + varint(len(t["shape"]))
        o += b"".join(varint(x) for x in t["shape"]) + varint(t["config"]) + varint(len(t["blocks"]))
        for w, n in t["blocks"]:
            o += varint(w) + varint(n)
    o += varint(len(m["runs"]))
    for r in m["runs"]:
        o += varint(r["owner"])
        if r["owner"] == 0:
            o += varint(r["gap"])
        else:
            o += varint(len(r["streams"]))
            for s in r["streams"]:
                o += b"".join(varint(x) for x in s)
    for h in m["sums"]:
        o += struct.pack("<Q", h)
    return bytes(o)


def unit_sums(m, area):
    """The spec's checksum units recomputed from the stream bytes (`area` = the whole file)."""
    per = [[] for _ in m["tensors"]]
    off = 16
    for r in m["runs"]:
        if r["owner"] == 0:
            off += r["gap"]
            continue
        for role, block, length in r["streams"]:
            if r["owner"] - 1 < len(per):
                per[r["owner"] - 1].append((off, length, block))
            off += length

    def one(ss):
        le = b"".join(struct.pack("<Q", xxh64(area[o:o + n])) for o, n, _ in ss)
        return xxh64(le)

    sums = []
    for t, ss in zip(m["tensors"], per):
        for k in range(len(t["blocks"]) + 1):
            unit = [s for s in ss if s[2] == k]
            if unit:
                sums.append(one(unit))
    return sums


# ---- files -------------------------------------------------------------------------------------
def split(f):
    moff, mlen = struct.unpack_from("<QQ", f, len(f) - 40)
    return f[:moff], f[moff:moff + mlen], f[len(f) - 40:]


def assemble(area, manifest, footer, fix=True):
    moff = len(area)
    f = bytearray(footer)
    struct.pack_into("<QQ", f, 0, moff, len(manifest))
    if fix:
        struct.pack_into("<Q", f, 16, xxh64(manifest))
    return area + manifest + bytes(f)


def zstd(data, *args):
    size = [] if "-d" in args else ["--stream-size=%d" % len(data)]  # the frame declares its size
    return subprocess.run(["zstd", "-q", "-c", *size, *args], input=data, check=True,
                          stdout=subprocess.PIPE).stdout


with open(GOLDEN, "rb") as fh:
    GOLD = fh.read()
AREA, STORED, FOOTER = split(GOLD)
assert STORED[0] == 1, "golden-v2.nwc has a zstd manifest"
BODY = zstd(STORED[1:], "-d")
BASE = parse(BODY)
assert encode(BASE) == BODY, "the spec's encoding reproduces the writer's body"


def write(name, data):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "crafted-v2-" + name), "wb") as fh:
        fh.write(data)


def lie(name, edit, sums=True, area=AREA):
    m = copy.deepcopy(BASE)
    edit(m)
    if sums:
        m["sums"] = unit_sums(m, area)
    write(name, assemble(area, b"\0" + encode(m), FOOTER))


def string(m, s):
    if s not in m["strings"]:
        m["strings"].append(s)
    return m["strings"].index(s)


def first_pipeline(m):
    return next(t for t in m["tensors"] if t["storage"] == 0)


def stream_runs(m):
    return [r for r in m["runs"] if r["owner"] != 0]


# A valid start for mutations: golden-v2.nwc with its manifest stored.
write("stored-golden", assemble(AREA, b"\0" + BODY, FOOTER))

# Truncations: of the file (no footer) and of the stored manifest (footer fixed).
write("truncated-file", GOLD[: len(GOLD) // 2])
write("truncated-manifest", assemble(AREA, b"\0" + BODY[: len(BODY) // 2], FOOTER))
write("truncated-zstd-frame", assemble(AREA, STORED[: len(STORED) - 5], FOOTER))

# Varints: overlong, more than 64 bits, truncated, a count far beyond the bytes left.
write("overlong-varint", assemble(AREA, b"\0" + b"\x80\x80\x00" + BODY, FOOTER))
write("varint-65-bits", assemble(AREA, b"\0" + b"\xff" * 9 + b"\x03" + BODY, FOOTER))
write("truncated-varint", assemble(AREA, b"\0\x80", FOOTER))
write("string-count-2^62", assemble(AREA, b"\0" + varint(1 << 62) + BODY[1:], FOOTER))
head = encode(dict(BASE, tensors=[], runs=[], sums=[]))[:-2]
write("tensor-count-2^40", assemble(AREA, b"\0" + head + varint(1 << 40) + BODY[len(head) + 1:],
                                    FOOTER))

# String-table indices out of range.
lie("name-index-out-of-range", lambda m: m["tensors"][1]["name"].__setitem__(0, 1 << 40))
lie("role-index-out-of-range",
    lambda m: stream_runs(m)[0]["streams"][0].__setitem__(0, len(m["strings"])), sums=False)
lie("json-index-out-of-range", lambda m: m["head"].__setitem__(4, 1 << 20), sums=False)

# Stream lengths: far past the stream area, short of it, and two streams shifted over each other
# (one longer, the next shorter: the table still covers the area, each decoder sees wrong bytes).
lie("stream-length-2^62", lambda m: stream_runs(m)[0]["streams"][0].__setitem__(2, 1 << 62))
lie("streams-short-of-area", lambda m: stream_runs(m)[-1]["streams"][-1].__setitem__(2, 0))


def shift(m):
    ss = stream_runs(m)[0]["streams"]
    ss[0][2] += 100
    ss[1][2] -= 100


lie("streams-shifted", shift)
lie("gap-past-area", lambda m: m["runs"].append({"owner": 0, "gap": 1 << 40}))
lie("owner-out-of-range", lambda m: stream_runs(m)[0].__setitem__("owner", 1 << 30), sums=False)
lie("block-out-of-range", lambda m: stream_runs(m)[0]["streams"][0].__setitem__(1, 1 << 20),
    sums=False)

# Checksums: a wrong unit checksum, a short checksum table, a wrong footer checksum.
lie("unit-checksum-mismatch", lambda m: m["sums"].__setitem__(0, m["sums"][0] ^ 1), sums=False)
lie("checksum-table-short", lambda m: m["sums"].pop(), sums=False)
write("manifest-checksum-mismatch",
      assemble(AREA, b"\0" + BODY, FOOTER, fix=False))

# Huge shapes, symbol counts and block counts.
lie("huge-shape", lambda m: first_pipeline(m).__setitem__("shape", [1 << 40, 1 << 40]))


def huge_symbols(m):
    for b in first_pipeline(m)["blocks"]:
        b[1] = 1 << 40


lie("huge-symbol-count", huge_symbols)


def stored_huge(m):
    t = next(t for t in m["tensors"] if t["storage"] != 0)  # zstd storage in golden-v2.nwc
    t["shape"] = [1 << 20, 1 << 20]


lie("zstd-storage-huge-shape", stored_huge)


def many_blocks(m):
    t = first_pipeline(m)
    cols = t["shape"][1]
    t["shape"][1] = 10000
    t["blocks"] = [[1, t["blocks"][0][1] // cols] for _ in range(10000)]


lie("many-blocks", many_blocks)
lie("nine-dimensions", lambda m: m["tensors"][1].__setitem__("shape", [1] * 9))
lie("unknown-dtype", lambda m: m["tensors"][1].__setitem__("dtype", 0xFF))

# zstd: a frame that declares 2^40 bytes, one that expands more than 8x, an unknown encoding.
frame = bytes(zstd(BODY, "-19", "--no-check"))
fhd = frame[4]
single = (fhd >> 5) & 1
fields = (0 if single else 1) + [0, 1, 2, 4][fhd & 3]  # window descriptor, dictionary id
fcs = [single, 2, 4, 8][fhd >> 6]
big = frame[:4] + bytes([(fhd & 0x3F) | 0xC0]) + frame[5:5 + fields] + struct.pack("<Q", 1 << 40) + \
    frame[5 + fields + fcs:]
write("zstd-declares-1TiB", assemble(AREA, b"\1" + big, FOOTER))
bomb = copy.deepcopy(BASE)
bomb["strings"].append(b"\0" * (1 << 20))
write("zstd-expands-beyond-8x", assemble(AREA, b"\1" + zstd(encode(bomb), "-19", "--no-check"),
                                         FOOTER))
write("unknown-encoding", assemble(AREA, b"\7" + BODY, FOOTER))


# Strings: a name of 2^16 components referencing one 4 KiB string (256 MiB from 64 KiB), deep
# JSON, invalid UTF-8.
def bomb_name(m):
    i = string(m, b"x" * 4096)
    m["tensors"][1]["name"] = [i] * (1 << 16)


lie("name-expansion-bomb", bomb_name)
lie("deep-json", lambda m: m["head"].__setitem__(4, string(m, b"[" * 100000 + b"]" * 100000)))
lie("invalid-utf8", lambda m: m["strings"].__setitem__(m["head"][2], b"model\xc0\xaf"))
lie("duplicate-names", lambda m: m["tensors"][1].__setitem__("name", m["tensors"][0]["name"]))


def zero_length(m):
    """Every stream of the first pipeline tensor made empty (the bytes become unreferenced)."""
    r = stream_runs(m)[0]
    gap = sum(s[2] for s in r["streams"])
    for s in r["streams"]:
        s[2] = 0
    m["runs"].insert(m["runs"].index(r) + 1, {"owner": 0, "gap": gap})


lie("zero-length-streams", zero_length)
