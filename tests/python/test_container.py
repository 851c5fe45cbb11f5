"""Reading containers made by the `nwc` command: metadata, per-tensor records, and decoding bit
for bit equal to `nwc decompress`'s safetensors (read with NumPy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nwc
from conftest import PIPELINES as SOURCE_PIPELINES
from conftest import STORIES, cli_error, nwc_json, read_safetensors, run_nwc, same_bits


@pytest.fixture(scope="module")
def decompressed(cli_containers, work):
    """Each CLI container decompressed by the CLI to F32 safetensors."""
    out = {}
    for name, path in cli_containers.items():
        st = work / f"{name}.safetensors"
        run_nwc("decompress", path, "-o", st, "--quiet")
        out[name] = st
    return out


@pytest.mark.parametrize("pipeline", ["rtn-4bit-g32", "rtn-8bit-g64-zstd", "nwc-datafree-l300"])
def test_decode_equals_cli_decompress(cli_containers, decompressed, pipeline):
    reference = read_safetensors(decompressed[pipeline])
    with nwc.open(cli_containers[pipeline]) as c:
        assert list(c) == list(reference)
        state = c.to_state_dict()
        for name, ref in reference.items():
            assert same_bits(state[name], ref), name
            assert same_bits(c[name], ref), name  # lazy, one tensor at a time
        # Thread counts do not change a bit.
        some = [n for n in reference if c.info(n).storage == "pipeline"][:3]
        for name in some:
            assert same_bits(c.numpy(name, threads=1), reference[name])
            assert same_bits(c.numpy(name, threads=3), reference[name])


def test_decompress_writes_the_cli_file(cli_containers, decompressed, work):
    with nwc.open(cli_containers["nwc-datafree-l300"]) as c:
        out = work / "py-decompress.safetensors"
        c.decompress(out)
    assert out.read_bytes() == decompressed["nwc-datafree-l300"].read_bytes()


def test_metadata(cli_containers, stories):
    state, arch = stories
    with nwc.open(cli_containers["rtn-4bit-g32"]) as c:
        assert c.architecture == arch
        assert c.pipeline_name == "rtn-4bit-g32"
        assert "[quantizer]" in c.pipeline_text
        assert c.source_model == "stories260K.bin" and c.source_format == "llama2c"
        assert c.format_version == 2
        assert c.file_size == cli_containers["rtn-4bit-g32"].stat().st_size
        assert list(c.tensors) == list(state)
        q = c.info("model.layers.0.self_attn.q_proj.weight")
        assert q.shape == (64, 64) and q.dtype == "F32" and q.storage == "pipeline"
        assert q.blocks >= 1 and q.stream_bytes > 0
        norm = c.info("model.norm.weight")
        assert norm.storage == "raw" and norm.stream_bytes == 64 * 4
        plugins = [s["plugin"] for s in c.stage_configs[q.stage_config]]
        assert plugins == ["nwc.chunk.group", "nwc.quant.uniform", "nwc.entropy.raw",
                           "nwc.comp.none"]
        # Bytes attributed to tensors add up to the file, as `nwc inspect` counts them.
        assert sum(t.bytes for t in c.tensors.values()) == pytest.approx(c.file_size)
        inspect = nwc_json("inspect", cli_containers["rtn-4bit-g32"])
        assert c.bits_per_weight == pytest.approx(inspect["totals"]["bits_per_weight"], rel=1e-9)


def test_blocks_are_columns_of_the_tensor(cli_containers):
    with nwc.open(cli_containers["rtn-4bit-g32"], threads=1) as c:
        name = "model.layers.1.mlp.down_proj.weight"  # 64 x 172: two blocks of 128 columns
        info = c.info(name)
        assert info.blocks == 2
        whole = c[name]
        assert same_bits(c.block(name, 0), whole[:, :128])
        assert same_bits(c.block(name, 1), whole[:, 128:])


def test_torch_tensors(cli_containers):
    with nwc.open(cli_containers["rtn-4bit-g32"]) as c:
        name = "model.layers.2.mlp.up_proj.weight"
        t = c.torch(name)
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
        assert same_bits(t.numpy(), c[name])
        sd = c.to_state_dict("torch")
        assert set(sd) == set(c) and all(isinstance(v, torch.Tensor) for v in sd.values())


def test_hf_layout(cli_containers, stories):
    """layout="hf": q/k rows in rotate-half order, lm_head tied: what `nwc decompress --layout hf`
    writes."""
    state, arch = stories
    with nwc.open(cli_containers["rtn-4bit-g32"]) as c:
        hf = c.to_state_dict(layout="hf")
        nwc_order = c.to_state_dict()
    out = cli_containers["rtn-4bit-g32"].with_name("hf-dir")
    run_nwc("decompress", cli_containers["rtn-4bit-g32"], "-o", out, "--layout", "hf", "--quiet")
    reference = read_safetensors(out / "model.safetensors")
    for name, ref in reference.items():
        assert same_bits(hf[name], ref), name
    assert same_bits(hf["lm_head.weight"], nwc_order["model.embed_tokens.weight"])
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not same_bits(hf[q], nwc_order[q])  # permuted rows
    assert same_bits(np.sort(hf[q], axis=0), np.sort(nwc_order[q], axis=0))


def test_load_model_reads_what_numpy_reads(stories):
    state, arch = stories
    m = nwc.load_model(STORIES)
    assert m.format == "llama2c" and m.architecture == arch
    assert list(m) == list(state)
    for name, ref in state.items():
        assert same_bits(m[name], ref), name


def test_corrupt_container_raises_the_cli_message(cli_containers, work):
    data = bytearray(cli_containers["rtn-4bit-g32"].read_bytes())
    # A byte inside the first coded stream: the checksum of its unit fails on decode.
    with nwc.open(cli_containers["rtn-4bit-g32"]) as c:
        q = "model.layers.0.self_attn.q_proj.weight"
        first = c.tensors[q]
        assert first.storage == "pipeline"
    offset = 16 + sum(t.stream_bytes for t in list(c.tensors.values())
                      [:list(c.tensors).index(q)]) + 3
    data[offset] ^= 0xFF
    bad = work / "corrupt.nwc"
    bad.write_bytes(bytes(data))
    with nwc.open(bad) as c:
        with pytest.raises(nwc.CorruptStreamError) as e:
            c.to_state_dict()
    assert e.value.code == -5 and e.value.status == "NWC_E_CORRUPT_STREAM"
    assert "checksum mismatch" in str(e.value)
    assert str(e.value) == cli_error("decompress", bad, "-o", work / "corrupt.safetensors",
                                     "--threads", "1")


def test_bad_files(work, cli_containers):
    missing = work / "missing.nwc"
    with pytest.raises(nwc.Error) as e:
        nwc.open(missing)
    assert str(missing) in str(e.value)
    text = work / "not-a-container.nwc"
    text.write_text("hello, world: not a container at all\n" * 4)
    with pytest.raises(nwc.CorruptStreamError) as e:
        nwc.open(text)
    assert str(text) in str(e.value)
    # A version this build cannot read.
    data = bytearray(cli_containers["rtn-4bit-g32"].read_bytes())
    data[8:12] = (99).to_bytes(4, "little")
    future = work / "future.nwc"
    future.write_bytes(bytes(data))
    with pytest.raises(nwc.VersionError) as e:
        nwc.open(future)
    assert str(e.value) == cli_error("inspect", future)


def test_lookups_and_closing(cli_containers):
    c = nwc.open(cli_containers["rtn-4bit-g32"])
    with pytest.raises(KeyError, match="no tensor named nope"):
        c["nope"]
    with pytest.raises(nwc.InvalidArgumentError, match="has no block 7"):
        c.block("model.layers.0.self_attn.q_proj.weight", 7)
    c.close()
    c.close()  # idempotent
    assert c.closed
    with pytest.raises(nwc.InvalidArgumentError, match="the container is closed"):
        c["model.norm.weight"]
    with pytest.raises(nwc.InvalidArgumentError):
        c.to_state_dict(framework="jax")
    with pytest.raises(nwc.InvalidArgumentError):
        nwc.open(cli_containers["rtn-4bit-g32"], threads=-1)


def test_decoding_releases_the_gil(tmp_path):
    """While another thread decodes, this one keeps running Python: no pause as long as a
    decode (the GIL would block it for the whole call)."""
    import threading
    import time
    rng = np.random.default_rng(3)
    tensors = {f"model.layers.{i}.mlp.up_proj.weight":
               rng.standard_normal((512, 2048), dtype=np.float32) for i in range(10)}
    c = nwc.compress(tensors, SOURCE_PIPELINES / "nwc-datafree-l300.toml",
                     out=tmp_path / "big.nwc", threads=1)
    start = time.monotonic()
    c.to_state_dict(threads=1)
    one_decode = time.monotonic() - start
    assert one_decode > 0.1  # far longer than a thread switch (5 ms)
    done = threading.Event()

    def decode():
        for _ in range(3):
            c.to_state_dict(threads=1)
        done.set()

    worker = threading.Thread(target=decode)
    worker.start()
    last, longest = time.monotonic(), 0.0
    while not done.is_set():
        now = time.monotonic()
        longest, last = max(longest, now - last), now
    worker.join()
    c.close()
    assert longest < one_decode / 2, (longest, one_decode)
