"""nwc.compress from Python tensors against `nwc compress` of the same model file: the same coded
bytes, the same decoded values; calibration, progress, interrupts and bad inputs."""

from __future__ import annotations

import os
import signal
import threading
import time
import tomllib
from collections import OrderedDict

import numpy as np
import pytest
import torch

import nwc
from conftest import (CALIB_TEXT, PIPELINES, SOURCE_DIR, STORIES, STORIES_TOKENIZER, cli_error,
                      needs_runtime, read_safetensors, run_nwc, same_bits)


def stream_area(path) -> bytes:
    """The header and every stream: the bytes before the manifest (which names the source)."""
    with nwc.open(path) as c:
        end = c.layout["manifest_offset"]
    return path.read_bytes()[:end]


def assert_same_container(py_path, cli_path):
    assert stream_area(py_path) == stream_area(cli_path)
    with nwc.open(py_path) as p, nwc.open(cli_path) as c:
        assert p.architecture == c.architecture
        assert p.stage_configs == c.stage_configs
        assert p.tensors.keys() == c.tensors.keys()
        for name in c:
            assert same_bits(p[name], c[name]), name
        assert p.source_format == "python" and c.source_format == "llama2c"


@pytest.mark.parametrize("pipeline", ["rtn-4bit-g32", "rtn-8bit-g64-zstd", "nwc-datafree-l300"])
def test_state_dict_codes_as_the_cli_codes_the_file(stories, cli_containers, work, pipeline):
    state, arch = stories
    out = work / f"py-{pipeline}.nwc"
    c = nwc.compress(state, PIPELINES / f"{pipeline}.toml", out=out, architecture=arch)
    assert isinstance(c, nwc.Container) and c.path == str(out)
    c.close()
    assert_same_container(out, cli_containers[pipeline])


def test_pipeline_as_text_and_torch_tensors(stories, cli_containers, work):
    state, arch = stories
    tensors = OrderedDict((k, torch.from_numpy(v)) for k, v in state.items())
    text = (PIPELINES / "rtn-4bit-g32.toml").read_text()
    out = work / "py-text.nwc"
    nwc.compress(tensors, text, out=out, architecture=arch, threads=1).close()
    # The same streams; the pipeline is recorded without its comments, every key and value kept.
    assert stream_area(out) == stream_area(cli_containers["rtn-4bit-g32"])
    with nwc.open(out) as c:
        assert "#" in text and "#" not in c.pipeline_text
        assert tomllib.loads(c.pipeline_text) == tomllib.loads(text)


def test_half_precision_tensors_keep_their_dtype(work):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(64, 128, generator=g)
    tensors = {"model.layers.0.mlp.up_proj.weight": w.to(torch.bfloat16),
               "model.layers.0.post_attention_layernorm.weight":
                   torch.randn(64, generator=g).to(torch.bfloat16),
               "model.norm.weight": np.linspace(-2, 2, 64, dtype=np.float16)}
    out = work / "half.nwc"
    with nwc.compress(tensors, PIPELINES / "rtn-8bit-g64-zstd.toml", out=out) as c:
        assert c.info("model.layers.0.mlp.up_proj.weight").dtype == "BF16"
        assert c.info("model.norm.weight").dtype == "F16"
        norm = tensors["model.layers.0.post_attention_layernorm.weight"].float().numpy()
        assert same_bits(c["model.layers.0.post_attention_layernorm.weight"], norm)
        assert same_bits(c["model.norm.weight"], tensors["model.norm.weight"].astype(np.float32))
        coded = c["model.layers.0.mlp.up_proj.weight"]
        err = np.abs(coded - w.to(torch.bfloat16).float().numpy()).max()
        assert 0 < err < 0.05  # 8-bit groups of 64


