#!/usr/bin/python3
"""Where an NWC codec's error comes from at high rate: its analysis and synthesis transforms run
over a model's row-normalized chunks (16 rows down one input column of every linear, as
nwc.chunk.column with normalize = "row" makes them), at quality level 0, printing the latents'
standard deviation and the chunk MSE (normalized domain: unit variance per row) with the latents
rounded at step 1 (the training grid), 1/2 and 1/4, and not quantized at all (the transforms' own
error). Needs numpy (Debian's python3-numpy).

    latent_error.py MODEL CODEC.nwcc [CODEC.nwcc ...]

MODEL is a llama2.c checkpoint or a Hugging Face directory (model.safetensors).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prior_bounds  # noqa: E402  (the codec and model readers, the analysis transform)


def synthesize(t, y, level):
    def lin(p, v):
        return v @ t[p + ".weight"].T + t[p + ".bias"]

    h = lin("g_s.input", y + t["tables.medians"])
    u = lin("g_s.linear0", h)
    if "g_s.norm0.weight" in t:
        mu, var = u.mean(1, keepdims=True), u.var(1, keepdims=True)
        u = (u - mu) / np.sqrt(var + 1e-5) * t["g_s.norm0.weight"] + t["g_s.norm0.bias"]
    h = (h + np.maximum(u, 0)) * t["level_embedding.weight"][level]
    return lin("g_s.output", h)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    x, _, _ = prior_bounds.chunks_of(prior_bounds.linears_of(sys.argv[1]))
    x = x.astype(np.float64)
    print("| codec | latent std | MSE, step 1 | step 1/2 | step 1/4 | not quantized |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in sys.argv[2:]:
        _, t = prior_bounds.load_codec(path)
        t = {k: v.astype(np.float64) for k, v in t.items()}
        y = prior_bounds.analyze(t, x, 0)
        mse = [((synthesize(t, np.rint(y / s) * s, 0) - x) ** 2).mean() for s in (1, 0.5, 0.25)]
        mse.append(((synthesize(t, y, 0) - x) ** 2).mean())
        print(f"| {os.path.basename(path)} | {y.std():.1f} | " +
              " | ".join(f"{m:.2e}" for m in mse) + " |", flush=True)


if __name__ == "__main__":
    main()
