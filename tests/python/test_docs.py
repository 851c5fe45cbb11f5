"""docs/python.md's walk-through runs as written: its Python cells, in order, in one namespace,
from a directory laid out like the repository root (pipelines/ and codecs/ beside out/)."""

from __future__ import annotations

import re

from conftest import DATA_DIR, SOURCE_DIR, needs_runtime


@needs_runtime  # the walk-through evaluates and calibrates
def test_walkthrough_runs_as_written(tmp_path, monkeypatch):
    doc = (SOURCE_DIR / "docs" / "python.md").read_text()
    walkthrough = doc[doc.index("## Walk-through"):doc.index("## Reference")]
    cells = re.findall(r"```python\n(.*?)```", walkthrough, re.S)
    assert len(cells) >= 8
    for name in ("pipelines", "codecs"):
        (tmp_path / name).symlink_to(SOURCE_DIR / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NWC_DATA", str(DATA_DIR))
    namespace: dict = {"__name__": "walkthrough"}
    for i, cell in enumerate(cells):
        exec(compile(cell, f"docs/python.md cell {i + 1}", "exec"), namespace)
    results = namespace["results"]
    assert abs(results["fp32"].nll - 4.13412) < 1e-5  # the data README's figure
    for name in ("rtn-4bit-g32", "nwc-datafree-l300", "rtn-3bit-g64"):
        assert results["fp32"].nll < results[name].nll < results["fp32"].nll + 0.5
    png = tmp_path / "out" / "python-walkthrough" / "rate-nll.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000
    assert all(c.closed for c in namespace["containers"].values())
