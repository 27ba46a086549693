"""The events a front end shows of a run: their wire form for the JupyterLab extension, how a run
sends them, and the one-line summaries of a block and of a run.

**Wire form** (docs/events.schema.json; labextension/src/types.ts declares the same records). A
run opens one comm on the target ``kernel_bridge.trace`` with ``CommOpen``, then sends messages
``{"events": [...]}``, each event one of the records below as ``to_wire`` writes it, and last
``FinishedEvent``; then the comm closes. ``%%reason`` opens the comm as its cell starts, so the
first events may be ``LoadingEvent``s while the model loads. ``TraceComm`` batches them:
consecutive text of one section is joined, a batch goes every 0.2 s (as ipykernel batches stream
text) and when a block starts. With no frontend listening the messages cost only their bytes;
nothing waits.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from kernel_bridge.parsing import CodeEnd, TextDelta
from kernel_bridge.reasoner import RunStarted, StepFinished, StepOutput, StepStarted
from kernel_bridge.trace import Step, Trace, trace_pieces

COMM_TARGET = "kernel_bridge.trace"
WIRE_VERSION = 1


# -- the wire form ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommOpen:
    """The data a run's comm is opened with; ``mode`` is ``shared`` or ``isolated``."""

    trace_id: str
    model: str
    question: str | None
    mode: str
    trace_path: str
    version: int = WIRE_VERSION

    def to_wire(self) -> dict[str, Any]:
        return {"version": self.version, **_fields(self, skip="version")}


@dataclass(frozen=True)
class LoadingEvent:
    """The model is loading, before the run's first other event: ``converting`` it the first
    time, then ``loading`` it; ``ready`` when done. ``fraction``: the share of the stage done
    (None: not known); ``message``: the line a front end shows."""

    stage: str
    message: str
    fraction: float | None


@dataclass(frozen=True)
class TextEvent:
    """Prose of one section (``think``, ``answer``, ``text``), as it streams."""

    section: str
    text: str


@dataclass(frozen=True)
class CodeEvent:
    """A complete code block; ``runs`` says whether the kernel runs it."""

    section: str
    code: str
    runs: bool


@dataclass(frozen=True)
class StepStartedEvent:
    """The kernel started the block that became ``steps[index]``."""

    index: int


@dataclass(frozen=True)
class OutputEvent:
    """One nbformat output of a running block, as soon as the kernel sends it."""

    index: int
    output: Mapping[str, Any]


@dataclass(frozen=True)
class StepFinishedEvent:
    """``steps[index]`` is done: how it ended, how long it took, the files it made."""

    index: int
    status: str
    duration_s: float
    new_files: list[str]


@dataclass(frozen=True)
class CellsEvent:
    """``--cells``: nbformat cells to insert below the run's cell."""

    cells: list[Any]


@dataclass(frozen=True)
class FinishedEvent:
    """The run ended; the last event of its comm."""

    trace_id: str
    finish_reason: str | None
    answer: str | None
    error: str | None
    trace_path: str


WireEvent = (
    LoadingEvent
    | TextEvent
    | CodeEvent
    | StepStartedEvent
    | OutputEvent
    | StepFinishedEvent
    | CellsEvent
    | FinishedEvent
)

EVENT_TYPES: dict[str, type[WireEvent]] = {
    "loading": LoadingEvent,
    "text": TextEvent,
    "code": CodeEvent,
    "step_started": StepStartedEvent,
    "output": OutputEvent,
    "step_finished": StepFinishedEvent,
    "cells": CellsEvent,
    "finished": FinishedEvent,
}
_TYPE_NAMES = {cls: name for name, cls in EVENT_TYPES.items()}


def _fields(record: Any, skip: str = "") -> dict[str, Any]:
    # Not dataclasses.asdict: that deep-copies every output and cell.
    return {f.name: getattr(record, f.name) for f in fields(record) if f.name != skip}


def to_wire(event: WireEvent) -> dict[str, Any]:
    """The event as the extension reads it: ``{"type": ..., <fields>}``."""
    return {"type": _TYPE_NAMES[type(event)], **_fields(event)}


