"""Samplers stream the continuation of an assistant turn; the Reasoner drives them.

A sampler gets the conversation (system + user messages) and the assistant turn so far as trace
segments, and yields ``Delta``s until it stops (a stop string, end of turn, or ``max_tokens``).
Closing the async iterator early (``aclose()``) must abort the upstream work.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from kernel_bridge import settings
from kernel_bridge.errors import UserError
from kernel_bridge.loading import Progress, report
from kernel_bridge.trace import Segment


@dataclass
class Delta:
    """A piece of model text, with its token ids and logprobs where the sampler knows them."""

    text: str
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    finish_reason: Literal["stop", "length"] | None = None


@dataclass
class SampleRequest:
    """Continue the assistant turn ``segments`` of the conversation ``messages``."""

    messages: list[dict[str, Any]]
    segments: Sequence[Segment] = ()
    stop: list[str] = field(default_factory=list)
    max_tokens: int | None = None

    @property
    def assistant_text(self) -> str:
        return "".join(s.text for s in self.segments)


@runtime_checkable
class Sampler(Protocol):
    """What the Reasoner needs of a model."""

    name: str

    def params(self) -> dict[str, Any]:
        """Sampling parameters recorded in the trace."""
        ...

    def stream(self, request: SampleRequest) -> AsyncIterator[Delta]:
        """Yield deltas of the continuation; closing the iterator aborts generation."""
        ...


def check_sampling(
    temperature: float | None = None, top_p: float | None = None, max_tokens: int | None = None
) -> None:
    """Refuse sampling settings no backend takes (a ``ValueError`` naming the setting)."""
    if temperature is not None and temperature < 0:
        raise ValueError(f"temperature must be ≥ 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")


class ModelSpecError(UserError, ValueError):
    """A model string that names no usable sampler."""


DEFAULT_MODEL = "local"


def config_path() -> Path:
    """``$KERNEL_BRIDGE_CONFIG``, else ``~/.config/kernel-bridge/config.toml``."""
    return Path(
        os.environ.get("KERNEL_BRIDGE_CONFIG")
        or Path.home() / ".config" / "kernel-bridge" / "config.toml"
    )


def resolve_model(explicit: str | None = None) -> str:
    """The model to use: the explicit one (a flag or magic option), else ``$KERNEL_BRIDGE_MODEL``,
    else ``model = "…"`` in the config file, else the embedded ``local`` model."""
    if explicit:
        return explicit
    if os.environ.get("KERNEL_BRIDGE_MODEL"):
        return os.environ["KERNEL_BRIDGE_MODEL"]
    path = config_path()
    if path.is_file():
        import tomllib

        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ModelSpecError(f"cannot read {path}: {e}") from e
        model = data.get("model")
        if model is not None and not isinstance(model, str):
            raise ModelSpecError(f"{path}: 'model' must be a string, got {model!r}")
        if model:
            return model
    return DEFAULT_MODEL


REASONING_EFFORTS = settings.REASONING_EFFORTS


def _is_api_model(model: str) -> bool:
    """``PROVIDER/MODEL``: what no other prefix claims and is not a path."""
    prefixes = ("scripted:", "local:", "hf:", "gguf:", "vllm:", "/", ".", "~")
    return "/" in model and not model.startswith(prefixes)


def make_sampler(
    model: str | None = None,
    *,
    reasoning_effort: str | None = None,
    progress: Progress | None = None,
) -> Sampler:
    """The sampler a model string names.

    ``local`` (the embedded Qwen2.5-Coder-0.5B with the shipped GRPO adapter), ``local-base``
    (without it), ``local:PATH`` (with the LoRA adapter or training run at PATH),
    ``hf:ID_OR_PATH`` (transformers), ``gguf:PATH`` (a local GGUF file), ``scripted:PATH``
    (a stand-in that replays an assistant script), ``vllm:URL[#MODEL]`` (a running ``vllm serve``
    through ``/v1/completions`` with token ids, e.g. ``vllm:http://127.0.0.1:8000/v1``),
    ``PROVIDER/MODEL`` (an API model through LiteLLM: ``openai/gpt-4o``, ``anthropic/…``,
    ``hosted_vllm/…``, ``ollama_chat/…``; keys and bases from the provider's environment
    variables). ``None`` resolves as ``resolve_model`` says.

    ``reasoning_effort`` (``none``, ``low``, ``medium``, ``high``) asks an API model to think
    (LiteLLM maps it to each provider's switch); local and served models think as their chat
    template says, so for them it is refused.

    ``progress`` gets a ``LoadStatus`` as the model loads (``kernel_bridge.loading``): at once for
    every model that is not a script, then the stages of a local model's load (converting the
    first time, loading); it may raise ``LoadStopped`` to stop the load.
    """
    model = resolve_model(model).strip()
    if reasoning_effort is not None:
        if reasoning_effort not in REASONING_EFFORTS:
            raise ModelSpecError(
                f"reasoning effort {reasoning_effort!r}: choose one of "
                + ", ".join(REASONING_EFFORTS)
            )
        if not _is_api_model(model):
            raise ModelSpecError(
                f"reasoning effort applies to API models (PROVIDER/MODEL), not {model!r}: a "
                "local or served model thinks as its chat template says"
            )
    if model.startswith("scripted:"):
        from kernel_bridge.samplers.scripted import ScriptedSampler

        return ScriptedSampler.from_file(model.removeprefix("scripted:"), progress=progress)
    report(progress, "loading", f"Loading model {model}…", None)
    if model in ("local", "local-base") or model.startswith("local:"):
        from kernel_bridge.samplers.transformers import TransformersSampler

        return TransformersSampler.embedded(variant=model, progress=progress)
    if model.startswith("hf:"):
        from kernel_bridge.samplers.transformers import TransformersSampler

        return TransformersSampler.from_pretrained(model.removeprefix("hf:"))
    if model.startswith("gguf:"):
        from kernel_bridge.gguf import gguf_sampler

        return gguf_sampler(model.removeprefix("gguf:"), progress=progress)
    if model.startswith("vllm:"):
        from kernel_bridge.samplers.vllm import VLLMServerSampler, parse_model_string

        url, served = parse_model_string(model)
        return VLLMServerSampler.connect(url, served)
    if _is_api_model(model):
        from kernel_bridge.samplers.litellm import LiteLLMSampler

        return LiteLLMSampler(model, reasoning_effort=reasoning_effort)
    raise ModelSpecError(
        f"no sampler for model {model!r}: use 'local' (the embedded model; 'local-base' without "
        "its trained adapter, 'local:PATH' with yours), 'hf:ID_OR_PATH' "
        "(a transformers model), 'gguf:PATH' (a local GGUF file), "
        "'scripted:PATH' (replays an assistant script), "
        "'vllm:http://HOST:PORT/v1[#MODEL]' (a running vllm serve) or "
        "'PROVIDER/MODEL' (an API model through LiteLLM, e.g. 'openai/gpt-4o'; needs "
        'pip install "kernel-bridge[api]")'
    )


__all__ = [
    "DEFAULT_MODEL",
    "REASONING_EFFORTS",
    "Delta",
    "ModelSpecError",
    "SampleRequest",
    "Sampler",
    "check_sampling",
    "make_sampler",
    "resolve_model",
]
