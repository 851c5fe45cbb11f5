"""Repeated open, decode, close and compress without growing memory or open files."""

from __future__ import annotations

import gc
import os

import nwc
from conftest import PIPELINES


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_open_decode_close_does_not_leak(cli_containers):
    path = cli_containers["nwc-datafree-l300"]

    def cycle():
        with nwc.open(path, threads=2) as c:
            c.to_state_dict()
            c["model.layers.0.self_attn.q_proj.weight"]

    for _ in range(20):  # warm up allocator pools and caches
        cycle()
    gc.collect()
    rss, fds = rss_bytes(), open_files()
    for _ in range(300):
        cycle()
    gc.collect()
    # 300 cycles decode ~300 MB; a leak of one tensor per cycle would exceed the bound.
    assert rss_bytes() - rss < 16 << 20, (rss, rss_bytes())
    assert open_files() == fds


def test_containers_dropped_without_close_release_their_file(cli_containers):
    path = cli_containers["rtn-4bit-g32"]
    fds = open_files()
    for _ in range(50):
        c = nwc.open(path)
        c["model.norm.weight"]
        del c
    gc.collect()
    assert open_files() == fds


def test_repeated_compress_does_not_leak(stories, tmp_path):
    state, arch = stories
    out = tmp_path / "o.nwc"

    def cycle():
        nwc.compress(state, PIPELINES / "rtn-4bit-g32.toml", out=out, architecture=arch).close()

    for _ in range(5):
        cycle()
    gc.collect()
    rss, fds = rss_bytes(), open_files()
    for _ in range(40):
        cycle()
    gc.collect()
    assert rss_bytes() - rss < 16 << 20
    assert open_files() == fds
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.nwc"]
