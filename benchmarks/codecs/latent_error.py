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
import prior_bounds  # noqa: E402  (the codec and model readers, the codec's MLPs)


def synthesize(t, y, level):
    return prior_bounds.coder(t, "s", y + t["tables.medians"], level)


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
