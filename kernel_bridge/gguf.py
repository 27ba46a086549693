"""Any local GGUF file as a model: ``gguf:PATH`` (what Ollama and LM Studio users already have).

The file is checked (a GGUF header that reads, an architecture transformers can load), converted
once into the cache, keyed by its sha256, as safetensors plus the int8 weights, and then loaded the
way the embedded model is: int8 linear layers on CPU (``kernel_bridge.embedded``), bfloat16 on a
GPU. A corrupt or foreign file, or an architecture transformers cannot load, is one ``GGUFError``
line that says what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from kernel_bridge.embedded import (
    _dequantized,
    _floating_dtype,
    _progress_bars_off,
    _shared_gguf_reader,
    _use_int8_linears,
    cache_root,
    save_conversion,
)
from kernel_bridge.loading import Progress, report
from kernel_bridge.samplers import ModelSpecError

MAGIC = b"GGUF"
_FORMAT = 1  # bump when the converted files change; older conversions are redone
_MARKER = "kernel-bridge.json"
_INT8 = "linear-int8.safetensors"
_HASHES = "sha256.json"  # path, size and mtime -> sha256, so a big file is hashed once
_HASH_BLOCK = 8 << 20


class GGUFError(ModelSpecError):
    """A ``gguf:PATH`` that cannot be run: missing, not a GGUF, damaged, or an architecture
    transformers cannot load."""


def gguf_sampler(
    path: str | os.PathLike[str], *, dtype: str | None = None, progress: Progress | None = None
) -> Any:
    """A ``TransformersSampler`` for the GGUF file at ``path`` (``make_sampler("gguf:PATH")``)."""
    from kernel_bridge.samplers.transformers import TransformersSampler

    model, tokenizer = load_gguf(path, dtype=dtype, progress=progress)
    return TransformersSampler(model, tokenizer, name=f"gguf:{path}")


def load_gguf(
    path: str | os.PathLike[str],
    *,
    dtype: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> tuple[Any, Any]:
    """Load the GGUF at ``path`` (eval mode) and its tokenizer, converting it the first time.

    ``dtype``: ``"int8"`` (the CPU default: int8 linear layers, the rest float32), or a floating
    dtype name (``"bfloat16"``, the default on a GPU, where the model is moved). ``progress``
    hears the stages (``converting`` the first time, then ``loading``); without it the first
    conversion says so in one line on stderr.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = check_gguf(path)
    target = converted_dir(source, cache_dir)
    cuda = torch.cuda.is_available()
    dtype = dtype or ("bfloat16" if cuda else "int8")
    torch_dtype = torch.bfloat16 if dtype == "int8" else _floating_dtype(dtype)
    with _progress_bars_off():
        if not _is_converted(target):
            with _shared_gguf_reader():  # the header is parsed once for all that read it
                architecture(source)  # a clear error before transformers' own
                if progress is None:
                    print(
                        f"kernel-bridge: converting {source.name} once into {target} "
                        "(later loads read the conversion)",
                        file=sys.stderr,
                        flush=True,
                    )
                notice = f"Converting {source.name} once (later loads read the conversion)…"
                report(progress, "converting", notice, None)
                _convert(source, target)
        report(progress, "loading", f"Loading {source.name}…", None)
        tokenizer = AutoTokenizer.from_pretrained(target)
        # int8 starts from the bfloat16 files: loading in their dtype maps them, no copy
        model: Any = AutoModelForCausalLM.from_pretrained(target, dtype=torch_dtype)
    if dtype == "int8":
        _use_int8_linears(model, target / _INT8)
        model.float()  # embeddings and norms; the int8 kernel takes float32 input
        model.config.dtype = torch.float32
    elif cuda:
        model = model.to("cuda")
    model.eval()
    return model, tokenizer


def check_gguf(path: str | os.PathLike[str]) -> Path:
    """``path`` resolved, if it is a readable file that starts like a GGUF; else a GGUFError."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise GGUFError(f"gguf:{path}: no such file")
    try:
        with source.open("rb") as f:
            head = f.read(len(MAGIC))
    except OSError as e:
        raise GGUFError(f"gguf:{path}: cannot read it ({e.strerror or e})") from e
    if head != MAGIC:
        raise GGUFError(
            f"gguf:{path}: not a GGUF file (it starts with {head!r}, a GGUF file with {MAGIC!r}); "
            "give the path of a .gguf model file"
        )
    return source.resolve()


def architecture(source: Path) -> str:
    """The file's ``general.architecture``, if transformers can load it; else a GGUFError."""
    import gguf

    try:
        reader = gguf.GGUFReader(source)
        field = reader.fields["general.architecture"]
        name = bytes(field.parts[field.data[0]]).decode("utf-8")
    except KeyError:
        raise GGUFError(
            f"gguf:{source}: the GGUF names no architecture (general.architecture)"
        ) from None
    except Exception as e:
        raise GGUFError(
            f"gguf:{source}: a damaged GGUF file, its header does not read "
            f"({type(e).__name__}: {_short(e)}); download it again"
        ) from e
    supported = _supported_architectures()
    if supported and name not in supported:
        raise GGUFError(
            f"gguf:{source}: transformers cannot load the GGUF architecture {name!r} (it loads "
            f"{', '.join(sorted(supported))}); run this model with Ollama or llama.cpp and use "
            "it as ollama_chat/MODEL or through an OpenAI-compatible server"
        )
    return name


def converted_dir(source: Path, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the conversion of ``source`` lives: ``<cache>/gguf/<sha256>``."""
    return cache_root(cache_dir) / "gguf" / file_sha256(source, cache_dir)


def file_sha256(source: Path, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The sha256 of ``source``; remembered by path, size and mtime, so a big file is read once."""
    index_path = cache_root(cache_dir) / "gguf" / _HASHES
    stat = source.stat()
    key = os.fspath(source)
    stamp = [stat.st_size, stat.st_mtime_ns]
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    known = index.get(key) if isinstance(index, dict) else None
    if isinstance(known, dict) and known.get("stamp") == stamp and known.get("sha256"):
        return str(known["sha256"])
    digest = hashlib.sha256()
    with source.open("rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    sha = digest.hexdigest()
    index = index if isinstance(index, dict) else {}
    index[key] = {"stamp": stamp, "sha256": sha}
    index_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_path.with_name(f".{_HASHES}.{os.getpid()}")
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, index_path)
    return sha


def _is_converted(target: Path) -> bool:
    try:
        meta = json.loads((target / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("source_sha256") == target.name and meta.get("format") == _FORMAT


def _convert(source: Path, target: Path) -> None:
    """De-quantize ``source`` once into ``target`` (safetensors, tokenizer, int8 weights),
    atomically: a temporary directory renamed at the end."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with _shared_gguf_reader():
            tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
            model: Any = AutoModelForCausalLM.from_pretrained(
                source.parent, gguf_file=source.name, dtype=torch.bfloat16, **_dequantized()
            )
    except Exception as e:
        raise GGUFError(
            f"gguf:{source}: transformers could not load it ({type(e).__name__}: {_short(e)})"
        ) from e
    meta = {"source": os.fspath(source), "source_sha256": target.name, "format": _FORMAT}
    save_conversion(model, tokenizer, target, meta, _is_converted)


def _supported_architectures() -> frozenset[str]:
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:
        return frozenset()  # an older transformers: let it say for itself
    return frozenset(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}


def _short(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["GGUFError", "architecture", "check_gguf", "gguf_sampler", "load_gguf"]