@needs_runtime
def test_calibration_from_python_equals_nwc_calibrate(stories, work):
    """nwc.calibrate gives `nwc calibrate`'s Hessians bit for bit, and GPTQ coded with them (as
    arrays or as the file) gives the CLI's bytes."""
    state, arch = stories
    tokens = "4096"
    h_file = work / "h.safetensors"
    run_nwc("calibrate", "-m", STORIES, "-t", STORIES_TOKENIZER, "--text", CALIB_TEXT,
            "--tokens", tokens, "-o", h_file, "--quiet")
    cli = work / "cli-gptq.nwc"
    run_nwc("compress", STORIES, "-p", PIPELINES / "gptq-3bit-g32.toml", "--calibration", h_file,
            "-o", cli, "--quiet")

    hessians = nwc.calibrate(state, STORIES_TOKENIZER, CALIB_TEXT, architecture=arch,
                             tokens=int(tokens))
    stored = read_safetensors(h_file)
    q0 = hessians["model.layers.0.self_attn.q_proj.weight"]
    assert q0 is hessians["model.layers.0.self_attn.k_proj.weight"]  # one input, one array
    assert same_bits(q0, stored["hessian.layers.0.attn_in"])
    assert same_bits(hessians["model.layers.4.mlp.down_proj.weight"],
                     stored["hessian.layers.4.mlp_out"])

    from_arrays = work / "py-gptq-arrays.nwc"
    nwc.compress(state, PIPELINES / "gptq-3bit-g32.toml", hessians, out=from_arrays,
                 architecture=arch).close()
    assert stream_area(from_arrays) == stream_area(cli)
    from_file = work / "py-gptq-file.nwc"
    nwc.compress(state, PIPELINES / "gptq-3bit-g32.toml", h_file, out=from_file,
                 architecture=arch).close()
    assert stream_area(from_file) == stream_area(cli)

    # A calibration of other tensors is refused, as the CLI refuses one of another model.
    other = OrderedDict(state)
    other["model.norm.weight"] = other["model.norm.weight"] * 2
    with pytest.raises(nwc.InvalidArgumentError, match="calibrated on model"):
        nwc.compress(other, PIPELINES / "gptq-3bit-g32.toml", h_file, out=work / "x.nwc",
                     architecture=arch)
    # GPTQ without Hessians: the compensator's own message.
    with pytest.raises(nwc.Error, match="Hessian"):
        nwc.compress(state, PIPELINES / "gptq-3bit-g32.toml", out=work / "x.nwc",
                     architecture=arch)
    assert not (work / "x.nwc").exists()


def test_progress_callback(stories, work):
    state, arch = stories
    calls = []
    nwc.compress(state, PIPELINES / "rtn-4bit-g32.toml", out=work / "progress.nwc",
                 architecture=arch, progress=lambda *a: calls.append(a)).close()
    names = list(state)
    assert calls == [(i + 1, len(names), n) for i, n in enumerate(names)]


def test_exception_in_progress_leaves_no_file(stories, tmp_path):
    state, arch = stories

    def stop(done, total, name):
        if done == 5:
            raise RuntimeError(f"stop at {name}")

    with pytest.raises(RuntimeError, match="stop at"):
        nwc.compress(state, PIPELINES / "rtn-4bit-g32.toml", out=tmp_path / "x.nwc",
                     architecture=arch, progress=stop)
    assert list(tmp_path.iterdir()) == []


