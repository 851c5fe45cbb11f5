#!/usr/bin/python3
"""How much a better entropy model could save on an NWC codec's latents: the rate of the rounded
latents under the codec's shared factorized prior (its CDF tables, as nwc.entropy.rans codes them)
against static per-channel tables fitted per quality level, and against tables conditioned on a
context (the co-located symbol of the chunk above in the same column; the previous channel of the
same chunk; the chunk's mean row scale). Tables are fitted on one model's linears (FIT) and priced
on another's (TEST), so the figures are what such a model would really save on unseen weights, not
the plug-in entropy of the same samples. Needs numpy (Debian's python3-numpy).

    prior_bounds.py CODEC.nwcc FIT_MODEL.bin TEST_MODEL.bin [--fractions 0.001,0.01,0.1]

Models are llama2.c checkpoints or Hugging Face directories (model.safetensors); chunks are 16
rows down one input column of every linear, rows divided by their standard deviation
(nwc.chunk.column, normalize = "row"), as the presets code them.
Prints a Markdown table of bits per weight (one latent per weight), level by level, and for the
mix of levels the presets' [levels] fractions give (top level first).
"""
import argparse, json, os, struct, sys

import numpy as np


def load_codec(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header.pop("__metadata__")["nwc.codec"])
    dt = {"F32": np.float32, "I32": np.int32}
    t = {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                          dtype=dt[v["dtype"]]).reshape(v["shape"]) for k, v in header.items()}
    if meta["config"]["blocks"] != 1:
        sys.exit(f"{path}: expected a codec with 1 residual block")
    return meta, t


def linears_of(path):
    """Every decoder linear of a model as [out, in] arrays: a llama2.c checkpoint, or a Hugging
    Face directory's model.safetensors (the tensors model.layers.*_proj.weight, F32)."""
    if os.path.isdir(path):
        raw = open(os.path.join(path, "model.safetensors"), "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        out = {}
        for k, v in sorted(header.items()):
            if k.startswith("model.layers.") and k.endswith("_proj.weight"):
                if v["dtype"] != "F32":
                    sys.exit(f"{path}: {k} is {v['dtype']}, expected F32")
                b, e = v["data_offsets"]
                out[k] = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=np.float32).reshape(v["shape"])
        return out
    raw = open(path, "rb").read()
    dim, hidden, layers, heads, kv_heads, vocab, _ = struct.unpack("<7i", raw[:28])
    kv = dim * kv_heads // heads
    w = np.frombuffer(raw[28:], dtype=np.float32)
    pos = abs(vocab) * dim + layers * dim  # token embedding, attention norms
    out = {}
    for name, rows, cols in (("wq", dim, dim), ("wk", kv, dim), ("wv", kv, dim), ("wo", dim, dim)):
        for l in range(layers):
            out[f"{l}.{name}"] = w[pos:pos + rows * cols].reshape(rows, cols)
            pos += rows * cols
    pos += layers * dim  # ffn norms
    for name, rows, cols in (("w1", hidden, dim), ("w2", dim, hidden), ("w3", hidden, dim)):
        for l in range(layers):
            out[f"{l}.{name}"] = w[pos:pos + rows * cols].reshape(rows, cols)
            pos += rows * cols
    return out


