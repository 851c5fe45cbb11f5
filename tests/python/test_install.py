"""The package installed two ways finds its own plugins, codecs and presets: `cmake --install`
into a prefix, and `pip install --no-build-isolation` into a virtual environment (Debian's
python3-venv, no network: --no-index, the build tree reused through NWC_BUILD_DIR)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nwc
from conftest import BINARY_DIR, SOURCE_DIR, STORIES

CHECK = """
import json, os, sys
import nwc
c = nwc.compress(nwc.load_model(sys.argv[1]),
                 os.path.join(nwc.pipelines_dir(), "nwc-datafree-l300.toml"), out=sys.argv[2])
print(json.dumps({"package": nwc.__file__, "plugins": sorted({os.path.dirname(p.library)
                  for p in nwc.plugins()}), "pipelines": nwc.pipelines_dir(),
                  "bpw": c.bits_per_weight, "q": float(c["model.layers.0.self_attn.q_proj.weight"][0, 0])}))
"""


def run_check(python: str, env: dict, out) -> dict:
    p = subprocess.run([python, "-c", CHECK, str(STORIES), str(out)], env=env,
                       capture_output=True, text=True, cwd="/")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "NWC_PLUGIN_PATH", "NWC_CODEC_PATH")}


def test_cmake_install(tmp_path):
    prefix = tmp_path / "prefix"
    subprocess.run(["cmake", "--install", str(BINARY_DIR), "--prefix", str(prefix)], check=True,
                   capture_output=True)
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages"
    env = clean_env() | {"PYTHONPATH": str(site)}
    r = run_check(sys.executable, env, tmp_path / "a.nwc")
    assert r["package"] == str(site / "nwc" / "__init__.py")
    assert r["plugins"] == [str(prefix / "lib" / "nwc" / "plugins")]
    assert r["pipelines"] == str(prefix / "share" / "nwc" / "pipelines")
    assert (site / "nwc" / "_nwc.pyi").exists() and (site / "nwc" / "py.typed").exists()
    assert_codes_as_the_build_tree(tmp_path / "a.nwc", tmp_path)


def assert_codes_as_the_build_tree(path, tmp_path):
    """The installed package's plugins and codec coded the build tree's streams."""
    ref = tmp_path / "ref.nwc"
    nwc.compress(nwc.load_model(STORIES), SOURCE_DIR / "pipelines" / "nwc-datafree-l300.toml",
                 out=ref).close()
    with nwc.open(path) as a, nwc.open(ref) as b:
        end = b.layout["manifest_offset"]
        assert a.layout["manifest_offset"] == end
    assert path.read_bytes()[:end] == ref.read_bytes()[:end]


def test_pip_install_into_a_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    env = clean_env() | {"NWC_BUILD_DIR": str(BINARY_DIR)}
    p = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-build-isolation", "--no-index",
                        "--quiet", str(SOURCE_DIR / "python")], env=env, capture_output=True,
                       text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    r = run_check(str(venv / "bin" / "python"), clean_env(), tmp_path / "b.nwc")
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages" / "nwc"
    assert r["package"] == str(site / "__init__.py")
    assert r["plugins"] == [str(site / "plugins")]
    assert r["pipelines"] == str(site / "share" / "pipelines")
    assert_codes_as_the_build_tree(tmp_path / "b.nwc", tmp_path)
