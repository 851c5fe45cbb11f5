"""nwc for Python: read, write and evaluate ``.nwc`` containers of compressed language-model
weights from NumPy and PyTorch code.

>>> import nwc
>>> with nwc.open("model.nwc") as c:          # lazy: tensors decode when asked for
...     w = c["model.layers.0.mlp.down_proj.weight"]     # float32 numpy array
...     state = c.to_state_dict("torch")
>>> c = nwc.compress(state_dict, "pipelines/rtn-4bit-g32.toml", out="m.nwc",
...                  architecture="path/to/config.json")
>>> nwc.eval(c, tokenizer="tok.bin", text="eval.txt").nll

The package wraps nwc's C++ host library (the extension module ``nwc._nwc``): the same plugins,
pipeline validation, coder and decoder as the ``nwc`` command, so containers and figures are the
same. Plugins are found in, in order: the ``plugin_path`` argument, ``NWC_PLUGIN_PATH``
(``:``-separated), then the plugins this package was built or installed with. See
docs/python.md.
"""

from __future__ import annotations

import json as _json
import os as _os
import threading as _threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import numpy as np

from . import _location, _nwc
from ._errors import (CorruptStreamError, Error, InternalError, InvalidArgumentError,
                      InvalidOptionError, IoError, OutOfMemoryError, UnsupportedError,
                      VersionError)
from ._tensors import hf_layout as _hf_layout
from ._tensors import tensor_sources as _tensor_sources
from ._tensors import to_torch as _to_torch

__version__: str = _nwc.__version__
#: Whether this build has the LibTorch model runtime (eval, calibrate).
HAS_RUNTIME: bool = bool(_nwc.HAS_RUNTIME)

__all__ = [
    "Container", "CorruptStreamError", "Error", "EvalResult", "HAS_RUNTIME", "InternalError",
    "InvalidArgumentError", "InvalidOptionError", "IoError", "Model", "OptionInfo",
    "OutOfMemoryError", "Pipeline", "PluginInfo", "TensorInfo", "Tokenizer", "UnsupportedError",
    "VersionError", "calibrate", "compress", "eval", "hf_config", "load_model", "open",
    "pipelines_dir", "plugin", "plugins", "read_hf_config", "registry", "set_log_level",
]

PathLike = Union[str, "_os.PathLike[str]"]
PluginPath = Union[PathLike, Sequence[PathLike], None]

_PACKAGE_DIR = _os.path.dirname(_os.path.abspath(__file__))


def _package_path(p: str) -> str:
    return p if _os.path.isabs(p) else _os.path.normpath(_os.path.join(_PACKAGE_DIR, p))


def _add_codec_dir() -> None:
    # Codec files named by a container are found by hash in, among others, NWC_CODEC_PATH; the
    # nwc command also looks in <exe>/../share/nwc/codecs, which for Python is this package's.
    codecs = _package_path(_location.CODEC_DIR)
    if _os.path.isdir(codecs):
        dirs = [d for d in _os.environ.get("NWC_CODEC_PATH", "").split(":") if d]
        if codecs not in dirs:
            _os.environ["NWC_CODEC_PATH"] = ":".join(dirs + [codecs])


_add_codec_dir()


def pipelines_dir() -> str:
    """The directory of the pipeline presets this package was built or installed with."""
    return _package_path(_location.PIPELINE_DIR)


# ---- plugins ----------------------------------------------------------------------------------

_registries: dict[tuple[str, ...], Any] = {}
_registries_lock = _threading.Lock()


def _plugin_dirs(plugin_path: PluginPath) -> list[str]:
    if plugin_path is None:
        given: list[str] = []
    elif isinstance(plugin_path, (str, _os.PathLike)):
        given = [_os.fspath(plugin_path)]
    else:
        given = [_os.fspath(p) for p in plugin_path]
    dirs = list(_nwc.search_path(given))
    bundled = _package_path(_location.PLUGIN_DIR)
    if _os.path.isdir(bundled) and bundled not in dirs:
        dirs.append(bundled)
    return dirs


