"""benchmarks/suites/comparison/summarize.py, which writes docs/results.md's equal-rate tables:
NLL interpolated linearly in the measured rate, KL divergence linearly in log KL, "-" outside a
method's points, the lowest value at each rate in bold."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from conftest import SOURCE_DIR

SCRIPT = SOURCE_DIR / "benchmarks" / "suites" / "comparison" / "summarize.py"


def row(method, bits, nll, kl=None):
    r = {"method": method, "pipeline": f"{method}-{bits}", "container": method != "fp32",
         "linear_bits_per_weight": bits, "nll": nll, "ppl": math.exp(nll)}
    if kl is not None:
        r["kl"] = kl
    return r


def tables(tmp_path, rows, *args):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(rows))
    out = subprocess.run([sys.executable, str(SCRIPT), str(path), "--rates", "3", "4", "5",
                          *args], check=True, capture_output=True, text=True).stdout
    parsed, current = {}, None
    for line in out.splitlines():
        if line.startswith("NLL at equal"):
            current = parsed.setdefault("nll", {})
        elif line.startswith("KL divergence"):
            current = parsed.setdefault("kl", {})
        elif line.startswith("Ablation"):
            current = None
        elif current is not None and line.startswith("| ") and not line.startswith("| method"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            current[cells[0]] = cells[1:]
    return parsed


def test_nll_linear_kl_log_linear_and_best_in_bold(tmp_path):
    rows = [row("fp32", 32, 1.0, 0.0),
            row("A", 3.0, 1.6, 1e-2), row("A", 5.0, 1.2, 1e-4),
            row("B", 3.5, 1.55, 4e-2), row("B", 4.5, 1.35, 1e-2)]
    t = tables(tmp_path, rows)
    assert t["nll"]["A"] == ["**1.6000**", "**1.4000**", "**1.2000**"]  # B covers 4 b/w only
    assert t["nll"]["B"] == ["-", "1.4500", "-"]
    # 4 b/w is halfway between A's points: the geometric mean of their KL, 1e-3, not 5.0e-3.
    assert t["kl"]["A"] == ["**1.00e-02**", "**1.00e-03**", "**1.00e-04**"]
    assert t["kl"]["B"] == ["-", "2.00e-02", "-"]


def test_no_kl_table_without_kl_and_methods_filter(tmp_path):
    rows = [row("fp32", 32, 1.0), row("A", 3.0, 1.6), row("A", 5.0, 1.2),
            row("B", 3.0, 1.5), row("B", 5.0, 1.3), row("C", 4.0, 1.0)]
    t = tables(tmp_path, rows, "--methods", "B", "A", "C")
    assert "kl" not in t
    assert list(t["nll"]) == ["B", "A"]  # the order asked for; C has one point, no curve
    assert t["nll"]["B"][0] == "**1.5000**" and t["nll"]["A"][2] == "**1.2000**"
