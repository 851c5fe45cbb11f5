#!/usr/bin/env python3
"""The shipped codecs against plain rounding of the same row-normalized 16-vectors (rANS-coded),
on a model's linear weights: codec MSE against rounding's MSE interpolated (log-linearly) at the
codec's measured rate. Prints a Markdown table.

    rounding_compare.py NWC MODEL WORKDIR CODEC...

CODEC is a lambda of the shipped ladder (300: codecs/nwc-s-l300.nwcc) or a codec file (.nwcc),
with "@tcq" or "@tcq=STEP" appended to quantize its latents with nwc.quant.tcq (step 0.5 unless
given) instead of rounding them, and ",KEY=VALUE" after it for more of its options
("300@tcq,states=64,path_columns=16"); "chunks@tcq=STEP" is nwc.quant.tcq on the normalized
16-vectors themselves, without a codec.
"""
import json, math, os, subprocess, sys

nwc, model, work = sys.argv[1], sys.argv[2], sys.argv[3]
lambdas = sys.argv[4:]
root = os.path.dirname(os.path.abspath(__file__)) + "/../.."


def pipeline(name, body):
    path = os.path.join(work, name + ".toml")
    with open(path, "w") as f:
        f.write(f'[pipeline]\nname = "{name}"\nselect = ["model.layers.*_proj.weight"]\n'
                '[chunker]\nplugin = "nwc.chunk.column"\n' + body +
                '[entropy]\nplugin = "nwc.entropy.rans"\n'
                '[compensator]\nplugin = "nwc.comp.none"\nblock = 128\n')
    return path


def measure(p):
    out = os.path.join(work, "x.nwc")
    subprocess.run([nwc, "compress", model, "-p", p, "-o", out, "--quiet"], check=True)
    j = json.loads(subprocess.run([nwc, "inspect", out, "--reference", model, "--json"],
                                  check=True, capture_output=True).stdout)
    b = e = n = 0
    for t in j["tensors"]:
        if t["storage"] != "pipeline":
            continue
        k = math.prod(t["shape"])
        b += t["stream_bytes"]
        e += t["mse"] * k
        n += k
    return 8 * b / n, e / n


sweep = [measure(pipeline("round", f'[quantizer]\nplugin = "nwc.quant.round"\nstep = {s}\n'))
         for s in (0.015, 0.02, 0.03, 0.045, 0.06, 0.08, 0.12, 0.16, 0.2, 0.3, 0.45, 0.6, 0.9,
                   1.35, 2.0)]


def rounding_at(bits):
    for hi, lo in zip(sweep, sweep[1:]):
        if hi[0] >= bits >= lo[0]:
            t = (hi[0] - bits) / (hi[0] - lo[0])
            return math.exp(math.log(hi[1]) + t * (math.log(lo[1]) - math.log(hi[1])))
    return None


print("| codec | bits/w | codec MSE | rounding MSE at that rate | codec / rounding |")
print("|---|---:|---:|---:|---:|")
for spec in lambdas:
    name, _, quant = spec.partition("@")
    quant, *extra = quant.split(",")
    step = quant.partition("=")[2] or "0.5"
    quantizer = (f'plugin = "nwc.quant.tcq"\nstep = {step}\n' + "".join(e + "\n" for e in extra)
                 if quant.startswith("tcq") else 'plugin = "nwc.quant.round"\n')
    if extra:
        step += ", " + ", ".join(extra)
    if name == "chunks":
        label, body = f"no codec, tcq step {step}", f"[quantizer]\n{quantizer}"
    else:
        codec = (os.path.abspath(name) if name.endswith(".nwcc")
                 else os.path.join(root, "codecs", f"nwc-s-l{name}.nwcc"))
        label = os.path.basename(codec)[:-len(".nwcc")] + (f", tcq step {step}" if quant else "")
        body = (f'[transform]\nplugin = "nwc.transform.neural"\ncodec = "{codec}"\n'
                f"[quantizer]\n{quantizer}")
    bits, mse = measure(pipeline("codec", body))
    r = rounding_at(bits)
    print(f"| {label} | {bits:.3f} | {mse:.3e} | " +
          (f"{r:.3e} | {mse / r:.2f} |" if r else "outside the sweep | – |"), flush=True)