def registry(plugin_path: PluginPath = None) -> Any:
    """The plugins found in ``plugin_path`` (a directory or a list), ``NWC_PLUGIN_PATH`` and the
    package's own plugin directory, scanned once per distinct list of directories."""
    key = tuple(_plugin_dirs(plugin_path))
    with _registries_lock:
        reg = _registries.get(key)
        if reg is None:
            reg = _registries[key] = _nwc.Registry(list(key))
        return reg


def set_log_level(level: int) -> None:
    """Host and plugin messages below ``level`` (0 debug, 1 info, 2 warning, 3 error) are not
    printed to stderr."""
    _nwc.set_log_level(level)


@dataclass(frozen=True)
class OptionInfo:
    """One option of a plugin's schema, as ``nwc plugins show`` prints it."""
    key: str
    type: str
    doc: str
    required: bool
    affects_bitstream: bool
    default: Any = None
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    unit: str | None = None


@dataclass(frozen=True)
class PluginInfo:
    """An installed plugin: identity, kind, versions and option schema. ``markdown`` is its
    reference page, generated from the same schema as docs/plugins/ (``nwc plugins show
    --markdown``)."""
    id: str
    kind: str
    interface: str
    version: str
    name: str
    description: str
    stream_version: int
    abi_version: str
    library: str
    options: tuple[OptionInfo, ...]
    markdown: str = field(repr=False)

    def option(self, key: str) -> OptionInfo:
        for o in self.options:
            if o.key == key:
                return o
        raise InvalidArgumentError(f"plugin {self.id} has no option {key!r} (options: "
                                   f"{', '.join(o.key for o in self.options) or 'none'})")


def _plugin_info(j: dict) -> PluginInfo:
    options = tuple(
        OptionInfo(key=o["key"], type=o["type"], doc=o["doc"], required=o["required"],
                   affects_bitstream=o["affects_bitstream"], default=o.get("default"),
                   range=tuple(o["range"]) if "range" in o else None,
                   choices=tuple(o["choices"]) if "choices" in o else None,
                   unit=o.get("unit")) for o in j["options"])
    return PluginInfo(id=j["id"], kind=j["kind"], interface=j["interface"], version=j["version"],
                      name=j["name"], description=j["description"],
                      stream_version=j["stream_version"], abi_version=j["abi_version"],
                      library=j["library"], options=options, markdown=j["markdown"])


def plugins(plugin_path: PluginPath = None) -> list[PluginInfo]:
    """Every installed plugin (the first of each id in the search path), as ``nwc plugins
    list``."""
    return [_plugin_info(j) for j in _json.loads(registry(plugin_path).plugins_json())]


def plugin(id: str, plugin_path: PluginPath = None) -> PluginInfo:
    """One installed plugin; an unknown id raises InvalidArgumentError with a suggestion."""
    return _plugin_info(_json.loads(registry(plugin_path).plugin_json(id)))


# ---- pipelines --------------------------------------------------------------------------------


def _looks_like_toml(text: str) -> bool:
    return "\n" in text or "=" in text or text.lstrip().startswith("[")


