"""nwc.plugins() and the plugin search path against `nwc plugins list --json` and the committed
reference pages (docs/plugins/, generated from the same schemas)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import nwc
from conftest import BINARY_DIR, SOURCE_DIR, nwc_json, run_nwc


def test_plugins_equal_the_cli_list():
    cli = {p["id"]: p for p in nwc_json("plugins", "list")["plugins"]}
    ours = {p.id: p for p in nwc.plugins()}
    assert ours.keys() == cli.keys()
    assert {"nwc.quant.uniform", "nwc.entropy.rans", "nwc.comp.gptq"} <= ours.keys()
    for pid, p in ours.items():
        c = cli[pid]
        assert (p.kind, p.version, p.name, p.description, p.stream_version, p.abi_version) == (
            c["kind"], c["version"], c["name"], c["description"], c["stream_version"],
            c["abi_version"])
        assert Path(p.library).resolve() == Path(c["library"]).resolve()
        assert [o.key for o in p.options] == [o["key"] for o in c["options"]]
        for o, co in zip(p.options, c["options"]):
            assert (o.type, o.doc, o.required, o.default, o.unit) == (
                co["type"], co["doc"], co["required"], co.get("default"), co.get("unit"))
            assert o.range == (tuple(co["range"]) if "range" in co else None)


def test_reference_pages_are_the_docs():
    for p in nwc.plugins():
        page = SOURCE_DIR / "docs" / "plugins" / f"{p.id}.md"
        assert p.markdown == page.read_text(), p.id
    uniform = nwc.plugin("nwc.quant.uniform")
    assert uniform.interface == "nwc.quantizer/1" and uniform.kind == "quantizer"
    bits = uniform.option("bits")
    assert bits.type == "int" and bits.affects_bitstream
    assert uniform.markdown == run_nwc("plugins", "show", "nwc.quant.uniform",
                                       "--markdown").stdout
    with pytest.raises(nwc.InvalidArgumentError, match="did you mean nwc.quant.uniform"):
        nwc.plugin("nwc.quant.unifrom")
    with pytest.raises(nwc.InvalidArgumentError, match="has no option 'bitz'"):
        uniform.option("bitz")


def test_plugin_path_comes_first(tmp_path, monkeypatch):
    built = BINARY_DIR / "lib" / "nwc" / "plugins"
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(built / "nwc-raw.so", first / "nwc-raw.so")
    assert nwc.plugin("nwc.entropy.raw", plugin_path=first).library == str(first / "nwc-raw.so")
    assert nwc.plugin("nwc.entropy.raw").library == str(built / "nwc-raw.so")
    monkeypatch.setenv("NWC_PLUGIN_PATH", str(first))
    assert nwc.plugin("nwc.entropy.raw").library == str(first / "nwc-raw.so")
    # The other plugins still come from the package's own directory.
    assert nwc.plugin("nwc.quant.uniform").library == str(built / "nwc-uniform.so")
