"""ScriptedSampler: a stand-in for a model that replays a written assistant turn.

For tests and offline teaching. It behaves like a model with real stop/resume semantics: it streams
the script in chunks from where the accepted assistant text ends, honours stop strings, and, after
the Reasoner splices the real output in, continues with the script's next part. Output blocks that
the script itself contains are skipped, since the real output takes their place.

A script may hold several turns, one per question, each after a line ``=== question: TEXT``: a run
replays the first turn whose TEXT its question contains (case-insensitive). That is how a notebook
with several ``%%reason`` cells replays a recorded session with one model string.

A first line ``=== load: SECONDS`` makes the stand-in take that long to load, reporting progress as
a real model's load does (``kernel_bridge.loading``): how a front end's cold start is tested.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from kernel_bridge.loading import Progress, report
from kernel_bridge.samplers import Delta, ModelSpecError, SampleRequest

# An output block a script may carry after a code block: ```output … ``` or <interpreter>…</…>.
_OUTPUT_BLOCK_RE = re.compile(
    r"^[ ]{0,3}```output[ \t]*\n.*?^[ ]{0,3}```[ \t]*(?:\n|\Z)|<interpreter>.*?</interpreter>\n?",
    re.DOTALL | re.MULTILINE,
)
# The line that starts a turn of a script with several: ``=== question: TEXT``.
_TURN_RE = re.compile(r"^=== question:[ \t]*(.*?)[ \t]*$\n?", re.MULTILINE)
# A first line that makes the stand-in slow to load: ``=== load: SECONDS``.
_LOAD_RE = re.compile(r"\A=== load:[ \t]*([0-9.]+)[ \t]*s?[ \t]*\n")
_LOAD_STEP_S = 0.1


class ScriptedSampler:
    """Replays ``script`` as the model's text (a stand-in for a model, named as one)."""

    def __init__(
        self, script: str, *, chunk_size: int = 16, delay: float = 0.0, name: str = "scripted"
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self.script = script
        # (question text, model text) per turn; a key of None answers any question.
        self.turns = [(key, _OUTPUT_BLOCK_RE.sub("", text)) for key, text in _split_turns(script)]
        self.model_text = self.turns[0][1]
        self.chunk_size = chunk_size
        self.delay = delay
        self.name = name

    @classmethod
    def from_file(
        cls, path: str | Path, *, progress: Progress | None = None, **kwargs: Any
    ) -> ScriptedSampler:
        """The script at ``path``; a first line ``=== load: SECONDS`` makes this take that long,
        reporting to ``progress`` every 0.1 s as a model's load does (and stopping when it
        raises)."""
        p = Path(path).expanduser()
        try:
            script = p.read_text(encoding="utf-8")
        except OSError as e:
            raise FileNotFoundError(f"cannot read the script for scripted:{path}: {e}") from e
        kwargs.setdefault("name", f"scripted:{path}")
        load = _LOAD_RE.match(script)
        if load is not None:
            script = script[load.end() :]
            _load_slowly(
                float(load.group(1)), f"Loading model {kwargs['name']} (a stand-in)…", progress
            )
        return cls(script, **kwargs)

    def params(self) -> dict[str, Any]:
        return {"chunk_size": self.chunk_size, "delay": self.delay}

    def count_tokens(self, text: str) -> int:
        """A script has no tokenizer: one character counts as one token (also for max_tokens)."""
        return len(text)

    def _position(self, request: SampleRequest) -> int:
        """Where the script continues: after all the model text accepted so far."""
        return sum(len(s.text) for s in request.segments if s.kind == "model")

    def turn_for(self, messages: list[dict[str, Any]]) -> str:
        """The model text that answers the last user message of ``messages``."""
        if len(self.turns) == 1 and self.turns[0][0] is None:
            return self.turns[0][1]
        question = next(
            (str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        for key, text in self.turns:
            if key is not None and key.lower() in question.lower():
                return text
        for key, text in self.turns:
            if key is None:
                return text
        keys = ", ".join(repr(key) for key, _ in self.turns)
        raise ModelSpecError(
            f"{self.name}: no turn of the script answers the question {question[:80]!r}; "
            f"its turns are for questions containing {keys}"
        )

    async def stream(self, request: SampleRequest) -> AsyncIterator[Delta]:
        model_text = self.turn_for(request.messages)
        start = self._position(request)
        end = len(model_text)
        finish: Literal["stop", "length"] = "stop"
        for stop in request.stop:
            at = model_text.find(stop, start)
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
            piece = model_text[pos : min(pos + self.chunk_size, end)]
            pos += len(piece)
            yield Delta(piece, finish_reason=finish if pos >= end else None)
        if start >= end:
            yield Delta("", finish_reason=finish)


def _load_slowly(seconds: float, message: str, progress: Progress | None) -> None:
    steps = max(1, round(seconds / _LOAD_STEP_S))
    for i in range(steps):
        report(progress, "loading", message, i / steps)
        time.sleep(seconds / steps)
    report(progress, "loading", message, 1.0)


def _split_turns(script: str) -> list[tuple[str | None, str]]:
    """The turns of a script: ``(None, script)`` without ``=== question:`` lines; otherwise one
    per such line, plus any text before the first (a turn for every other question)."""
    headers = list(_TURN_RE.finditer(script))
    if not headers:
        return [(None, script)]
    turns: list[tuple[str | None, str]] = []
    if script[: headers[0].start()].strip():
        turns.append((None, script[: headers[0].start()]))
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        end = following.start() if following is not None else len(script)
        text = script[header.end() : end]
        if not header.group(1):
            raise ModelSpecError(
                f"a '=== question:' line of the script names no question: {text!r}"
            )
        turns.append((header.group(1), text))
    return turns
