"""stories260K compressed from Python, evaluated by a PyTorch Llama forward pass written here
(llama2.c's architecture: dim 64, 5 layers, 8 heads, 4 kv heads, interleaved RoPE, shared
classifier) over ids of a llama2.c tokenizer written here: its NLL under ppl-v1 equals
`nwc eval`'s within 1e-4, and nwc.eval gives `nwc eval`'s figures."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

import nwc
from conftest import EVAL_TEXT, PIPELINES, STORIES, STORIES_TOKENIZER, needs_runtime, nwc_json

MAX_TOKENS = 20480  # 40 windows of 512: the data README's reference NLL 1.40716 (fp32)
CODED_TOKENS = 4096  # 8 windows for the coded models (the forward pass here takes ~0.5 s each)


class Llama2cTokenizer:
    """llama2.c's encode(): dummy-space prefix, code points (or byte tokens 3 + b), then merge
    the adjacent pair with the highest vocabulary score, leftmost first, until none merges."""

    def __init__(self, path):
        data = path.read_bytes()
        pos = 4
        self.ids: dict[bytes, int] = {}
        self.scores: list[float] = []
        self.pieces: list[bytes] = []
        while pos < len(data):
            score, n = struct.unpack_from("<fi", data, pos)
            piece = data[pos + 8:pos + 8 + n]
            pos += 8 + n
            self.ids.setdefault(piece, len(self.scores))
            self.scores.append(score)
            self.pieces.append(piece)

    def encode(self, text: str) -> list[int]:
        out = [1]  # BOS
        if not text:
            return out
        tokens = [self.ids[b" "]]
        for ch in text:
            b = ch.encode("utf-8")
            if b in self.ids:
                tokens.append(self.ids[b])
            else:
                tokens.extend(3 + x for x in b)
        pieces = [self.pieces[t] for t in tokens]
        merged = [self._pair_score(pieces[i], pieces[i + 1]) for i in range(len(pieces) - 1)]
        while merged:
            best = max(merged)
            if best == -math.inf:
                break
            i = merged.index(best)  # leftmost of the best
            pieces[i] = pieces[i] + pieces[i + 1]
            tokens[i] = self.ids[pieces[i]]
            del pieces[i + 1], tokens[i + 1], merged[i]
            if i > 0:
                merged[i - 1] = self._pair_score(pieces[i - 1], pieces[i])
            if i < len(merged):
                merged[i] = self._pair_score(pieces[i], pieces[i + 1])
        return out + tokens

    def _pair_score(self, a: bytes, b: bytes) -> float:
        i = self.ids.get(a + b)
        return -math.inf if i is None else self.scores[i]


def ppl_v1_stream(text: str, tokenizer: Llama2cTokenizer, limit: int) -> list[int]:
    """ppl-v1's steps 1-3: CRLF -> LF, documents at blank lines, stripped, non-empty, each with
    BOS; the stream cut at `limit` tokens."""
    text = text.replace("\r\n", "\n")
    stream: list[int] = []
    for doc in text.split("\n\n"):
        doc = doc.strip(" \n\t\r\v\f")
        if doc:
            stream += tokenizer.encode(doc)
        if len(stream) >= limit:
            break
    return stream[:limit]


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_interleaved(x, theta):
    """Rotates the pairs (2i, 2i+1) of each head by position * theta^(-2i/head_dim)."""
    _, t, _, hd = x.shape
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    angle = (torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]).float()  # [t, hd/2]
    cos, sin = angle.cos()[None, :, None, :], angle.sin()[None, :, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


def forward_nll(state: dict, arch: dict, windows: torch.Tensor) -> tuple[float, int]:
    """Sum of next-token NLLs over windows [n, t] and their count. The pass runs in float32, as
    nwc's does; the loss is summed in float64."""
    w = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in state.items()}
    dim, heads, kv = arch["dim"], arch["n_heads"], arch["n_kv_heads"]
    hd, eps = dim // heads, arch["norm_eps"]
    n, t = windows.shape
    x = w["model.embed_tokens.weight"][windows]
    mask = torch.full((t, t), -math.inf).triu(1)
    for layer in range(arch["n_layers"]):
        p = f"model.layers.{layer}."
        h = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(n, t, heads, hd)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(n, t, kv, hd)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(n, t, kv, hd)
        q, k = rope_interleaved(q, arch["rope_theta"]), rope_interleaved(k, arch["rope_theta"])
        # [n, heads, t, hd]; query head j reads kv head j // (heads / kv) (grouped queries)
        q = q.transpose(1, 2)
        k = k.repeat_interleave(heads // kv, dim=2).transpose(1, 2)
        v = v.repeat_interleave(heads // kv, dim=2).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + mask
        att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, dim)
        x = x + att @ w[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, w["model.norm.weight"], eps)
    head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
    logits = (x @ head.T).double()
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                            windows[:, 1:].reshape(-1), reduction="sum")
    return float(nll), n * (t - 1)