class Pipeline:
    """A pipeline (TOML) parsed and validated against the installed plugins, as ``nwc compress``
    does before any work. Errors raise :class:`InvalidOptionError` (or another :class:`Error`)
    whose message is the CLI's: ``file:line:column: key: what was expected``.

    ``source`` is a path to a ``.toml`` file or the TOML text itself (a string holding a newline,
    ``=`` or a leading ``[``). Text is named ``<string>`` in messages and its relative paths
    (codec files) resolve against the current directory.
    """

    def __init__(self, source: PathLike, *, plugin_path: PluginPath = None) -> None:
        reg = registry(plugin_path)
        if isinstance(source, str) and _looks_like_toml(source):
            self._handle = _nwc.Pipeline.parse(reg, source, "<string>")
        else:
            self._handle = _nwc.Pipeline.load(reg, _os.fspath(source))
        self._config = _json.loads(self._handle.config_json())

    @classmethod
    def from_string(cls, text: str, filename: str = "<string>", *,
                    plugin_path: PluginPath = None) -> "Pipeline":
        """Parses TOML text; ``filename`` names it in messages and anchors relative paths."""
        self = cls.__new__(cls)
        self._handle = _nwc.Pipeline.parse(registry(plugin_path), text, filename)
        self._config = _json.loads(self._handle.config_json())
        return self

    @property
    def name(self) -> str:
        return self._config["name"]

    @property
    def file(self) -> str:
        return self._config["file"]

    @property
    def text(self) -> str:
        return self._handle.text

    @property
    def select(self) -> list[str]:
        return list(self._config["select"])

    @property
    def exclude(self) -> list[str]:
        return list(self._config["exclude"])

    @property
    def unselected(self) -> str:
        return self._config["unselected"]

    @property
    def stages(self) -> dict[str, dict]:
        """The base chain: slot → {"plugin": id, "options": {...}} (unused slots: plugin "")."""
        return {slot: dict(spec) for slot, spec in self._config["stages"].items()}

    @property
    def config(self) -> dict:
        """Everything the file says after validation (tables, overrides with their file:line)."""
        return _json.loads(self._handle.config_json())

    def chain_for(self, tensor: str) -> dict | None:
        """The stages that code ``tensor`` after [[override]] rules, or None when the tensor is
        stored without the pipeline (not selected, excluded or skipped)."""
        chain = self._handle.chain_for_json(tensor)
        return None if chain is None else _json.loads(chain)

    def __repr__(self) -> str:
        return f"nwc.Pipeline(name={self.name!r}, file={self.file!r})"