def from_wire(data: Mapping[str, Any]) -> WireEvent:
    """The event ``to_wire`` wrote (a ``ValueError`` for a type this version does not know)."""
    cls = EVENT_TYPES.get(data.get("type", ""))
    if cls is None:
        raise ValueError(
            f"unknown event type {data.get('type')!r}; known: {', '.join(EVENT_TYPES)}"
        )
    return cls(**{f.name: data[f.name] for f in fields(cls)})


def wire_event(event: Any) -> WireEvent | None:
    """The wire event of a Reasoner (or parser) event; None for those the extension does not get."""
    if isinstance(event, TextDelta):
        return TextEvent(event.section, event.raw)
    if isinstance(event, CodeEnd):
        return CodeEvent(event.section, event.code, event.runs)
    if isinstance(event, StepStarted):
        return StepStartedEvent(event.index)
    if isinstance(event, StepOutput):
        return OutputEvent(event.index, event.output)
    if isinstance(event, StepFinished):
        step = event.step
        return StepFinishedEvent(step.index, step.status, step.duration_s, step.new_files)
    return None


def finished_event(trace: Trace, trace_path: str) -> FinishedEvent:
    return FinishedEvent(trace.id, trace.finish_reason, trace.answer, trace.error, trace_path)


def run_cells(trace: Trace) -> tuple[Any, list[Any]]:
    """``trace.to_notebook()`` and the cells of it that go below the run's cell (all but the
    question): what ``--cells`` and the sidebar's Insert as cells insert."""
    notebook = trace.to_notebook()
    cells = notebook.cells[1:] if trace.question is not None else notebook.cells
    return notebook, cells


# -- sending a run's events ---------------------------------------------------------------------


def _create_comm(target_name: str, data: dict[str, Any]) -> Any:
    import comm

    return comm.create_comm(target_name=target_name, data=data)


