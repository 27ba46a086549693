"""Samplers stream the continuation of an assistant turn; the Reasoner drives them.

A sampler gets the conversation (system + user messages) and the assistant turn so far as trace
segments, and yields ``Delta``s until it stops (a stop string, end of turn, or ``max_tokens``).
Closing the async iterator early (``aclose()``) must abort the upstream work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

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


class ModelSpecError(ValueError):
    """A model string that names no usable sampler."""


def make_sampler(model: str) -> Sampler:
    """The sampler a model string names: ``scripted:PATH`` (a stand-in for a model), …"""
    model = model.strip()
    if model.startswith("scripted:"):
        from kernel_bridge.samplers.scripted import ScriptedSampler

        return ScriptedSampler.from_file(model.removeprefix("scripted:"))
    raise ModelSpecError(
        f"no sampler for model {model!r}: this version knows 'scripted:PATH' "
        "(replays an assistant script through the real kernel)"
    )


__all__ = ["Delta", "ModelSpecError", "SampleRequest", "Sampler", "make_sampler"]