# ---- containers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a container, as ``nwc inspect`` counts it. ``bytes`` is its streams plus
    its share (by element count) of the header, manifest and footer; ``bits_per_weight`` is
    ``bytes * 8 / numel``."""
    name: str
    shape: tuple[int, ...]
    dtype: str
    storage: str
    stage_config: int
    blocks: int
    stream_bytes: int
    numel: int
    bytes: float

    @property
    def bits_per_weight(self) -> float:
        return self.bytes * 8 / self.numel if self.numel else 0.0


class Container(Mapping[str, np.ndarray]):
    """A ``.nwc`` container opened for reading (:func:`open`). A mapping from tensor names to
    float32 NumPy arrays, each decoded when it is looked up (the GIL released while it decodes).

    Use it as a context manager, or call :meth:`close`, to unmap the file at a known point.
    """

    def __init__(self, path: PathLike, threads: int = 0, *,
                 plugin_path: PluginPath = None) -> None:
        if threads < 0:
            raise InvalidArgumentError(f"threads must be >= 0, got {threads}")
        self._plugin_path = plugin_path
        self._handle = _nwc.Container(registry(plugin_path), _os.fspath(path), threads)
        self._threads = threads
        manifest = _json.loads(self._handle.manifest_json())
        self.path: str = _os.fspath(path)
        #: The model's architecture (nwc's Architecture JSON: dim, n_layers, rope_style, ...).
        self.architecture: dict = manifest["architecture"]
        self.pipeline_name: str = manifest["pipeline_name"]
        #: The pipeline file as it was given to the coder.
        self.pipeline_text: str = manifest["pipeline_text"]
        self.source_model: str = manifest["source_model"]
        self.source_format: str = manifest["source_format"]
        #: Per stage configuration: [{"slot", "plugin", "version", "stream_version", "options"}].
        self.stage_configs: list[list[dict]] = manifest["stage_configs"]
        self.extra: dict = manifest["extra"]
        #: Where the file's bytes go (header, streams, manifest, footer).
        self.layout: dict = manifest["layout"]
        self._tensors = {
            row[0]: TensorInfo(name=row[0], shape=tuple(row[1]), dtype=row[2], storage=row[3],
                               stage_config=row[4], blocks=row[5], stream_bytes=row[6],
                               numel=row[7], bytes=row[8])
            for row in self._handle.tensors()}

    # metadata
    @property
    def format_version(self) -> int:
        return int(self.layout["format_version"])

    @property
    def file_size(self) -> int:
        return int(self.layout["file_size"])

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        """Per-tensor records in file order."""
        return dict(self._tensors)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name}") from None

    @property
    def weights(self) -> int:
        return sum(t.numel for t in self._tensors.values())

    @property
    def bits_per_weight(self) -> float:
        """File bytes x 8 / all weights, as ``nwc compress`` reports it."""
        return self.file_size * 8 / self.weights if self.weights else 0.0

    @property
    def coded_bits_per_weight(self) -> float:
        """Stream bytes x 8 / weights of the pipeline-coded tensors only."""
        coded = [t for t in self._tensors.values() if t.storage == "pipeline"]
        weights = sum(t.numel for t in coded)
        return sum(t.stream_bytes for t in coded) * 8 / weights if weights else 0.0

    # the mapping
    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._tensors:
            raise KeyError(f"{self.path}: no tensor named {name}")
        return self._handle.decode(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    # decoding
    def numpy(self, name: str, threads: int | None = None) -> np.ndarray:
        """One tensor as a float32 array; its blocks decode on ``threads`` threads (default: the
        count the container was opened with; 0 = all cores)."""
        self.info(name)
        return self._handle.decode(name, threads)

    def torch(self, name: str, threads: int | None = None, dtype: Any = None) -> Any:
        """One tensor as a PyTorch tensor (float32, or converted to ``dtype``)."""
        t = _to_torch([(name, self.numpy(name, threads))])[name]
        return t if dtype is None else t.to(dtype)

    def block(self, name: str, block: int) -> np.ndarray:
        """Column block ``block`` of a pipeline-coded tensor (rows x block columns), decoded
        alone."""
        self.info(name)
        return self._handle.decode_block(name, block)

    def to_state_dict(self, framework: str = "numpy", *, layout: str = "nwc",
                      names: Sequence[str] | None = None,
                      threads: int | None = None) -> dict[str, Any]:
        """Every tensor (or ``names``) decoded, tensors in parallel.

        ``framework``: ``"numpy"`` (float32 arrays) or ``"torch"`` (float32 tensors sharing the
        arrays' memory). ``layout``: ``"nwc"`` (the names and row order stored) or ``"hf"``
        (what transformers' Llama models load: q/k rows in rotate-half order for models coded
        from llama2.c or GGUF files, and ``lm_head.weight`` for tied embeddings).
        """
        if framework not in ("numpy", "torch"):
            raise InvalidArgumentError(f"framework: expected 'numpy' or 'torch', got {framework!r}")
        if layout not in ("nwc", "hf"):
            raise InvalidArgumentError(f"layout: expected 'nwc' or 'hf', got {layout!r}")
        wanted = list(self._tensors) if names is None else list(names)
        for n in wanted:
            self.info(n)
        arrays = dict(zip(wanted, self._handle.decode_many(wanted, threads)))
        if layout == "hf":
            arrays = _hf_layout(arrays, self.architecture)
        return _to_torch(arrays.items()) if framework == "torch" else arrays

    def decompress(self, out: PathLike, dtype: str = "F32", threads: int | None = None) -> None:
        """Writes every tensor to a safetensors file (``nwc decompress``: F32, F16 or BF16)."""
        self._handle.decompress(_os.fspath(out), dtype.upper(), threads)

    # life cycle
    @property
    def closed(self) -> bool:
        return self._handle.closed

    def close(self) -> None:
        """Unmaps the file; later decodes raise InvalidArgumentError. Idempotent."""
        self._handle.close()

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)} tensors, {self.file_size} bytes"
        return f"nwc.Container({self.path!r}, {state})"


def open(path: PathLike, threads: int = 0, *, plugin_path: PluginPath = None) -> Container:
    """Opens a ``.nwc`` container: checks its footer, manifest and that every plugin it needs is
    installed. ``threads``: decoding threads (0 = all cores)."""
    return Container(path, threads, plugin_path=plugin_path)


# ---- model files ------------------------------------------------------------------------------


class Model(Mapping[str, np.ndarray]):
    """A model file opened by nwc's readers (llama2.c ``.bin``, safetensors file or HF
    directory, GGUF, or a ``.nwc`` container), with HF Llama tensor names. A mapping from names
    to float32 arrays, each read when it is looked up."""

    def __init__(self, path: PathLike, threads: int = 0, *,
                 plugin_path: PluginPath = None) -> None:
        self.path = _os.fspath(path)
        self._handle = _nwc.Model(registry(plugin_path), self.path, threads)
        self.format: str = self._handle.format
        self.architecture: dict = _json.loads(self._handle.architecture_json)
        self._shapes = {n: (tuple(s), d) for n, s, d in self._handle.tensors()}

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name][0]

    def dtype(self, name: str) -> str:
        """The element type stored in the file (``"F32"``, ``"BF16"``, ...)."""
        return self._shapes[name][1]

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._shapes:
            raise KeyError(f"{self.path}: no tensor named {name}")
        return self._handle.load(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)

    def to_state_dict(self, framework: str = "numpy") -> dict[str, Any]:
        arrays = {n: self[n] for n in self}
        return _to_torch(arrays.items()) if framework == "torch" else arrays

    def __repr__(self) -> str:
        return f"nwc.Model({self.path!r}, {self.format}, {len(self)} tensors)"


def load_model(path: PathLike, threads: int = 0, *, plugin_path: PluginPath = None) -> Model:
    """Opens a model file (or container) with nwc's readers; see :class:`Model`."""
    return Model(path, threads, plugin_path=plugin_path)