class TraceComm:
    """Sends one run's events to the frontend in batches over a comm; never fails the run.

    The comm opens at ``RunStarted``, or before with ``open`` (``%%reason`` opens it as the cell
    starts, so the sidebar shows the model loading), and closes at ``finish()`` (or ``abandon()``,
    for a run that never started). ``create_comm(target_name, data)`` makes it
    (``comm.create_comm`` by default); ``interval`` is the batching period (``math.inf``: only
    when a block starts and at the end) and ``clock`` its clock.
    """

    INTERVAL = 0.2  # as ipykernel batches stream text

    def __init__(
        self,
        *,
        mode: str,
        trace_path: str,
        create_comm: Callable[[str, dict[str, Any]], Any] = _create_comm,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode
        self.trace_path = trace_path
        self._create = create_comm
        self._interval = interval
        self._clock = clock
        self._comm: Any = None
        self._opened = False
        self._events: list[dict[str, Any]] = []
        self._text: list[str] = []
        self._text_section = ""
        self._last = 0.0

    def handle(self, event: Any) -> None:
        """A Reasoner event: opens the comm (``RunStarted``) or becomes a wire event."""
        if isinstance(event, RunStarted):
            if not self._opened:
                self.open(event.trace.id, event.trace.model, event.trace.question)
        elif isinstance(event, TextDelta):
            self.text(event.section, event.raw)
        else:
            wired = wire_event(event)
            if wired is not None:
                self.add(wired, flush=isinstance(wired, StepStartedEvent))

    def open(self, trace_id: str, model: str, question: str | None) -> None:
        """Open the run's comm (``RunStarted`` does, unless this came first)."""
        data = CommOpen(trace_id, model, question, self.mode, self.trace_path)
        self._opened = True
        self._last = self._clock()
        try:
            self._comm = self._create(COMM_TARGET, data.to_wire())
        except Exception:
            self._comm = None

    def text(self, section: str, text: str) -> None:
        if self._comm is None or not text:
            return
        if self._text and section != self._text_section:
            self._end_text()
        self._text.append(text)
        self._text_section = section
        self._maybe_flush()

    def add(self, event: WireEvent, flush: bool = False) -> None:
        if self._comm is None:
            return
        self._end_text()
        self._events.append(to_wire(event))
        if flush:
            self.flush()
        else:
            self._maybe_flush()

    def _end_text(self) -> None:
        if self._text:
            self._events.append(to_wire(TextEvent(self._text_section, "".join(self._text))))
            self._text = []

    def _maybe_flush(self) -> None:
        if self._clock() - self._last >= self._interval:
            self.flush()

    def flush(self) -> None:
        """Send what is held (also what the cell calls when nothing arrived for a moment)."""
        self._last = self._clock()
        if self._comm is None:
            return
        self._end_text()
        if not self._events:
            return
        events, self._events = self._events, []
        try:
            self._comm.send({"events": events})
        except Exception:
            self._comm = None

    def loading(self, stage: str, message: str, fraction: float | None) -> None:
        """Where the model's load stands (``ready``: done), sent at once."""
        self.add(LoadingEvent(stage, message, fraction), flush=True)

    def finish(self, trace: Trace | None) -> None:
        """The run ended: ``finished`` (when there is a trace), then the comm closes."""
        if trace is not None:
            self.add(finished_event(trace, self.trace_path))
        self.close()

    def abandon(self, trace_id: str, finish_reason: str, error: str) -> None:
        """The run never started (its model failed to load, or Stop came during the load):
        ``finished`` with no trace saved, then the comm closes."""
        self.add(FinishedEvent(trace_id, finish_reason, None, error, self.trace_path))
        self.close()

    def close(self) -> None:
        self.flush()
        if self._comm is not None:
            with contextlib.suppress(Exception):
                self._comm.close()
            self._comm = None


class RecordedComm:
    """A comm that keeps what it is sent (``open`` data, ``messages``, ``closed``): for tests."""

    def __init__(self) -> None:
        self.open: dict[str, Any] | None = None
        self.messages: list[dict[str, Any]] = []
        self.closed = False

    def __call__(self, target_name: str, data: dict[str, Any]) -> RecordedComm:
        self.open = data
        return self

    def send(self, data: dict[str, Any]) -> None:
        self.messages.append(data)

    def close(self) -> None:
        self.closed = True


async def record_run(
    reasoner: Any,
    question: str,
    *,
    mode: str = "shared",
    trace_path: str,
    interval: float = math.inf,
) -> RecordedComm:
    """Run ``reasoner`` on ``question`` and keep what its comm would send, as ``%%reason`` sends it
    (without ``--cells``); ``interval=math.inf`` makes the batches independent of timing."""
    recorded = RecordedComm()
    comm = TraceComm(mode=mode, trace_path=trace_path, create_comm=recorded, interval=interval)
    async for event in reasoner.stream(question):
        comm.handle(event)
    comm.finish(reasoner.trace)
    return recorded


# -- the lines a front end shows ----------------------------------------------------------------


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of white space as single spaces."""
    return " ".join(text.split())


def kernel_note(step: Step) -> str | None:
    """What the kernel said about a block it stopped (interrupted, restarted), else None."""
    if step.status in ("timeout", "died"):
        return step.output_text.rsplit("\n", 1)[-1]
    return None


def step_line(step: Step, *, notes: bool = True) -> str:
    """How a block ended, in one line: ``⟵ ok in 0.12 s · no output · new files: a.csv``.

    ``notes=False`` leaves out the kernel's note and "no output" (the terminal shows them above).
    """
    line = f"⟵ {step.status} in {step.duration_s:.2f} s"
    if notes:
        note = kernel_note(step)
        if note is not None:
            line += f" · {note}"
        elif step.status == "ok" and not step.outputs:
            line += " · no output"
    if step.new_files:
        line += f" · new files: {', '.join(step.new_files)}"
    return line


def run_summary(trace: Trace, *, error: bool = False, tokens: bool = False) -> str:
    """How a run ended, in one line: ``answer · 2 blocks · 310 model tokens · 4.1 s``.

    ``error`` adds a failed run's error after its finish reason; ``tokens`` the model's tokens.
    """
    head = f"{trace.finish_reason}"
    if error and trace.error:
        head += f": {one_line(trace.error)}"
    steps = len(trace.steps)
    parts = [head, f"{steps} block{'s' * (steps != 1)}"]
    if tokens:
        parts.append(f"{trace.usage.model_tokens} model tokens")
    parts.append(f"{trace.timings.get('total_s', 0):.1f} s")
    return " · ".join(parts)


# -- a finished run as HTML, for any notebook viewer ---------------------------------------------

_HTML_STYLE = (
    "<style>.kb-run{font-family:inherit}.kb-run pre{white-space:pre-wrap;margin:.3em 0}"
    ".kb-run .kb-think{color:#666;font-style:italic;white-space:pre-wrap}"
    ".kb-run .kb-code{background:#f5f5f5;padding:.4em;overflow-x:auto;white-space:pre}"
    ".kb-run .kb-out{border-left:3px solid #ccc;padding-left:.5em}"
    ".kb-run .kb-err{color:#b00}.kb-run .kb-meta{color:#888;font-size:85%}"
    ".kb-run .kb-answer{border-left:3px solid #2a2;padding-left:.5em}</style>"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_IMAGES = ("image/png", "image/jpeg", "image/gif")


def trace_html(trace: Trace, *, answer_only: bool = False) -> str:
    """The whole run as one HTML fragment: thinking, each block with its real outputs (images
    inline), how the run ended, the answer. What nbviewer, GitHub, VS Code and ``nbconvert
    --to html`` show of a ``%%reason`` cell; the JupyterLab extension draws the trace instead."""
    from html import escape

    parts = ['<div class="kb-run">', _HTML_STYLE]
    if not answer_only:
        for piece in trace_pieces(trace):
            if trace.answer and piece.section == "answer":
                continue  # shown once, below
            if piece.kind != "code":
                if piece.text.strip():
                    css = "kb-think" if piece.kind == "think" else "kb-text"
                    parts.append(f'<div class="{css}">{escape(piece.text.strip())}</div>')
                continue
            parts.append(f'<pre class="kb-code">{escape(piece.text.rstrip())}</pre>')
            if piece.ran is not None:
                parts.append('<div class="kb-out">')
                parts.extend(_output_html(output) for output in piece.ran.outputs)
                parts.append(f'<div class="kb-meta">{escape(step_line(piece.ran))}</div></div>')
    if trace.answer:
        parts.append(f'<div class="kb-answer"><b>Answer</b><pre>{escape(trace.answer)}</pre></div>')
    parts.append(f'<div class="kb-meta">{escape(run_summary(trace, error=True))}</div></div>')
    return "".join(parts)


def _output_html(output: Any) -> str:
    from html import escape

    kind = output.get("output_type")
    if kind == "stream":
        css = ' class="kb-err"' if output.get("name") == "stderr" else ""
        return f"<pre{css}>{escape(_ANSI.sub('', _text(output.get('text', ''))))}</pre>"
    if kind == "error":
        tb = _ANSI.sub("", "\n".join(output.get("traceback", [])))
        return f'<pre class="kb-err">{escape(tb)}</pre>'
    data = output.get("data", {})
    for mime in _IMAGES:
        if mime in data:
            return f'<img src="data:{mime};base64,{_text(data[mime]).strip()}"/>'
    if "image/svg+xml" in data:
        return _text(data["image/svg+xml"])
    if "text/html" in data:
        return _text(data["text/html"])
    return f"<pre>{escape(_text(data.get('text/plain', '')))}</pre>"


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def trace_text(trace: Trace) -> str:
    """The whole run as plain text (the ``text/plain`` of the cell's one output)."""
    lines = []
    for piece in trace_pieces(trace):
        if piece.kind != "code":
            lines.append(piece.text.strip())
            continue
        lines.append(piece.text.rstrip())
        if piece.ran is not None:
            lines.append(piece.ran.output_text)
            lines.append(step_line(piece.ran))
    if trace.answer:
        lines.append(f"Answer: {trace.answer}")
    lines.append(run_summary(trace, error=True))
    return "\n".join(line for line in lines if line)


__all__ = [
    "COMM_TARGET",
    "EVENT_TYPES",
    "WIRE_VERSION",
    "CellsEvent",
    "CodeEvent",
    "CommOpen",
    "FinishedEvent",
    "LoadingEvent",
    "OutputEvent",
    "RecordedComm",
    "StepFinishedEvent",
    "StepStartedEvent",
    "TextEvent",
    "TraceComm",
    "WireEvent",
    "finished_event",
    "from_wire",
    "kernel_note",
    "one_line",
    "record_run",
    "run_cells",
    "run_summary",
    "step_line",
    "to_wire",
    "trace_html",
    "trace_text",
    "wire_event",
]