def chunks_of(linears):
    """Row-normalized 16-row chunks down each column: (chunks [n, 16], column index of the chunk
    above or -1, mean log2 row scale of the chunk relative to its tensor's median)."""
    xs, above, scale = [], [], []
    base = 0
    for w in linears.values():
        w = w.astype(np.float64)
        s = w.std(axis=1, ddof=1)
        s[s == 0] = 1
        z = w / s[:, None]
        rows, cols = z.shape
        per_col = -(-rows // 16)
        pad = np.zeros((per_col * 16, cols))
        pad[:rows] = z
        ls = np.log2(s) - np.median(np.log2(s))
        lpad = np.zeros(per_col * 16)
        lpad[:rows] = ls
        for c in range(cols):
            for k in range(per_col):
                xs.append(pad[16 * k:16 * k + 16, c])
                above.append(base - 1 if k > 0 else -1)
                scale.append(lpad[16 * k:min(16 * k + 16, rows)].mean())
                base += 1
    return np.array(xs, dtype=np.float32), np.array(above), np.array(scale)


def coder(t, side, x, level):
    """The codec's MLP g_a (side "a", chunks to latents) or g_s (side "s", latents to chunks)."""
    def lin(p, v):
        return v @ t[f"g_{side}.{p}.weight"].T + t[f"g_{side}.{p}.bias"]

    h = lin("input", x)
    u = lin("linear0", h)
    if f"g_{side}.norm0.weight" in t:  # LayerNorm on (the default)
        mu, var = u.mean(1, keepdims=True), u.var(1, keepdims=True)
        u = (u - mu) / np.sqrt(var + 1e-5) * t[f"g_{side}.norm0.weight"] + t[f"g_{side}.norm0.bias"]
    h = (h + np.maximum(u, 0)) * t["level_embedding.weight"][level]
    return lin("output", h)


def analyze(t, x, level):
    """Latents centred on the prior's medians, as nwc.transform.neural hands them on."""
    return coder(t, "a", x, level) - t["tables.medians"]


def shared_bits(t, sym, level=0):
    """Bits of each symbol under the codec's tables at a quality level (its own tables when the
    codec has a prior per level), as nwc.entropy.rans codes it (escapes: the escape interval, 6
    bits of length, then the zigzag value's bits)."""
    cdf, lengths, offsets = t["tables.cdf"], t["tables.lengths"], t["tables.offsets"]
    m = sym.shape[1]
    base = level * m if cdf.shape[0] > m else 0  # level-major tables: a prior per level
    bits = np.zeros(sym.shape)
    for c in range(m):
        L, off = lengths[base + c], offsets[base + c]
        p = np.diff(cdf[base + c, :L]).astype(np.float64) / 65536.0
        p[p == 0] = 1 / 65536.0
        idx = sym[:, c] - off
        inside = (idx >= 0) & (idx < L - 2)
        bits[inside, c] = -np.log2(p[idx[inside]])
        z = np.where(idx < 0, -2 * idx - 1, 2 * idx)[~inside]
        bits[~inside, c] = -np.log2(p[L - 2]) + 6 + np.floor(np.log2(np.maximum(z, 1))) + 1
    return bits


def fitted_bits(fit_sym, fit_ctx, test_sym, test_ctx, alpha=0.5):
    """Bits of each test symbol under static per-channel tables fitted on the fit symbols,
    one table per context value (additive smoothing; values unseen in fitting priced as escapes
    of the shared scheme: one smoothed slot plus 6 + length bits)."""
    bits = np.zeros(test_sym.shape)
    for c in range(test_sym.shape[1]):
        lo = min(fit_sym[:, c].min(), test_sym[:, c].min())
        hi = max(fit_sym[:, c].max(), test_sym[:, c].max())
        k = hi - lo + 1
        for v in np.unique(test_ctx[:, c]):
            f = fit_sym[fit_ctx[:, c] == v, c] - lo
            counts = np.bincount(f, minlength=k).astype(np.float64) + alpha
            p = counts / counts.sum()
            m = test_ctx[:, c] == v
            bits[m, c] = -np.log2(p[test_sym[m, c] - lo])
    return bits


def plugin_information(sym, ctx):
    """Plug-in mutual information between each symbol and its context on the same samples, in
    bits per symbol: an optimistic bound on what conditioning on that context could save."""
    total = 0.0
    for c in range(sym.shape[1]):
        s, x = sym[:, c], ctx[:, c]
        joint = {}
        for a, b in zip(s.tolist(), x.tolist()):
            joint[(a, b)] = joint.get((a, b), 0) + 1
        n = len(s)
        ps = np.bincount(s - s.min()) / n
        px = np.bincount(x - x.min()) / n
        for (a, b), k in joint.items():
            total += k / n * np.log2(k / n / (ps[a - s.min()] * px[b - x.min()]))
    return total / sym.shape[1]


def contexts(sym, above, scale, kind):
    if kind == "none":
        return np.zeros_like(sym)
    if kind == "above":  # |co-located symbol of the chunk above|, capped at 3; 4 = first chunk
        a = np.where(above[:, None] >= 0, np.minimum(np.abs(sym[np.maximum(above, 0)]), 3), 4)
        return a
    if kind == "previous channel":  # |symbol of channel c - 1 in the same chunk|, capped at 3
        p = np.full_like(sym, 4)
        p[:, 1:] = np.minimum(np.abs(sym[:, :-1]), 3)
        return p
    if kind == "row scale":  # the chunk's mean log2 row scale (vs the tensor's median): 4 bins
        b = np.digitize(scale, [-0.5, 0, 0.5])
        return np.repeat(b[:, None], sym.shape[1], axis=1)
    raise ValueError(kind)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("codec")
    ap.add_argument("fit")
    ap.add_argument("test")
    ap.add_argument("--fractions", default="0.001,0.01,0.1",
                    help="the presets' [levels] fractions (top level first), for the mix line")
    a = ap.parse_args()
    meta, t = load_codec(a.codec)
    fx, fa, fs = chunks_of(linears_of(a.fit))
    tx, ta, ts = chunks_of(linears_of(a.test))
    kinds = ["none", "above", "previous channel", "row scale"]
    print(f"codec {a.codec} (lambda {meta['lambda']}), tables fitted on {a.fit}, "
          f"priced on {a.test} ({tx.shape[0]} chunks)\n")
    print("| level | shared prior (codec tables) | per-level tables | + context: chunk above | "
          "+ context: previous channel | + context: row scale | information in the contexts, "
          "plug-in on the test weights (above / previous / scale) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    levels = meta["config"]["levels"]
    fractions = [float(f) for f in a.fractions.split(",")]
    share = {levels - 1 - i: f for i, f in enumerate(fractions)}
    share[0] = 1 - sum(fractions)
    mix = np.zeros(1 + len(kinds))
    for level in range(levels):
        fsym = np.rint(analyze(t, fx, level)).astype(np.int64)
        tsym = np.rint(analyze(t, tx, level)).astype(np.int64)
        row = [shared_bits(t, tsym, level).mean()]
        for kind in kinds:
            row.append(fitted_bits(fsym, contexts(fsym, fa, fs, kind), tsym,
                                   contexts(tsym, ta, ts, kind)).mean())
        mix += share.get(level, 0) * np.array(row)
        info = [plugin_information(tsym, contexts(tsym, ta, ts, k)) for k in kinds[1:]]
        print(f"| {level} | " + " | ".join(f"{b:.3f}" for b in row) + " | " +
              " / ".join(f"{i:.3f}" for i in info) + " |", flush=True)
    print(f"| mix of levels ({a.fractions} top first, the rest level 0) | " +
          " | ".join(f"{b:.3f}" for b in mix) + " | |")


if __name__ == "__main__":
    main()
