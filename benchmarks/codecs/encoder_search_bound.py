#!/usr/bin/python3
"""How much an encoder that searches its symbols could gain over the codec's one-shot analysis,
with the decoder unchanged: after rounding the analysis' latents, each latent is tried one symbol
up and down with the real synthesis in the loop and kept when the chunk's squared error plus RATE
times its code length under the codec's tables falls (three passes over the 16 channels). Also
prints the analysis' own reconstruction error without rounding (how far g_a is from inverting g_s:
the most that refining continuous latents before rounding could remove). Level 0, row-normalized
16-row chunks of every linear of MODEL as the presets code them. Needs numpy.

    encoder_search_bound.py CODEC.nwcc MODEL [RATE...]

Prints a Markdown table: bits per weight (the symbols' code lengths) and MSE (normalized domain)
for plain rounding and for the search at each RATE (0: squared error alone; default 0 0.005 0.01).
"""
import os, sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prior_bounds as pb  # noqa: E402

_, t = pb.load_codec(sys.argv[1])
x, _, _ = pb.chunks_of(pb.linears_of(sys.argv[2]))
x = x.astype(np.float64)
rates = [float(a) for a in sys.argv[3:]] or [0.0, 0.005, 0.01]
medians = t["tables.medians"]


def synthesize(s):
    return pb.coder(t, "s", s + medians, 0)


def bits(s):
    """Code length of each symbol as nwc.entropy.rans charges it, escapes included."""
    return pb.shared_bits(t, s)


y = pb.analyze(t, x, 0)
unrounded = ((x - synthesize(y)) ** 2).mean()
print("| encoder | bits/w | MSE |\n|---|---:|---:|")
for rate in [None] + rates:
    s = np.rint(y).astype(np.int64)

    def cost(v):
        return ((x - synthesize(v)) ** 2).sum(1) + (rate or 0.0) * bits(v).sum(1)
    if rate is not None:
        best = cost(s)
        for _ in range(3):
            for c in range(16):
                for step in (-1, 1):
                    trial = s.copy()
                    trial[:, c] += step
                    j = cost(trial)
                    keep = j < best
                    s[keep], best[keep] = trial[keep], j[keep]
    label = (f"rounding (analysis alone, unrounded: MSE {unrounded:.2e})" if rate is None
             else f"greedy symbol search, rate weight {rate}")
    print(f"| {label} | {bits(s).sum() / s.size:.4f} | {((x - synthesize(s)) ** 2).mean():.4e} |",
          flush=True)
