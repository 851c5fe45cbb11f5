#!/usr/bin/env python3
"""Equal-rate views of an `nwc bench` results.json.

usage: summarize.py RESULTS.json [--rates 3 4 5 6] [--reference METHOD] [--ablation METHOD]
                    [--plot OUT.svg] [--methods M ...]
       summarize.py --points MODEL=RESULTS.json ... --pipelines P ...

1. For every method with at least two points: NLL interpolated (piecewise linear in measured
   bits/w of the linear layers) at the given rates; "-" outside the method's measured range. The
   same for the KL divergence from fp32 (piecewise linear in log KL) when the rows carry it.
2. Each point of the ablation method against the reference method's curve at the same bits/w:
   the NLL it gains (negative) or loses at equal rate.
3. With --plot: a rate-perplexity plot (gnuplot, SVG) of the listed methods (default: all).
   --methods also limits table 1 to those methods, in that order (the best of them in bold).
4. With --points: the measured bits/w and NLL of the listed pipelines on several models side by
   side (one results.json per model), each model's fp32 NLL in the header.
Prints Markdown tables.
"""
import argparse
import json
import math
import os
import subprocess
import sys


def interp(points, x):
    pts = sorted(points)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def points(models, pipelines):
    runs = []
    for spec in models:
        name, _, path = spec.partition("=")
        rows = json.load(open(path))
        runs.append((name, {r["pipeline"]: r for r in rows}))
    print("| pipeline | method | " + " | ".join(
        "%s b/w | NLL (fp32 %.4f)" % (n, rs["fp32"]["nll"]) for n, rs in runs) + " |")
    print("|---|---|" + "---:|---:|" * len(runs))
    for p in pipelines:
        method = next((rs[p]["method"] for _, rs in runs if p in rs), "?")
        cells = []
        for _, rs in runs:
            r = rs.get(p)
            cells += ["-", "-"] if r is None else ["%.3f" % r["linear_bits_per_weight"],
                                                   "%.4f" % r["nll"]]
        print("| %s | %s | %s |" % (p, method, " | ".join(cells)))


def equal_rate_table(curves, methods, rates, fmt, shown_as=lambda v: v):
    """One row per method with two points or more: its curve interpolated at each rate, "-"
    outside its measured range; the lowest value at each rate in bold."""
    print("| method | " + " | ".join("%g b/w" % x for x in rates) + " |")
    print("|---|" + "---:|" * len(rates))
    shown = {m: curves[m] for m in (methods or sorted(curves)) if m in curves}
    best = {x: min((v, m) for m, pts in shown.items() if len(pts) > 1
                   for v in [interp(pts, x)] if v is not None) for x in rates
            if any(len(p) > 1 and interp(p, x) is not None for p in shown.values())}
    for m, pts in shown.items():
        if len(pts) < 2:
            continue
        cells = []
        for x in rates:
            v = interp(pts, x)
            cells.append("-" if v is None else
                         ("**" + fmt + "**" if x in best and best[x][1] == m else fmt) % shown_as(v))
        print("| %s | %s |" % (m, " | ".join(cells)))


def main():
    if "--points" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--points", nargs="+", required=True, metavar="MODEL=RESULTS.json")
        ap.add_argument("--pipelines", nargs="+", required=True)
        a = ap.parse_args()
        points(a.points, a.pipelines)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--rates", type=float, nargs="+", default=[3, 4, 5, 6])
    ap.add_argument("--reference", default="NWC data-free")
    ap.add_argument("--ablation", default="NWC ablation (λ 300)")
    ap.add_argument("--plot")
    ap.add_argument("--methods", nargs="+")
    a = ap.parse_args()
    rows = json.load(open(a.results))
    fp32 = next(r for r in rows if not r["container"])
    curves = {}
    for r in rows:
        if r["container"]:
            curves.setdefault(r["method"], []).append((r["linear_bits_per_weight"], r["nll"]))

    print("NLL at equal measured bits/w (linear layers), fp32 NLL %.4f\n" % fp32["nll"])
    equal_rate_table(curves, a.methods, a.rates, "%.4f")
    # The KL divergence from fp32 falls about exponentially with the rate: interpolated in log KL.
    kl_curves = {}
    for r in rows:
        if r["container"] and r.get("kl") is not None and r["kl"] > 0:
            kl_curves.setdefault(r["method"], []).append(
                (r["linear_bits_per_weight"], math.log(r["kl"])))
    if kl_curves:
        print("\nKL divergence from fp32 (nats per token) at equal measured bits/w (linear layers)\n")
        equal_rate_table(kl_curves, a.methods, a.rates, "%.2e", math.exp)

    ref = curves.get(a.reference)
    abl = [r for r in rows if r["method"] == a.ablation]
    if ref and abl:
        print("\nAblation against the %s curve at the same bits/w\n" % a.reference)
        print("| step | bits/w | NLL | %s NLL at that rate | difference |" % a.reference)
        print("|---|---:|---:|---:|---:|")
        for r in sorted(abl, key=lambda r: r["pipeline"]):
            v = interp(ref, r["linear_bits_per_weight"])
            print("| %s | %.3f | %.4f | %s | %s |" % (
                r["pipeline"], r["linear_bits_per_weight"], r["nll"],
                "-" if v is None else "%.4f" % v, "-" if v is None else "%+.4f" % (r["nll"] - v)))


    if a.plot:
        plot(a.plot, curves, a.methods or sorted(curves), fp32)


def plot(out, curves, methods, fp32):
    base = os.path.splitext(out)[0]
    with open(base + ".dat", "w") as dat:
        for m in methods:
            dat.write("# %s\n" % m)
            for x, nll in sorted(curves[m]):
                dat.write("%g %g\n" % (x, math.exp(nll)))
            dat.write("\n\n")
    series = ", ".join("'%s.dat' index %d with linespoints title '%s'" % (base, i, m)
                       for i, m in enumerate(methods))
    ppl = fp32["ppl"]
    with open(base + ".gp", "w") as gp:
        gp.write("set terminal svg size 900,560\nset output '%s'\n" % out)
        gp.write("set xlabel 'bits per weight (linear layers, measured)'\n"
                 "set ylabel 'perplexity (ppl-v1)'\nset logscale y\nset key outside right\n"
                 "set grid\nset yrange [%g:%g]\n" % (ppl * 0.97, ppl * 1.6))
        gp.write("plot %s, %g with lines dashtype 2 title 'fp32'\n" % (series, ppl))
    subprocess.run(["gnuplot", base + ".gp"], check=True)


if __name__ == "__main__":
    main()
