"""Tensors between Python and the extension module: NumPy arrays and PyTorch tensors as the
(name, C-contiguous array, dtype) triples the C++ side reads without copying, and the HF layout
of decoded state_dicts."""

from __future__ import annotations

import sys
from typing import Any, Iterable, Mapping

import numpy as np

from ._errors import InvalidArgumentError, UnsupportedError

EMBEDDING = "model.embed_tokens.weight"
OUTPUT_HEAD = "lm_head.weight"


def _torch():
    """The torch module when the caller has imported it (never imported here: it is slow)."""
    return sys.modules.get("torch")


def is_torch_tensor(value: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


def tensor_source(name: str, value: Any) -> tuple[str, np.ndarray, str]:
    """(name, array, dtype) for one tensor: float32, float16 or bfloat16 (handed over as its
    uint16 bits) as they are; float64 becomes float32. Other dtypes are refused."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"tensor names must be strings, got {type(name).__name__}")
    if is_torch_tensor(value):
        torch = _torch()
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype == torch.bfloat16:
            return name, t.contiguous().view(torch.int16).numpy().view(np.uint16), "BF16"
        if t.dtype == torch.float16:
            return name, np.ascontiguousarray(t.numpy()), "F16"
        if t.dtype in (torch.float32, torch.float64):
            return name, np.ascontiguousarray(t.numpy(), dtype=np.float32), "F32"
        raise UnsupportedError(
            f"tensor {name}: dtype {t.dtype}, expected a floating-point tensor "
            "(float32, float16, bfloat16 or float64)")
    array = np.asarray(value)
    if array.dtype == np.float16:
        return name, np.ascontiguousarray(array), "F16"
    if array.dtype in (np.float32, np.float64):
        return name, np.ascontiguousarray(array, dtype=np.float32), "F32"
    raise UnsupportedError(
        f"tensor {name}: dtype {array.dtype}, expected a floating-point array "
        "(float32, float16 or float64)")


def tensor_sources(tensors: Mapping[str, Any], tied: bool) -> list[tuple[str, np.ndarray, str]]:
    """Every tensor of a mapping, in its order. With tied embeddings the embedding is kept once,
    as nwc stores it (under model.embed_tokens.weight, no lm_head.weight): a lone lm_head.weight
    (safetensors files of tied HF models) is renamed, and an lm_head.weight equal to the
    embedding (a PyTorch state_dict) is dropped."""
    if not isinstance(tensors, Mapping):
        raise InvalidArgumentError(
            f"tensors: expected a mapping of names to arrays (a state_dict), got "
            f"{type(tensors).__name__}")
    sources = [tensor_source(name, value) for name, value in tensors.items()]
    if not tied:
        return sources
    names = [s[0] for s in sources]
    if OUTPUT_HEAD in names and EMBEDDING not in names:
        return [(EMBEDDING, a, d) if n == OUTPUT_HEAD else (n, a, d) for n, a, d in sources]
    if OUTPUT_HEAD in names and EMBEDDING in names:
        head = sources[names.index(OUTPUT_HEAD)]
        embedding = sources[names.index(EMBEDDING)]
        if head[2] != embedding[2] or not np.array_equal(head[1], embedding[1]):
            raise InvalidArgumentError(
                f"the architecture has tied embeddings, but {OUTPUT_HEAD} differs from "
                f"{EMBEDDING}")
        return [s for s in sources if s[0] != OUTPUT_HEAD]
    return sources


def rope_interleaved_to_halves(w: np.ndarray, heads: int) -> np.ndarray:
    """The rows of a q/k projection from interleaved RoPE pairs (2i, 2i+1) of each head
    (llama2.c, GGUF) to HF's rotate-half order (i, i + head_dim/2)."""
    rows, cols = w.shape
    head_dim = rows // heads
    return np.ascontiguousarray(
        w.reshape(heads, head_dim // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols))


def hf_layout(state: dict[str, np.ndarray], arch: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A decoded state_dict as transformers' Llama models load it: q/k rows in rotate-half order
    and lm_head.weight present (the embedding itself when tied)."""
    out = dict(state)
    if arch.get("rope_style") == "interleaved":
        n_heads, n_kv = int(arch["n_heads"]), int(arch.get("n_kv_heads") or arch["n_heads"])
        for name, w in state.items():
            if name.endswith("self_attn.q_proj.weight"):
                out[name] = rope_interleaved_to_halves(w, n_heads)
            elif name.endswith("self_attn.k_proj.weight"):
                out[name] = rope_interleaved_to_halves(w, n_kv)
    if arch.get("tied_embeddings") and OUTPUT_HEAD not in out and EMBEDDING in out:
        out[OUTPUT_HEAD] = out[EMBEDDING]
    return out


def to_torch(arrays: Iterable[tuple[str, np.ndarray]]) -> dict[str, Any]:
    try:
        import torch
    except ImportError as e:
        raise UnsupportedError("PyTorch is not installed (import torch failed)") from e
    return {name: torch.from_numpy(a) for name, a in arrays}