def read_hf_config(path: PathLike) -> dict:
    """An HF ``config.json`` (or a directory holding one) as nwc's architecture dict."""
    p = _os.fspath(path)
    if _os.path.isdir(p):
        p = _os.path.join(p, "config.json")
    return _json.loads(_nwc.read_hf_config(p))


def hf_config(architecture: Mapping[str, Any], dtype: str = "F32") -> dict:
    """The ``config.json`` transformers needs for an architecture (see
    ``Container.to_state_dict(layout="hf")`` for the matching weights)."""
    return _json.loads(_nwc.hf_config(_json.dumps(dict(architecture)), dtype.upper()))


def _architecture(architecture: Any, tensors: Any) -> dict:
    """The architecture argument as a dict: a dict, a Model's or Container's, or read from an HF
    config.json (a file, or a directory holding one) or from any model file."""
    if architecture is None:
        if isinstance(tensors, (Model, Container)):
            return dict(tensors.architecture)
        return {}
    if isinstance(architecture, Mapping):
        return dict(architecture)
    if isinstance(architecture, (Model, Container)):
        return dict(architecture.architecture)
    if isinstance(architecture, (str, _os.PathLike)):
        p = _os.fspath(architecture)
        if _os.path.basename(p) == "config.json" or (
                _os.path.isdir(p) and _os.path.exists(_os.path.join(p, "config.json"))):
            return read_hf_config(p)
        return dict(load_model(p).architecture)
    raise InvalidArgumentError(
        f"architecture: expected a dict, a path to config.json or a model, got "
        f"{type(architecture).__name__}")


def _sources(tensors: Any, arch: dict) -> list:
    if isinstance(tensors, (Model, Container)):
        tensors = {n: tensors[n] for n in tensors}
    return _tensor_sources(tensors, bool(arch.get("tied_embeddings")))


