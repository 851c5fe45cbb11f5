#!/usr/bin/python3
"""Runs GPTQ's reference code (IST-DASLab/gptq: gptq.py GPTQ.fasterquant with quant.py's
Quantizer) on every linear layer of a model with nwc's calibration Hessians, and compares the
result, weight by weight, with what nwc decoded from its own container of the same settings.

The reference is imported from a checkout given with --gptq-src (never part of this repository);
run with Debian's python3-torch and python3-numpy, one torch thread. The only change to the
reference is made here, from outside: Quantizer.find_params rounds the scale to fp16 after the
zero point is computed from the float32 scale, as the GPTQ checkpoint format stores it and as
nwc.quant.uniform (grid = "gptq") does.

  python3 gptq_compare.py --gptq-src DIR --weights model.safetensors --hessians H.safetensors \
      --ours decoded.safetensors --bits 4 --group 32 [--act-order] [--static-groups]
"""
import argparse
import json
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, t in header.items():
        assert t["dtype"] == "F32", (path, name, t["dtype"])
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(blob[8 + n + a:8 + n + b], dtype="<f4").reshape(t["shape"])
    return out, meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gptq-src", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--hessians", required=True)
    ap.add_argument("--ours", required=True)
    ap.add_argument("--bits", type=int, required=True)
    ap.add_argument("--group", type=int, required=True)
    ap.add_argument("--act-order", action="store_true")
    ap.add_argument("--static-groups", action="store_true")
    ap.add_argument("--percdamp", type=float, default=0.01)
    ap.add_argument("--blocksize", type=int, default=128)
    args = ap.parse_args()

    sys.path.insert(0, args.gptq_src)
    import types

    import torch

    # gptq.py imports transformers only to recognise its Conv1D layers; these are nn.Linear.
    stub = types.ModuleType("transformers")
    stub.Conv1D = type("Conv1D", (), {})
    sys.modules.setdefault("transformers", stub)
    import torch.nn as nn
    import quant
    from gptq import GPTQ

    torch.set_num_threads(1)
    torch.cuda.synchronize = lambda *a, **k: None  # fasterquant times itself; CPU-only torch
    find_params = quant.Quantizer.find_params

    def find_params_fp16_scale(self, x, weight=False):
        find_params(self, x, weight)
        self.scale = self.scale.half().float()

    quant.Quantizer.find_params = find_params_fp16_scale

    weights, _ = read_safetensors(args.weights)
    hessians, meta = read_safetensors(args.hessians)
    ours, _ = read_safetensors(args.ours)
    inputs = json.loads(meta["nwc.calibration"])["inputs"]

    total = same = 0
    worst = 0.0
    err_ref_sum = err_ours_sum = 0.0
    for key, info in inputs.items():
        H = torch.from_numpy(hessians["hessian." + key].copy())
        for name in info["linears"]:
            W = torch.from_numpy(weights[name].copy())
            layer = nn.Linear(W.shape[1], W.shape[0], bias=False)
            layer.weight.data = W.clone()
            g = GPTQ(layer)
            g.H = H.clone()
            g.nsamples = info["count"]
            g.quantizer = quant.Quantizer()
            g.quantizer.configure(args.bits, perchannel=True, sym=False, mse=False)
            g.fasterquant(blocksize=args.blocksize, percdamp=args.percdamp, groupsize=args.group,
                          actorder=args.act_order, static_groups=args.static_groups)
            ref = layer.weight.data.numpy().astype(np.float32)
            mine = ours[name]
            n = ref.size
            eq = int(np.sum(ref == mine))
            total += n
            same += eq
            Hd = H.double().numpy()
            W0 = W.double().numpy()

            def herr(q):
                d = q.astype(np.float64) - W0
                return float(np.einsum("ij,jk,ik->", d, Hd, d))

            e_ref, e_ours = herr(ref), herr(mine)
            err_ref_sum += e_ref
            err_ours_sum += e_ours
            worst = max(worst, abs(e_ours - e_ref) / e_ref)
            print(f"{name}: {eq}/{n} weights equal, tr(dW H dW^T) reference {e_ref:.6e}, "
                  f"nwc {e_ours:.6e} ({(e_ours - e_ref) / e_ref:+.2e})")
    print(f"total: {same}/{total} weights bit-identical ({100.0 * same / total:.3f} %), "
          f"summed Hessian error reference {err_ref_sum:.6e}, nwc {err_ours_sum:.6e} "
          f"({(err_ours_sum - err_ref_sum) / err_ref_sum:+.3e}), worst layer {worst:.2e}")


if __name__ == "__main__":
    main()
