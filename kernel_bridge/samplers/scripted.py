"""ScriptedSampler: a stand-in for a model that replays a written assistant turn.

For tests and offline teaching. It behaves like a model with real stop/resume semantics: it streams
the script in chunks from where the accepted assistant text ends, honours stop strings, and, after
the Reasoner splices the real output in, continues with the script's next part. Output blocks that
the script itself contains are skipped, since the real output takes their place.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kernel_bridge.samplers import Delta, SampleRequest

# An output block a script may carry after a code block: ```output … ``` or <interpreter>…</…>.
_OUTPUT_BLOCK_RE = re.compile(
    r"^[ ]{0,3}```output[ \t]*\n.*?^[ ]{0,3}```[ \t]*(?:\n|\Z)|<interpreter>.*?</interpreter>\n?",
    re.DOTALL | re.MULTILINE,
)


class ScriptedSampler:
    """Replays ``script`` as the model's text (a stand-in for a model, named as one)."""

    def __init__(
        self, script: str, *, chunk_size: int = 16, delay: float = 0.0, name: str = "scripted"
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self.script = script
        self.model_text = _OUTPUT_BLOCK_RE.sub("", script)
        self.chunk_size = chunk_size
        self.delay = delay
        self.name = name

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> ScriptedSampler:
        p = Path(path).expanduser()
        try:
            script = p.read_text(encoding="utf-8")
        except OSError as e:
            raise FileNotFoundError(f"cannot read the script for scripted:{path}: {e}") from e
        kwargs.setdefault("name", f"scripted:{path}")
        return cls(script, **kwargs)

    def params(self) -> dict[str, Any]:
        return {"chunk_size": self.chunk_size, "delay": self.delay}

    def count_tokens(self, text: str) -> int:
        """A script has no tokenizer: one character counts as one token (also for max_tokens)."""
        return len(text)

    def _position(self, request: SampleRequest) -> int:
        """Where the script continues: after all the model text accepted so far."""
        return sum(len(s.text) for s in request.segments if s.kind == "model")

    async def stream(self, request: SampleRequest) -> AsyncIterator[Delta]:
        start = self._position(request)
        end = len(self.model_text)
        finish = "stop"
        for stop in request.stop:
            at = self.model_text.find(stop, start)
            if at != -1:
                end = min(end, at)
        if request.max_tokens is not None and end - start > request.max_tokens:
            end, finish = start + request.max_tokens, "length"  # one character counts as a token
        pos = start
        while pos < end:
            if self.delay:
                await asyncio.sleep(self.delay)
            else:
                await asyncio.sleep(0)  # a real model yields to the loop between deltas
            piece = self.model_text[pos : min(pos + self.chunk_size, end)]
            pos += len(piece)
            yield Delta(piece, finish_reason=finish if pos >= end else None)
        if start >= end:
            yield Delta("", finish_reason=finish)