# ---- compression ------------------------------------------------------------------------------

ProgressCallback = Callable[[int, int, str], Any]


def compress(tensors: Mapping[str, Any], pipeline: Union[Pipeline, PathLike],
             calibration: Union[Mapping[str, Any], PathLike, None] = None, *, out: PathLike,
             architecture: Any = None, threads: int = 0,
             progress: ProgressCallback | None = None, embed_codec: bool = False,
             plugin_path: PluginPath = None, source: str = "state_dict") -> Container:
    """Codes tensors with a pipeline into the container ``out`` and returns it opened.

    ``tensors``: a mapping of HF Llama names to NumPy arrays or PyTorch tensors (float32,
    float16, bfloat16; float64 is coded as float32), e.g. ``model.state_dict()``, or a
    :class:`Model`. Tensors are coded in the mapping's order; the pipeline's ``select`` patterns
    choose the ones it codes, the others are stored losslessly. With tied embeddings the
    embedding is stored once, as ``model.embed_tokens.weight``.

    ``pipeline``: a :class:`Pipeline`, a path to a TOML file, or TOML text.

    ``calibration``: the Hessians H = E[x xᵀ] (cols x cols) of the linears' inputs, for
    compensators such as GPTQ and for ``[levels]``/``[importance]``: a mapping of weight names
    to arrays (see :func:`calibrate`), or the path of an ``nwc calibrate`` file of these same
    tensors (needs the model runtime). Pipelines with ``[blockft]``, ``[awq]`` or sequential
    calibration code with calibration text inside the coder and are refused: use
    ``nwc compress`` for them.

    ``architecture``: the model's architecture, recorded in the container (``nwc eval`` and
    :func:`eval` need it): a dict as :attr:`Container.architecture`, a path to an HF
    ``config.json`` or model directory, or a model file. Default: the one of a :class:`Model`
    given as ``tensors``, else none.

    ``progress(done, total, name)`` is called after each tensor is written. Ctrl-C
    (KeyboardInterrupt) or an exception raised by ``progress`` stops the run at the next tensor
    and is re-raised; the output file is then not created (the container is written to a
    temporary file renamed into place at the end). ``threads``: coding threads (0 = all cores);
    the output bytes do not depend on it.
    """
    if threads < 0:
        raise InvalidArgumentError(f"threads must be >= 0, got {threads}")
    pl = pipeline if isinstance(pipeline, Pipeline) else Pipeline(pipeline,
                                                                  plugin_path=plugin_path)
    arch = _architecture(architecture, tensors)
    sources = _sources(tensors, arch)
    hessians: dict[str, np.ndarray] = {}
    calibration_file = ""
    if isinstance(calibration, Mapping):
        for name, h in calibration.items():
            if hasattr(h, "detach"):
                h = h.detach().cpu().numpy()
            hessians[name] = np.ascontiguousarray(h, dtype=np.float32)
    elif calibration is not None:
        calibration_file = _os.fspath(calibration)
        if not HAS_RUNTIME:
            raise UnsupportedError(
                f"{calibration_file}: reading an `nwc calibrate` file needs the model runtime, "
                "which this build of nwc lacks; pass the Hessians as arrays")
    out_path = _os.fspath(out)
    _nwc.compress(pl._handle, sources, _json.dumps(arch), out_path, hessians, calibration_file,
                  threads, progress, embed_codec, source)
    return Container(out_path, threads, plugin_path=plugin_path)


# ---- the model runtime ------------------------------------------------------------------------


def _require_runtime(what: str) -> None:
    if not HAS_RUNTIME:
        raise UnsupportedError(
            f"{what} needs the model runtime, which this build of nwc lacks (NWC_WITH_RUNTIME=OFF)")


