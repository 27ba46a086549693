"""The Trace: the one record of a run that every front end and the trainer share.

A trace is a JSON object (format v1, see docs/trace-format.md); a ``TraceStore`` keeps them one per
line in a ``.jsonl`` file, written so that a crash never leaves the file unreadable.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import math
import os
import re
import tempfile
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, get_args

import nbformat
from nbformat import NotebookNode

from kernel_bridge.errors import UserError
from kernel_bridge.execution.outputs import cap_lines, data_size, format_size, shorten

FORMAT_VERSION = 1
# A saved trace line stays readable whatever the code printed: a step's outputs are cut to fit
# STEP_BYTES, and the largest steps further until the line fits LINE_BYTES (see ``to_json``).
STEP_BYTES = 8 << 20
LINE_BYTES = 32 << 20

SpanKind = Literal["think", "answer", "text", "code", "markup"]
SegmentKind = Literal["model", "tool"]
StepStatus = Literal["ok", "error", "timeout", "died"]
FinishReason = Literal[
    "answer", "no_answer", "max_steps", "max_tokens", "time_limit", "interrupted", "error"
]

# Ids name checkpoint files, so they must be safe file names.
TRACE_ID_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")

# Keys every writer emits; the others default when absent. docs/trace.schema.json agrees.
_TRACE_REQUIRED = [
    "id",
    "created",
    "model",
    "sampler",
    "profile",
    "messages",
    "segments",
    "steps",
    "finish_reason",
]
_STEP_REQUIRED = [
    "index",
    "code",
    "status",
    "output_text",
    "outputs",
    "execution_count",
    "started",
    "duration_s",
    "new_files",
]

T = TypeVar("T")


class TraceFormatError(UserError, ValueError):
    """A trace (or a line of a trace file) does not follow the format; the message says where."""


class PartialLineWarning(UserWarning):
    """A trace file ended in a line cut short by a crash mid-write; it was skipped or removed."""


class TraceStoreError(UserError, OSError):
    """Traces cannot be written where asked; the message names the path and the reason."""


class CorruptLineWarning(UserWarning):
    """A line of a trace file (or a checkpoint) is not a valid trace; it was skipped, the rest
    was read. The message names the file, the line and what is wrong."""


def _require(data: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise TraceFormatError(f"{where}: expected a JSON object, got {type(data).__name__}")
    for key in keys:
        if key not in data:
            raise TraceFormatError(f"{where}: missing required key {key!r}")


def _check_choice(value: Any, choices: Any, what: str) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise TraceFormatError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _cut_outputs(step: dict[str, Any], size: int, limit: int) -> dict[str, Any]:
    """A copy of a step dict whose outputs are cut so that its JSON is about ``limit`` long:
    rich data to its text/plain (largest first), then stream texts and tracebacks to head and
    tail, then the first and last outputs only; a last output says so."""
    outputs = [dict(output) for output in step.get("outputs", [])]
    sizes = [len(_dumps(output)) for output in outputs]
    total = sum(sizes) + len(outputs) + 1  # with the commas and brackets
    budget = max(limit - (size - total) - 500, 0)

    def resize(i: int) -> None:
        nonlocal total
        new = len(_dumps(outputs[i]))
        total += new - sizes[i]
        sizes[i] = new

    for i in sorted(range(len(outputs)), key=lambda i: -sizes[i]):
        if total <= budget:
            break
        data = outputs[i].get("data")
        if isinstance(data, dict) and (len(data) > 1 or "text/plain" not in data):
            plain = data.get("text/plain")
            note = f"[{', '.join(sorted(data))} output of {format_size(data_size(data))} cut]"
            if isinstance(plain, str) and len(plain) <= 1000:
                note = f"{plain}\n{note}"
            outputs[i]["data"] = {"text/plain": note}
            resize(i)
    if total > budget:
        each = max(budget // max(len(outputs), 1), 200)
        for i, output in enumerate(outputs):
            for key in ("text", "evalue"):
                if isinstance(output.get(key), str):
                    output[key] = shorten(output[key], each)
            data = output.get("data")
            if isinstance(data, dict) and isinstance(data.get("text/plain"), str):
                output["data"] = {**data, "text/plain": shorten(data["text/plain"], each)}
            if isinstance(output.get("traceback"), list):
                output["traceback"] = cap_lines([str(x) for x in output["traceback"]], each)
            resize(i)
    if total > budget and outputs:  # still too many outputs: keep the first and last ones
        n = len(outputs)
        keep = max(budget // max(total // n, 1), 2)
        if keep < n:
            outputs = outputs[: keep // 2] + outputs[n - (keep - keep // 2) :]
    note = (
        f"[outputs cut in the saved trace: {format_size(size)} of step JSON over the limit of "
        f"{format_size(limit)}]"
    )
    outputs.append(
        {
            "output_type": "display_data",
            "data": {"text/plain": note},
            "metadata": {"kernel_bridge": {"omitted": True}},
        }
    )
    cut = {**step, "outputs": outputs}
    if isinstance(cut.get("background_output"), str):
        cut["background_output"] = shorten(cut["background_output"], max(budget // 10, 200))
    return cut


def _build(cls: type[T], where: str, **fields: Any) -> T:
    """Construct a record, prefixing a validation error with where in the trace it happened."""
    try:
        return cls(**fields)
    except TraceFormatError as error:
        raise TraceFormatError(f"{where}: {error}") from None


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Span:
    """A slice ``text[start:end]`` of a model segment and what it is.

    ``step`` is the index into ``Trace.steps`` of the execution a ``code`` span produced.
    """

    kind: SpanKind
    start: int
    end: int
    step: int | None = None

    def __post_init__(self) -> None:
        _check_choice(self.kind, SpanKind, "span kind")
        if not 0 <= self.start <= self.end:
            raise TraceFormatError(f"span offsets must satisfy 0 <= start <= end; got {self}")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "start": self.start, "end": self.end}
        if self.step is not None:
            data["step"] = self.step
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "span") -> Span:
        _require(data, ("kind", "start", "end"), where)
        return _build(
            cls,
            where,
            kind=data["kind"],
            start=data["start"],
            end=data["end"],
            step=data.get("step"),
        )


@dataclass
class Segment:
    """A stretch of the assistant turn written by the model or spliced in by the tool.

    Local samplers record the exact ``token_ids`` (and ``logprobs``); ``spans`` cover ``text``
    in order.
    """

    kind: SegmentKind
    text: str
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    spans: list[Span] | None = None

    def __post_init__(self) -> None:
        _check_choice(self.kind, SegmentKind, "segment kind")
        if (
            self.token_ids is not None
            and self.logprobs is not None
            and len(self.token_ids) != len(self.logprobs)
        ):
            raise TraceFormatError(
                f"segment has {len(self.token_ids)} token_ids but {len(self.logprobs)} logprobs"
            )
        if self.spans is not None:
            position = 0
            for span in self.spans:
                if span.start != position:
                    raise TraceFormatError(
                        f"spans must cover the text in order: a span starts at {span.start}, "
                        f"expected {position}"
                    )
                position = span.end
            if position != len(self.text):
                raise TraceFormatError(
                    f"spans end at {position} but the text has {len(self.text)} characters"
                )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "text": self.text}
        if self.token_ids is not None:
            data["token_ids"] = list(self.token_ids)
        if self.logprobs is not None:
            data["logprobs"] = list(self.logprobs)
        if self.spans is not None:
            data["spans"] = [span.to_dict() for span in self.spans]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "segment") -> Segment:
        _require(data, ("kind", "text"), where)
        spans = data.get("spans")
        return _build(
            cls,
            where,
            kind=data["kind"],
            text=data["text"],
            token_ids=data.get("token_ids"),
            logprobs=data.get("logprobs"),
            spans=None
            if spans is None
            else [Span.from_dict(s, f"{where}.spans[{i}]") for i, s in enumerate(spans)],
        )


@dataclass
class Step:
    """One code block the kernel ran: its code, what it printed, and how it ended.

    ``outputs`` are nbformat v4 output dicts, ready for a notebook code cell.
    ``background_output`` is output that arrived while the block ran or before it but is not its
    own (a thread of an earlier block), or "".
    """

    index: int
    code: str
    status: StepStatus
    output_text: str
    outputs: list[dict[str, Any]]
    execution_count: int | None
    started: float
    duration_s: float
    new_files: list[str]
    restarted: bool = False
    background_output: str = ""

    def __post_init__(self) -> None:
        _check_choice(self.status, StepStatus, "step status")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_result(cls, index: int, code: str, result: Any) -> Step:
        """The step of block ``index`` from what running it gave (an ``ExecutionResult``)."""
        return cls(
            index=index,
            code=code,
            status=result.status,
            output_text=result.output_text,
            outputs=[dict(o) for o in result.outputs],
            execution_count=result.execution_count,
            started=result.started,
            duration_s=result.duration_s,
            new_files=result.new_files,
            restarted=result.restarted,
            background_output=result.background_output,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "step") -> Step:
        _require(data, _STEP_REQUIRED, where)
        fields = {key: data[key] for key in _STEP_REQUIRED}
        return _build(
            cls,
            where,
            **fields,
            restarted=data.get("restarted", False),
            background_output=data.get("background_output", ""),
        )


@dataclass
class Usage:
    """Token counts of a run: the prompt, what the model wrote, what the tool spliced in."""

    prompt_tokens: int = 0
    model_tokens: int = 0
    tool_tokens: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "usage") -> Usage:
        _require(data, (), where)
        keys = ("prompt_tokens", "model_tokens", "tool_tokens")
        return _build(cls, where, **{key: data[key] for key in keys if key in data})


@dataclass
class TrainingView:
    """A trace as the trainer sees it: prompt ids, completion ids, the loss mask, the logprobs.

    ``mask`` and ``logprobs`` have one entry per completion id. ``mask``: 1 where the model wrote
    it, 0 where the tool did. ``logprobs``: the sampler's recorded logprob of that id; NaN where
    none was recorded (tool tokens, a model segment whose ids were not recorded).
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    mask: list[int]
    logprobs: list[float]


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer the training view needs."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def apply_chat_template(
        self,
        conversation: list[dict[str, Any]],
        add_generation_prompt: bool = ...,
        tokenize: bool = ...,
    ) -> Any: ...