def synthetic_model(layers: int, rows: int, cols: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {f"model.layers.{i}.mlp.up_proj.weight":
            rng.standard_normal((rows, cols), dtype=np.float32) for i in range(layers)}


def test_keyboard_interrupt_leaves_no_file(tmp_path):
    """Ctrl-C while the workers code: the run stops at the next tensor, KeyboardInterrupt is
    raised and neither the container nor its temporary file remains. Uninterrupted, this run
    takes about 4 s (clipped RTN searches each group's range); the signal comes after 0.5 s."""
    tensors = synthetic_model(24, 256, 512)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            nwc.compress(tensors, PIPELINES / "rtn-3bit-g32-clip.toml", out=tmp_path / "x.nwc",
                         threads=1)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 2.0
    assert list(tmp_path.iterdir()) == []


def test_pipeline_errors_carry_the_cli_text(tmp_path, stories):
    state, arch = stories
    bad = tmp_path / "bad.toml"
    bad.write_text((PIPELINES / "rtn-4bit-g32.toml").read_text().replace("bits = 4", "bitz = 4"))
    with pytest.raises(nwc.InvalidOptionError) as e:
        nwc.Pipeline(bad)
    assert str(e.value).startswith(f"{bad}:")
    assert "bitz" in str(e.value)
    assert str(e.value) == cli_error("compress", STORIES, "-p", bad, "-o", tmp_path / "o.nwc")
    assert isinstance(e.value, ValueError) and e.value.status == "NWC_E_INVALID_OPTION"

    with pytest.raises(nwc.InvalidOptionError, match=r"did you mean 'nwc\.quant\.uniform'"):
        nwc.Pipeline('[chunker]\nplugin = "nwc.chunk.group"\n[quantizer]\n'
                     'plugin = "nwc.quant.unifrom"\n[entropy]\nplugin = "nwc.entropy.raw"\n')
    with pytest.raises(nwc.InvalidOptionError, match=r"^<string>:2:\d+: invalid TOML"):
        nwc.Pipeline("[chunker]\nplugin = = 3\n")
    with pytest.raises(nwc.Error, match="cannot read pipeline file"):
        nwc.Pipeline(tmp_path / "missing.toml")
    assert list(p for p in tmp_path.iterdir() if p.suffix == ".nwc") == []


def test_pipeline_object(tmp_path):
    pl = nwc.Pipeline(PIPELINES / "rtn-4bit-g32.toml")
    assert pl.name == "rtn-4bit-g32" and pl.select == ["model.layers.*_proj.weight"]
    assert pl.stages["quantizer"]["plugin"] == "nwc.quant.uniform"
    assert pl.stages["quantizer"]["options"]["bits"] == 4
    assert pl.chain_for("model.norm.weight") is None
    chain = pl.chain_for("model.layers.3.self_attn.v_proj.weight")
    assert chain["chunker"] == {"plugin": "nwc.chunk.group", "options": {"group": 32}}
    text = ('[pipeline]\nname = "t"\n[chunker]\nplugin = "nwc.chunk.group"\n'
            '[quantizer]\nplugin = "nwc.quant.uniform"\nbits = 4\n[entropy]\n'
            'plugin = "nwc.entropy.raw"\n[[override]]\nmatch = "*.v_proj.weight"\n'
            'quantizer = { bits = 8 }\n')
    pl = nwc.Pipeline.from_string(text, filename=str(tmp_path / "t.toml"))
    assert pl.chain_for("model.layers.0.self_attn.v_proj.weight")["quantizer"]["options"][
        "bits"] == 8
    assert pl.config["overrides"][0]["where"].startswith(str(tmp_path / "t.toml") + ":")


def test_bad_tensors_and_arguments(tmp_path, stories):
    state, arch = stories
    pl = PIPELINES / "rtn-4bit-g32.toml"
    out = tmp_path / "o.nwc"
    with pytest.raises(nwc.InvalidArgumentError, match="expected a mapping"):
        nwc.compress([np.zeros(3)], pl, out=out)
    with pytest.raises(nwc.UnsupportedError, match="tensor model.norm.weight: dtype int64"):
        nwc.compress({"model.norm.weight": np.arange(4)}, pl, out=out)
    with pytest.raises(nwc.InvalidArgumentError, match="pipeline.select matches no tensor"):
        nwc.compress({"model.norm.weight": np.ones(4, np.float32)}, pl, out=out)
    with pytest.raises(nwc.InvalidArgumentError, match="architecture: key 'dim' must be"):
        nwc.compress(state, pl, out=out, architecture={"dim": "sixty-four"})
    with pytest.raises(nwc.InvalidArgumentError, match="expected a square matrix"):
        nwc.compress(state, PIPELINES / "gptq-3bit-g32.toml",
                     {"model.layers.0.self_attn.q_proj.weight": np.ones((64, 3), np.float32)},
                     out=out, architecture=arch)
    with pytest.raises(nwc.InvalidArgumentError, match=r"has \[blockft\], which nwc.compress"):
        nwc.compress(state, PIPELINES / "nwc-l300.toml", out=out, architecture=arch)
    allocate = tmp_path / "allocate.toml"  # removed below: the directory must end up empty
    codecs = SOURCE_DIR / "codecs"
    allocate.write_text((PIPELINES / "nwc-datafree-l300.toml").read_text().replace(
        "../codecs/", f"{codecs}/") + f'[allocate]\ncodecs = ["{codecs}/nwc-s-l1000.nwcc"]\n'
        "target_bpw = 4.5\n")
    with pytest.raises(nwc.InvalidArgumentError, match=r"has \[allocate\], which nwc.compress"):
        nwc.compress(state, allocate, out=out, architecture=arch)
    allocate.unlink()
    with pytest.raises(nwc.IoError):
        nwc.compress(state, pl, out=tmp_path / "no-such-dir" / "o.nwc", architecture=arch)
    assert list(tmp_path.iterdir()) == []


def test_hf_directory_state_dict_codes_as_the_cli(work):
    """TinyStories-656K's safetensors read with NumPy (tied: only lm_head.weight stored) and
    coded from Python: the streams `nwc compress` writes for the HF directory."""
    from conftest import TINYSTORIES_656K
    cli = work / "cli-656k.nwc"
    run_nwc("compress", TINYSTORIES_656K, "-p", PIPELINES / "nwc-datafree-l300.toml", "-o", cli,
            "--quiet")
    tensors = read_safetensors(TINYSTORIES_656K / "model.safetensors")
    assert "lm_head.weight" in tensors and "model.embed_tokens.weight" not in tensors
    with nwc.open(cli) as c:
        order = list(c)  # the container's order is the reader's; values come from NumPy here
    tensors["model.embed_tokens.weight"] = tensors.pop("lm_head.weight")
    ordered = OrderedDict((name, tensors[name]) for name in order)
    py = work / "py-656k.nwc"
    nwc.compress(ordered, PIPELINES / "nwc-datafree-l300.toml", out=py,
                 architecture=TINYSTORIES_656K / "config.json").close()
    assert stream_area(py) == stream_area(cli)
    # A PyTorch state_dict of the tied model holds both names: the head equal to the embedding
    # is dropped, one that differs is refused.
    both = OrderedDict(ordered)
    both["lm_head.weight"] = both["model.embed_tokens.weight"]
    nwc.compress(both, PIPELINES / "nwc-datafree-l300.toml", out=py,
                 architecture=TINYSTORIES_656K / "config.json").close()
    assert stream_area(py) == stream_area(cli)
    both["lm_head.weight"] = both["lm_head.weight"] * 2
    with pytest.raises(nwc.InvalidArgumentError, match="lm_head.weight differs"):
        nwc.compress(both, PIPELINES / "nwc-datafree-l300.toml", out=py,
                     architecture=TINYSTORIES_656K / "config.json")