def reference_nll(state: dict, arch: dict, stream: list[int]) -> float:
    seq = arch["max_seq_len"]
    ids = torch.tensor(stream[: len(stream) // seq * seq]).view(-1, seq)
    total, count = 0.0, 0
    for chunk in ids.split(4):
        s, c = forward_nll(state, arch, chunk)
        total, count = total + s, count + c
    return total / count


@pytest.fixture(scope="module")
def stream() -> list[int]:
    return ppl_v1_stream(EVAL_TEXT.read_text(encoding="utf-8"),
                         Llama2cTokenizer(STORIES_TOKENIZER), MAX_TOKENS)


def test_tokenizer_ids_equal_the_modules(stream):
    ours = Llama2cTokenizer(STORIES_TOKENIZER)
    theirs = nwc.Tokenizer(STORIES_TOKENIZER)
    doc = "Once upon a time, there was a little girl named Lily."
    assert ours.encode(doc) == theirs.encode(doc, bos=True)
    assert theirs.encode(doc, bos=True)[:4] == [1, 403, 407, 261]  # data README
    assert len(stream) == MAX_TOKENS


@needs_runtime
def test_fp32_reference_matches_nwc_eval(stories, stream):
    state, arch = stories
    ours = reference_nll(state, arch, stream)
    cli = nwc_json("eval", "-m", STORIES, "-t", STORIES_TOKENIZER, "--text", EVAL_TEXT,
                   "--max-tokens", MAX_TOKENS)
    assert abs(ours - 1.40716) < 1e-4  # the data README's figure
    assert abs(ours - cli["nll"]) < 1e-4
    py = nwc.eval(STORIES, STORIES_TOKENIZER, EVAL_TEXT, max_tokens=MAX_TOKENS)
    assert py.nll == cli["nll"] and py.windows == cli["windows"] == 40
    assert py.predicted_tokens == cli["predicted_tokens"] == 40 * 511


@needs_runtime
@pytest.mark.parametrize("pipeline", ["rtn-3bit-g32-clip", "nwc-datafree-l300"])
def test_compressed_from_python_evaluates_as_nwc_eval(stories, stream, work, pipeline):
    state, arch = stories
    out = work / f"eval-{pipeline}.nwc"
    with nwc.compress(state, PIPELINES / f"{pipeline}.toml", out=out, architecture=arch) as c:
        decoded = c.to_state_dict()
        ours = reference_nll(decoded, c.architecture, stream[:CODED_TOKENS])
        from_container = nwc.eval(c, STORIES_TOKENIZER, EVAL_TEXT, max_tokens=CODED_TOKENS)
    cli = nwc_json("eval", "-m", out, "-t", STORIES_TOKENIZER, "--text", EVAL_TEXT,
                   "--max-tokens", CODED_TOKENS)
    assert abs(ours - cli["nll"]) < 1e-4, (ours, cli["nll"])
    assert from_container.nll == cli["nll"]
    # Decoded tensors handed back as a state_dict run to the same figure.
    from_tensors = nwc.eval(decoded, STORIES_TOKENIZER, EVAL_TEXT, architecture=arch,
                            max_tokens=CODED_TOKENS)
    assert from_tensors.nll == cli["nll"]
    # Coding moved the weights and the loss.
    fp32 = nwc.eval(STORIES, STORIES_TOKENIZER, EVAL_TEXT, max_tokens=CODED_TOKENS)
    assert cli["nll"] > fp32.nll + 1e-3


@needs_runtime
def test_eval_bad_arguments(stories):
    state, arch = stories
    with pytest.raises(nwc.InvalidArgumentError, match="architecture: required"):
        nwc.eval(state, STORIES_TOKENIZER, EVAL_TEXT)
    with pytest.raises(nwc.InvalidArgumentError, match="ppl-v1"):
        nwc.eval(STORIES, STORIES_TOKENIZER, EVAL_TEXT, protocol="ppl-v2")
    with pytest.raises(nwc.Error, match="nope.txt"):
        nwc.eval(STORIES, STORIES_TOKENIZER, EVAL_TEXT.with_name("nope.txt"))


@pytest.mark.skipif(nwc.HAS_RUNTIME, reason="this build has the model runtime")
def test_builds_without_the_runtime_refuse(stories):
    state, arch = stories
    with pytest.raises(nwc.UnsupportedError, match="needs the model runtime"):
        nwc.eval(STORIES, STORIES_TOKENIZER, EVAL_TEXT)
    with pytest.raises(nwc.UnsupportedError, match="needs the model runtime"):
        nwc.calibrate(state, STORIES_TOKENIZER, architecture=arch)