@dataclass
class Trace:
    """The record of one run: the prompt, the assistant turn as segments, the steps, how it ended.

    ``finish_reason`` is None while the run is in progress; ``to_json``/``from_json`` serialize it.
    """

    model: str
    sampler: dict[str, Any]
    messages: list[dict[str, Any]]
    profile: str = "markdown"
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: str = field(default_factory=_utc_now)
    format_version: int = FORMAT_VERSION
    prompt_token_ids: list[int] | None = None
    segments: list[Segment] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None
    finish_reason: FinishReason | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    timings: dict[str, float] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    reward: float | None = None

    def __post_init__(self) -> None:
        _check_version(self.format_version)
        if not isinstance(self.id, str) or not TRACE_ID_RE.fullmatch(self.id):
            raise TraceFormatError(
                f"trace id {self.id!r} must be letters, digits, '_', '-' or '.', "
                "not starting with '.'"
            )
        if not isinstance(self.sampler.get("name"), str):
            raise TraceFormatError(
                f"sampler must name itself, as {{'name': ...}}; got {self.sampler}"
            )
        if self.finish_reason is not None:
            _check_choice(self.finish_reason, FinishReason, "finish_reason")

    # -- serialization -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "id": self.id,
            "created": self.created,
            "model": self.model,
            "sampler": self.sampler,
            "profile": self.profile,
            "messages": self.messages,
            "prompt_token_ids": self.prompt_token_ids,
            "segments": [segment.to_dict() for segment in self.segments],
            "steps": [step.to_dict() for step in self.steps],
            "answer": self.answer,
            "finish_reason": self.finish_reason,
            "error": self.error,
            "usage": asdict(self.usage),
            "timings": self.timings,
            "labels": self.labels,
            "reward": self.reward,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trace:
        """Read a trace, checking its format version first and naming any missing key."""
        _require(data, ("format_version",), "trace")
        _check_version(data["format_version"])
        _require(data, _TRACE_REQUIRED, "trace")
        for i, message in enumerate(data["messages"]):
            _require(message, ("role", "content"), f"messages[{i}]")
        return _build(
            cls,
            "trace",
            id=data["id"],
            created=data["created"],
            format_version=data["format_version"],
            model=data["model"],
            sampler=dict(data["sampler"]),
            profile=data["profile"],
            messages=[dict(message) for message in data["messages"]],
            prompt_token_ids=data.get("prompt_token_ids"),
            segments=[
                Segment.from_dict(s, f"segments[{i}]") for i, s in enumerate(data["segments"])
            ],
            steps=[Step.from_dict(s, f"steps[{i}]") for i, s in enumerate(data["steps"])],
            answer=data.get("answer"),
            finish_reason=data["finish_reason"],
            error=data.get("error"),
            usage=Usage.from_dict(data.get("usage") or {}),
            timings=dict(data.get("timings") or {}),
            labels=dict(data.get("labels") or {}),
            reward=data.get("reward"),
        )

    def to_json(self) -> str:
        """One line of strict JSON (no NaN or Infinity), so any JSON reader can load it.

        The line is bounded: a step whose JSON is over ``STEP_BYTES`` has its outputs cut
        (rich data to its text, long texts to head and tail, with a marker output), and the
        largest steps are cut further while the line is over ``LINE_BYTES``. The trace itself
        is not changed; code, output_text and segments are kept whole.
        """
        data = self.to_dict()
        steps = data["steps"]
        sizes = [len(_dumps(step)) for step in steps]
        for i, size in enumerate(sizes):
            if size > STEP_BYTES:
                steps[i] = _cut_outputs(steps[i], size, STEP_BYTES)
                sizes[i] = len(_dumps(steps[i]))
        room = LINE_BYTES - len(_dumps({**data, "steps": []}))
        while sizes and sum(sizes) > room:
            i = max(range(len(sizes)), key=sizes.__getitem__)
            target = max(room // len(sizes), 0)
            if sizes[i] <= target:
                break  # what is left is not outputs: nothing more to cut
            cut = _cut_outputs(steps[i], sizes[i], target)
            new_size = len(_dumps(cut))
            if new_size >= sizes[i]:
                break
            steps[i], sizes[i] = cut, new_size
        return _dumps(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Trace:
        """Read a trace from its JSON text; invalid JSON is a ``TraceFormatError`` too."""
        try:
            data = json.loads(text)
        except ValueError as error:
            raise TraceFormatError(f"not valid JSON: {error}") from None
        return cls.from_dict(data)

    # -- views -------------------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The assistant turn: every segment's text, in order."""
        return "".join(segment.text for segment in self.segments)

    @property
    def question(self) -> str | None:
        """The last user message: what this run was asked."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return str(message.get("content", ""))
        return None

    def to_notebook(self) -> NotebookNode:
        """A notebook of the run: the question, thinking as markdown, code cells with real outputs.

        Cells come from the model segments' spans; tool segments need no cells of their own.
        """
        notebook = nbformat.v4.new_notebook()
        notebook.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        notebook.metadata["language_info"] = {"name": "python"}
        notebook.metadata["kernel_bridge"] = {"trace_id": self.id, "model": self.model}
        if self.question is not None:
            notebook.cells.append(nbformat.v4.new_markdown_cell(f"**Question:** {self.question}"))
        cells = _NotebookCells()
        for piece in trace_pieces(self):
            cells.add(piece)
        notebook.cells.extend(cells.finish())
        return notebook

    def training_view(self, tokenizer: Tokenizer) -> TrainingView:
        """Prompt ids, completion ids, loss mask and recorded logprobs, built segment by segment.

        Recorded token ids are used as they are; the joined text is never re-tokenized, because
        tokenizing a concatenation can merge tokens across a segment boundary. A segment's
        logprobs stay with its own ids, so each value sits at the token it was recorded for.
        """
        if self.prompt_token_ids is not None:
            prompt_ids = list(self.prompt_token_ids)
        else:
            prompt_ids = _token_list(
                tokenizer.apply_chat_template(
                    self.messages, add_generation_prompt=True, tokenize=True
                )
            )
        completion_ids: list[int] = []
        mask: list[int] = []
        logprobs: list[float] = []
        for segment in self.segments:
            ids = segment.token_ids
            recorded = segment.logprobs if segment.kind == "model" and ids is not None else None
            if ids is None:
                ids = tokenizer.encode(segment.text, add_special_tokens=False)
            completion_ids.extend(ids)
            mask.extend([1 if segment.kind == "model" else 0] * len(ids))
            logprobs.extend(recorded if recorded else [math.nan] * len(ids))
        return TrainingView(prompt_ids, completion_ids, mask, logprobs)


def _check_version(version: Any) -> None:
    if type(version) is not int or version != FORMAT_VERSION:
        raise TraceFormatError(
            f"unsupported trace format_version {version!r}: this kernel-bridge reads version "
            f"{FORMAT_VERSION}; read the trace with the kernel-bridge release that wrote it"
        )


def _token_list(result: Any) -> list[int]:
    # Newer transformers return a BatchEncoding (a mapping) from apply_chat_template.
    if isinstance(result, Mapping):
        result = result["input_ids"]
    return [int(token) for token in result]


def _blockquote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


@dataclass(frozen=True)
class TracePiece:
    """One piece of a saved trace's model text, in order: prose of a section, or a code block.

    ``kind`` is the span's (``think``, ``answer``, ``text``, ``code``); ``section`` the prose
    section a code block sits in; ``step`` the index a code block's span names, and ``ran`` that
    step when the trace holds it. ``whole_segment``: a segment written before spans existed.
    """

    kind: str
    text: str
    section: str
    step: int | None = None
    ran: Step | None = None
    whole_segment: bool = False


def trace_pieces(trace: Trace) -> Iterator[TracePiece]:
    """The model segments of ``trace`` cut by their spans, markup left out: the one walk that the
    notebook export, the terminal and the JupyterLab sidebar (``fromTrace``) show a trace by."""
    section = "text"
    for segment in trace.segments:
        if segment.kind != "model":
            continue  # tool segments are the steps' outputs
        if segment.spans is None:
            yield TracePiece("text", segment.text, "text", whole_segment=True)
            continue
        for span in segment.spans:
            text = segment.text[span.start : span.end]
            if span.kind == "markup":
                continue
            if span.kind != "code":
                section = span.kind
                yield TracePiece(span.kind, text, section)
                continue
            # A checkpoint may hold a span whose step has not been recorded yet.
            ran = None
            if span.step is not None and 0 <= span.step < len(trace.steps):
                ran = trace.steps[span.step]
            yield TracePiece("code", text, section, span.step, ran)


class _NotebookCells:
    """Turns a trace's pieces into notebook cells.

    Prose (think and text) gathers into one markdown cell until a code cell or the answer breaks it.
    """

    def __init__(self) -> None:
        self.cells: list[NotebookNode] = []
        self.prose: list[tuple[str, str]] = []  # (span kind, text) not yet in a cell

    def add(self, piece: TracePiece) -> None:
        if piece.whole_segment:  # written before spans existed: keep the text as it is
            self._flush()
            self._markdown(piece.text.strip())
            return
        if piece.kind == "code":
            if piece.step is None and self._in_answer():
                # Code in the answer is the deliverable: it stays in the answer, unrun.
                self.prose.append(("answer_code", piece.text))
            else:
                self._flush()
                self.cells.append(self._code_cell(piece))
            return
        if self.prose and self._in_answer() != (piece.kind == "answer"):
            self._flush()
        self.prose.append((piece.kind, piece.text))

    def finish(self) -> list[NotebookNode]:
        self._flush()
        return self.cells

    def _in_answer(self) -> bool:
        return bool(self.prose) and self.prose[0][0] == "answer"

    def _flush(self) -> None:
        pieces, self.prose = self.prose, []
        if not pieces:
            return
        if pieces[0][0] == "answer":
            body = "".join(
                f"\n```python\n{text.strip(chr(10))}\n```\n" if kind == "answer_code" else text
                for kind, text in pieces
            ).strip()
            if body:
                self._markdown(f"**Answer**\n\n{body}")
            return
        blocks = []
        for kind, group in itertools.groupby(pieces, key=lambda piece: piece[0]):
            text = "".join(text for _, text in group).strip()
            if text:
                blocks.append(_blockquote(text) if kind == "think" else text)
        self._markdown("\n\n".join(blocks))

    def _markdown(self, source: str) -> None:
        if source:
            self.cells.append(nbformat.v4.new_markdown_cell(source))

    def _code_cell(self, piece: TracePiece) -> NotebookNode:
        cell = nbformat.v4.new_code_cell(piece.text.rstrip("\n"))
        step = piece.ran
        if step is not None:
            cell.outputs = [nbformat.from_dict(output) for output in step.outputs]
            cell.execution_count = step.execution_count
            cell.metadata["kernel_bridge"] = {"step": piece.step, "status": step.status}
        return cell


class TraceStore:
    """Traces in a ``.jsonl`` file, one per line, kept valid across crashes.

    A run in progress is checkpointed to ``<path>.inprogress/<id>.json``; ``append`` writes the
    finished trace and removes its checkpoint. Appending a trace again updates it (last line wins).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.checkpoint_dir = self.path.with_name(self.path.name + ".inprogress")

    def check_writable(self) -> None:
        """Fail now, before a run, if traces cannot be written here (a ``TraceStoreError`` that
        names the path and why): a directory, a path below a regular file, a read-only place.

        Creates the missing parent directories and nothing else.
        """
        path = self.path
        if path.is_dir():
            raise TraceStoreError(
                f"cannot write traces to {path}: it is a directory; name a file in it, "
                f"e.g. {path / 'traces.jsonl'}"
            )
        for parent in path.parents:
            if parent.exists() or parent.is_symlink():
                if not parent.is_dir():
                    raise TraceStoreError(
                        f"cannot write traces to {path}: {parent} is a file, not a directory"
                    )
                break
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # The directory must take new files (checkpoints); the file, appended lines.
            fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
            os.close(fd)
            os.unlink(probe)
            if path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        except OSError as e:
            where = f" ({e.filename})" if e.filename and str(e.filename) != str(path) else ""
            raise TraceStoreError(
                f"cannot write traces to {path}: {e.strerror or e}{where}"
            ) from None

    def append(self, trace: Trace) -> None:
        """Write the trace as one line, durably, then drop its checkpoint.

        Appenders (threads or processes) take turns under an exclusive lock on the file, and each
        line is written in one call, so lines never interleave.
        """
        line = (trace.to_json() + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self._repair_tail(fd) + line
            while data:  # one write; the loop only guards against a short write
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)  # also releases the lock
        self.discard_checkpoint(trace.id)

    def discard_checkpoint(self, trace_id: str) -> None:
        """Remove a run's checkpoint (once its trace is saved, here or elsewhere)."""
        self._checkpoint_path(trace_id).unlink(missing_ok=True)

    def checkpoint(self, trace: Trace) -> None:
        """Save a run in progress atomically, so a crash leaves its latest state recoverable."""
        path = self._checkpoint_path(trace.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{trace.id}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(trace.to_json().encode())
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def __iter__(self) -> Iterator[Trace]:
        """Every trace: the file's lines (latest version of each id), then orphaned checkpoints.

        A checkpoint with no line is a run that never finished; it is reported as ``interrupted``.
        A line that is not a valid trace is skipped with a ``CorruptLineWarning`` naming it.
        """
        traces: dict[str, Trace] = {}
        for trace in self._read_lines():
            traces[trace.id] = trace
        recovered = [trace for trace in self._read_checkpoints() if trace.id not in traces]
        yield from traces.values()
        yield from recovered

    def load(self) -> list[Trace]:
        """Every trace, as ``iter(store)`` yields them."""
        return list(self)

    def get(self, trace_id: str) -> Trace | None:
        """The latest version of the trace with this id, or None."""
        return next((trace for trace in self if trace.id == trace_id), None)

    def _checkpoint_path(self, trace_id: str) -> Path:
        return self.checkpoint_dir / f"{trace_id}.json"

    def _read_lines(self) -> Iterator[Trace]:
        try:
            file = self.path.open("rb")
        except FileNotFoundError:
            return
        with file:
            for number, raw in enumerate(file, 1):
                if not raw.strip():
                    continue
                try:
                    data = json.loads(raw)
                except ValueError as error:
                    if raw.endswith(b"\n"):
                        _skip(f"{self.path}, line {number}", f"not valid JSON ({error})")
                        continue
                    warnings.warn(
                        f"{self.path}, line {number}: skipped a partial last line "
                        f"({len(raw)} bytes) left by an interrupted write",
                        PartialLineWarning,
                        stacklevel=4,
                    )
                    return
                try:
                    trace = Trace.from_dict(data)
                except TraceFormatError as error:
                    _skip(f"{self.path}, line {number}", str(error))
                    continue
                yield trace

    def _read_checkpoints(self) -> list[Trace]:
        traces = []
        for path in self.checkpoint_dir.glob("*.json"):
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:  # its run was appended while we listed the directory
                continue
            try:
                trace = Trace.from_json(text)
            except TraceFormatError as error:
                _skip(str(path), str(error))
                continue
            if trace.finish_reason is None:
                trace.finish_reason = "interrupted"
            traces.append(trace)
        return sorted(traces, key=lambda trace: (trace.created, trace.id))

    def _repair_tail(self, fd: int) -> bytes:
        """Make the file end on a line boundary; returns what must be written before the new line.

        A tail without its newline is either a whole trace (then it only needs the newline) or a
        line cut short by a crash (then it is removed; its run's checkpoint still holds it).
        """
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return b""
        start = _start_of_last_line(fd, size)
        try:
            json.loads(os.pread(fd, size - start, start))
            return b"\n"
        except ValueError:
            pass
        os.ftruncate(fd, start)
        warnings.warn(
            f"{self.path}: removed a partial last line ({size - start} bytes) left by an "
            "interrupted write",
            PartialLineWarning,
            stacklevel=3,
        )
        return b""


def _skip(where: str, problem: str) -> None:
    warnings.warn(f"{where}: skipped, {problem}", CorruptLineWarning, stacklevel=5)


def _start_of_last_line(fd: int, size: int) -> int:
    end = size
    while end > 0:
        begin = max(0, end - 65536)
        newline = os.pread(fd, end - begin, begin).rfind(b"\n")
        if newline >= 0:
            return begin + newline + 1
        end = begin
    return 0


def fallback_path(trace_id: str) -> Path:
    """Where a run's trace goes when its own store cannot be written (a full disk, a directory
    removed mid-run): a file of its own in the temporary directory."""
    return Path(tempfile.gettempdir()) / f"kernel-bridge-unsaved-{trace_id}.jsonl"


def load_traces(path: str | os.PathLike[str]) -> list[Trace]:
    """All traces in a ``.jsonl`` file, with interrupted runs recovered from their checkpoints."""
    return TraceStore(path).load()