def _model_args(model: Any, architecture: Any) -> tuple[str, list, str]:
    """(path, tensors, architecture JSON) for the runtime: a path or container runs from its
    file, tensors in memory."""
    if isinstance(model, (str, _os.PathLike)):
        return _os.fspath(model), [], "{}"
    if isinstance(model, (Container, Model)):
        return model.path, [], "{}"
    arch = _architecture(architecture, model)
    if not arch:
        raise InvalidArgumentError(
            "architecture: required to run tensors (a dict, a config.json or a model file)")
    return "", _sources(model, arch), _json.dumps(arch)


@dataclass(frozen=True)
class EvalResult:
    """The figures ``nwc eval --json`` prints."""
    protocol: str
    tokens: int
    windows: int
    seq_len: int
    predicted_tokens: int
    nll: float
    ppl: float
    seconds: float
    tokens_per_second: float


def eval(model: Any, tokenizer: PathLike, text: PathLike, *, architecture: Any = None,
         protocol: str = "ppl-v1", seq_len: int = 0, max_tokens: int = 0, batch: int = 1,
         threads: int = 0, plugin_path: PluginPath = None) -> EvalResult:
    """``nwc eval``: the mean next-token NLL and perplexity of a model on a text file under
    ``protocol`` (``"ppl-v1"`` or ``"wikitext2"``, docs/evaluation.md).

    ``model``: a path (model file, HF directory or ``.nwc``), a :class:`Container`, a
    :class:`Model`, or a mapping of tensors with ``architecture``. ``tokenizer``: llama2.c
    ``tokenizer.bin``, SentencePiece ``.model``, HF ``tokenizer.json`` or a directory holding
    one. The numbers are those of ``nwc eval`` with the same arguments."""
    _require_runtime("nwc.eval")
    path, sources, arch = _model_args(model, architecture)
    r = _nwc.evaluate(registry(plugin_path), path, sources, arch, _os.fspath(tokenizer),
                      _os.fspath(text), protocol, seq_len, max_tokens, batch, threads)
    return EvalResult(**r)


def calibrate(model: Any, tokenizer: PathLike, text: PathLike | None = None, *,
              architecture: Any = None, tokens: int = 65536, seq_len: int = 0,
              threads: int = 0, out: PathLike | None = None,
              plugin_path: PluginPath = None) -> dict[str, np.ndarray]:
    """``nwc calibrate``: the input Hessian H = Σ x xᵀ / count of every linear, from ``tokens``
    tokens of calibration text (default ``$NWC_DATA/text/tinystories-calib.txt``), run through the
    model layer by layer. Returns {weight name: float32 array (cols x cols)} — linears that
    share an input share one array — ready for ``compress(calibration=...)``; ``out`` also writes
    them as an ``nwc calibrate`` file (stamped with the model's fingerprint)."""
    _require_runtime("nwc.calibrate")
    path, sources, arch = _model_args(model, architecture)
    return dict(_nwc.calibrate(registry(plugin_path), path, sources, arch, _os.fspath(tokenizer),
                               "" if text is None else _os.fspath(text), tokens, seq_len,
                               threads, "" if out is None else _os.fspath(out)))


class Tokenizer:
    """A tokenizer as ``nwc tokenize`` and ``nwc eval`` load it: llama2.c ``tokenizer.bin``,
    SentencePiece ``.model``, HF ``tokenizer.json`` or a model directory holding one."""

    def __init__(self, path: PathLike, vocab_size: int = 0) -> None:
        self._tok = _nwc.Tokenizer(_os.fspath(path), vocab_size)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        return self._tok.encode(text, bos, eos)

    def decode(self, ids: Sequence[int]) -> bytes:
        """The bytes the ids stand for (not always valid UTF-8 on its own)."""
        return self._tok.decode(list(ids))

    def piece(self, id: int) -> str:
        return self._tok.piece(id)

    @property
    def bos_id(self) -> int:
        return self._tok.bos_id

    @property
    def eos_id(self) -> int:
        return self._tok.eos_id

    @property
    def vocab_size(self) -> int:
        return self._tok.vocab_size
