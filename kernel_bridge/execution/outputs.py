"""Kernel messages → notebook outputs and the model-facing output text.

Everything here is bounded, whatever the code emits (``OutputLimits``): a block that prints 100 MB
leaves a few hundred kilobytes in memory, kept as head and tail with an explicit omission marker; a
flood of displays keeps the first ``max_outputs`` and ``max_output_bytes`` and counts the rest; an
exception message and its traceback are cut to head and tail. What was left out is said in the
outputs (a marker output) and in the model's text (a note).
"""

from __future__ import annotations

import base64
import json
import re
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nbformat import NotebookNode, from_dict
from nbformat.v4 import output_from_msg

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_TB_RULE_RE = re.compile(r"^-{20,}$")

# A display the kernel-side guard (``_kernel_guard.py``) sends in place of what it left out; its
# text/plain says so to any Jupyter client, the JSON says how much to this collector.
OMITTED_MIME = "application/vnd.kernel-bridge.omitted+json"
OUTPUT_TYPES = frozenset(
    {"stream", "display_data", "execute_result", "error", "update_display_data", "clear_output"}
)


@dataclass(frozen=True)
class OutputLimits:
    """How much of one block's output is kept, whatever the code emits.

    Sizes of display data count characters of its JSON text (a byte each for ASCII, which HTML and
    base64 images are). Defaults: ``BlockSettings`` (``output_cap``, ``store_cap``,
    ``max_outputs``, ``max_output_bytes``) sets the first four.
    """

    text_cap: int = 2000  # characters of output the model reads (head and tail)
    store_cap: int = 200_000  # characters per stream output (head and tail)
    max_outputs: int = 200  # notebook outputs per block; an error is always kept
    max_output_bytes: int = 4 << 20  # display data, stream text and errors per block
    error_cap: int = 10_000  # characters of an exception message (head and tail)
    traceback_cap: int = 50_000  # characters of a traceback (first and last frames)
    background_cap: int = 20_000  # characters of background output kept per block

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def strip_ansi(text: str) -> str:
    """Remove terminal colour and cursor escapes."""
    return ANSI_RE.sub("", text)


def omission_marker(n: int) -> str:
    return f"[… {n:,} characters omitted …]"


def format_size(n: int) -> str:
    """``n`` bytes for a person: ``512 B``, ``12.3 kB``, ``480 MB``."""
    size = float(n)
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.3g} {unit}"
        size /= 1000
    return f"{size:.3g} GB"


def shorten(text: str, cap: int) -> str:
    """``text`` if it fits in ``cap`` characters, else its head and tail around a marker."""
    if len(text) <= cap:
        return text
    buf = HeadTail(cap)
    buf.append(text)
    return str(buf)


def cap_lines(lines: list[str], cap: int) -> list[str]:
    """At most about ``cap`` characters of ``lines`` (a traceback): the first and last lines,
    each line itself at most a quarter of ``cap``, and a line saying how many were left out."""
    if sum(map(len, lines)) <= cap:
        return list(lines)
    lines = [shorten(line, cap // 4) for line in lines]
    head: list[str] = []
    tail: list[str] = []
    used = 0
    i, j = 0, len(lines) - 1
    while i <= j:  # take alternately from both ends while there is room
        if used + len(lines[i]) > cap:
            break
        head.append(lines[i])
        used += len(lines[i])
        i += 1
        if i > j or used + len(lines[j]) > cap:
            break
        tail.append(lines[j])
        used += len(lines[j])
        j -= 1
    left_out = j - i + 1
    middle = [f"[… {left_out:,} traceback lines omitted …]"] if left_out > 0 else []
    return head + middle + tail[::-1]


def data_size(data: dict[str, Any]) -> int:
    """The size of a MIME bundle: characters of its values as JSON text."""
    total = 0
    for value in data.values():
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            total += sum(map(len, value))
        else:
            total += len(json.dumps(value, default=str))
    return total


class HeadTail:
    """A text buffer that keeps the first and last characters of what it is fed.

    Memory is bounded by ``cap`` whatever is appended; ``str()`` joins head and tail with an
    omission marker when something was dropped in between.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._head_cap = cap // 2
        self._tail_cap = cap - self._head_cap
        self._head: list[str] = []
        self._head_len = 0
        self._tail: deque[str] = deque()
        self._tail_len = 0
        self.omitted = 0
        self.last_char = ""

    def __len__(self) -> int:
        """Characters fed, kept or not."""
        return self._head_len + self._tail_len + self.omitted

    @property
    def kept(self) -> int:
        """Characters held."""
        return self._head_len + self._tail_len

    def append(self, text: str) -> None:
        if not text:
            return
        self.last_char = text[-1]
        room = self._head_cap - self._head_len
        if room > 0:
            self._head.append(text[:room])
            self._head_len += min(room, len(text))
            text = text[room:]
            if not text:
                return
        self._tail.append(text)
        self._tail_len += len(text)
        while self._tail_len > self._tail_cap:
            excess = self._tail_len - self._tail_cap
            first = self._tail[0]
            if len(first) <= excess:
                self._tail.popleft()
                self._tail_len -= len(first)
                self.omitted += len(first)
            else:
                self._tail[0] = first[excess:]
                self._tail_len -= excess
                self.omitted += excess

    def skip(self, n: int) -> None:
        """Count ``n`` characters left out here (by the kernel): what follows is tail.

        One gap is kept, so the text held between the head and this point joins it."""
        if n <= 0:
            return
        self._head_cap = self._head_len
        self.omitted += self._tail_len + n
        self._tail.clear()
        self._tail_len = 0

    def __str__(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)
        if not self.omitted:
            return head + tail
        sep_l = "" if not head or head.endswith("\n") else "\n"
        sep_r = "" if not tail or tail.startswith("\n") else "\n"
        return f"{head}{sep_l}{omission_marker(self.omitted)}{sep_r}{tail}"


def short_traceback(lines: list[str]) -> str:
    """IPython's traceback without colours or the ruler line, as a model should read it."""
    text = strip_ansi("\n".join(lines))
    kept = [ln for ln in text.splitlines() if not _TB_RULE_RE.match(ln.strip())]
    return "\n".join(kept).strip("\n")


def _png_size(b64: str) -> tuple[int, int] | None:
    try:
        head = base64.b64decode(b64[:44])
    except ValueError:
        return None
    if head[:8] != b"\x89PNG\r\n\x1a\n" or len(head) < 24:
        return None
    w, h = struct.unpack(">II", head[16:24])
    return w, h


def describe_data(data: dict[str, Any]) -> str:
    """One line of text for a rich output (what the model reads of a figure or a table)."""
    for mime in ("image/png", "image/jpeg", "image/svg+xml", "image/gif"):
        if mime in data:
            size = _png_size(data[mime]) if mime == "image/png" else None
            dims = f" {size[0]}×{size[1]}" if size else ""
            alt = data.get("text/plain", "")
            alt = f" {alt}" if alt and len(alt) < 200 else ""
            return f"[image {mime}{dims}]{alt}"
    if "text/plain" in data:
        return str(data["text/plain"])
    if data:
        return f"[{', '.join(sorted(data))} output]"
    return ""


class Omitted:
    """What a block's outputs left out: outputs dropped, outputs cut to a line, their size."""

    def __init__(self) -> None:
        self.dropped = 0
        self.reduced = 0
        self.size = 0

    def __bool__(self) -> bool:
        return bool(self.dropped or self.reduced)

    def describe(self, limits: OutputLimits) -> str:
        parts = []
        if self.dropped:
            parts.append(f"{self.dropped:,} outputs omitted")
        if self.reduced:
            parts.append(f"{self.reduced:,} cut to their text")
        return (
            f"[… {' and '.join(parts)} ({format_size(self.size)}): a block keeps "
            f"{limits.max_outputs:,} outputs and {format_size(limits.max_output_bytes)} …]"
        )


class OutputCollector:
    """Accumulates one execution's iopub messages, within ``OutputLimits``.

    Produces nbformat outputs in order (consecutive stream chunks merged, each capped at
    ``store_cap`` characters; at most ``max_outputs`` outputs and ``max_output_bytes`` of them,
    then a marker output), ``stdout``/``stderr``, and the model-facing text (``text_cap``).
    ``on_output`` sees each output that is kept, as it arrives.
    """

    def __init__(
        self,
        limits: OutputLimits | None = None,
        on_output: Callable[[NotebookNode], None] | None = None,
    ) -> None:
        self.limits = limits = limits or OutputLimits()
        self.text = HeadTail(limits.text_cap)
        self.stdout = HeadTail(limits.store_cap)
        self.stderr = HeadTail(limits.store_cap)
        self.on_output = on_output
        self.execution_count: int | None = None
        self.error: tuple[str, str, list[str]] | None = None
        self._outputs: list[NotebookNode] = []
        self._stream_buffers: dict[int, HeadTail] = {}  # index in _outputs → capped text
        self._sizes: dict[int, int] = {}  # index in _outputs → size of a rich output
        self._display_index: dict[str, list[int]] = {}
        self._dropped_stream: str | None = None  # a stream whose new output was left out
        self._clear_pending = False
        self.omitted = Omitted()

    def handle(self, msg: dict[str, Any]) -> None:
        """Take one iopub message of this execution."""
        msg_type = msg["header"]["msg_type"]
        content = msg["content"]
        if msg_type == "execute_input":
            self.execution_count = content.get("execution_count")
            return
        if msg_type == "clear_output":
            if content.get("wait"):
                self._clear_pending = True
            else:
                self._clear()
            return
        if msg_type not in OUTPUT_TYPES:
            return
        data = content.get("data") or {}
        if msg_type == "display_data" and OMITTED_MIME in data:
            self._fold_marker(data[OMITTED_MIME])
            return
        if self._clear_pending:
            self._clear()
        if msg_type == "stream":
            self._add_stream(str(content.get("name", "stdout")), str(content.get("text", "")))
        elif msg_type == "update_display_data":
            self._update_display(content)
        elif msg_type == "error":
            self._add_error(content)
        else:
            self._add_rich(msg, content)

    # -- streams ------------------------------------------------------------------------------

    def _add_stream(self, name: str, text: str) -> None:
        (self.stdout if name == "stdout" else self.stderr).append(text)
        self.text.append(text)
        last = len(self._outputs) - 1
        if last in self._stream_buffers and self._outputs[last].name == name:
            self._stream_buffers[last].append(text)
            self._emit({"output_type": "stream", "name": name, "text": text})
            return
        if self._dropped_stream == name or not self._room(min(len(text), self.limits.store_cap)):
            if self._dropped_stream != name:
                self.omitted.dropped += 1
                self._dropped_stream = name
            self.omitted.size += len(text)
            return
        self._dropped_stream = None
        buf = HeadTail(self.limits.store_cap)
        buf.append(text)
        self._stream_buffers[len(self._outputs)] = buf
        out = from_dict({"output_type": "stream", "name": name, "text": text})
        self._outputs.append(out)
        self._emit_node(out)

    def _fold_marker(self, info: Any) -> None:
        """What the kernel-side guard left out, added to what this collector counts."""
        if not isinstance(info, dict):
            return
        chars = _count(info.get("characters"))
        name = info.get("stream")
        if chars and name in ("stdout", "stderr"):
            (self.stdout if name == "stdout" else self.stderr).skip(chars)
            self.text.skip(chars)
            for i in sorted(self._stream_buffers, reverse=True):
                if self._outputs[i].name == name:
                    self._stream_buffers[i].skip(chars)
                    break
        self.omitted.dropped += _count(info.get("outputs"))
        self.omitted.reduced += _count(info.get("reduced"))
        self.omitted.size += _count(info.get("bytes"))

    # -- displays, results, errors ------------------------------------------------------------

    def _add_rich(self, msg: dict[str, Any], content: dict[str, Any]) -> None:
        self._dropped_stream = None
        data = content.get("data") or {}
        size = data_size(data)
        if len(self._outputs) >= self.limits.max_outputs:
            self.omitted.dropped += 1
            self.omitted.size += size
            return
        if msg["header"]["msg_type"] == "execute_result":
            self.execution_count = content.get("execution_count", self.execution_count)
        self._append_line(describe_data(data))
        if not self._room(size):
            msg = {**msg, "content": {**content, "data": self._reduce(data, size)}}
            size = data_size(msg["content"]["data"])
        out = output_from_msg(msg)
        display_id = (content.get("transient") or {}).get("display_id")
        if display_id:
            self._display_index.setdefault(display_id, []).append(len(self._outputs))
        self._sizes[len(self._outputs)] = size
        self._outputs.append(out)
        self._emit_node(out)

    def _reduce(self, data: dict[str, Any], size: int) -> dict[str, Any]:
        """A bundle too big for what is left of the block's budget, as one line of text."""
        self.omitted.reduced += 1
        self.omitted.size += size
        mimes = ", ".join(sorted(data))
        note = f"[{mimes} output of {format_size(size)} omitted: over the block's limit]"
        plain = data.get("text/plain")
        if isinstance(plain, str) and plain and len(plain) <= 1000:
            note = f"{plain}\n{note}"
        return {"text/plain": note}

    def _add_error(self, content: dict[str, Any]) -> None:
        self._dropped_stream = None
        limits = self.limits
        raw_tb = [str(line) for line in content.get("traceback") or []]
        tb = cap_lines(raw_tb, limits.traceback_cap)
        ename = shorten(str(content.get("ename", "")), 200)
        evalue = shorten(str(content.get("evalue", "")), limits.error_cap)
        self.error = (ename, evalue, [strip_ansi(line) for line in tb])
        self._append_line(short_traceback(tb))
        out = from_dict({"output_type": "error", "ename": ename, "evalue": evalue, "traceback": tb})
        self._sizes[len(self._outputs)] = len(evalue) + sum(map(len, tb))
        self._outputs.append(out)  # kept past max_outputs: the error is what matters most
        self._emit_node(out)

    def _update_display(self, content: dict[str, Any]) -> None:
        display_id = str((content.get("transient") or {}).get("display_id"))
        data = content.get("data") or {}
        size = data_size(data)
        for i in self._display_index.get(display_id, []):
            self._sizes[i] = 0  # the update replaces it
            if self._room(size):
                self._outputs[i].data = data
                self._sizes[i] = size
            else:
                self._outputs[i].data = self._reduce(data, size)
                self._sizes[i] = data_size(self._outputs[i].data)
            self._outputs[i].metadata = content.get("metadata", {})

    # -- bookkeeping --------------------------------------------------------------------------

    def _room(self, size: int) -> bool:
        """Whether one more output of ``size`` fits in the block's count and size limits."""
        if len(self._outputs) >= self.limits.max_outputs:
            return False
        kept = sum(self._sizes.values()) + sum(b.kept for b in self._stream_buffers.values())
        return kept + size <= self.limits.max_output_bytes

    def _emit(self, output: dict[str, Any]) -> None:
        if self.on_output is not None:
            self.on_output(from_dict(output))

    def _emit_node(self, out: NotebookNode) -> None:
        if self.on_output is not None:
            self.on_output(out)

    def _clear(self) -> None:
        """What ``clear_output`` does: the outputs so far, and what they left out, are gone."""
        self._outputs = []
        self._stream_buffers = {}
        self._sizes = {}
        self._display_index = {}
        self._dropped_stream = None
        self._clear_pending = False
        self.omitted = Omitted()

    def _append_line(self, line: str) -> None:
        if not line:
            return
        if self.text.last_char not in ("", "\n"):
            self.text.append("\n")
        self.text.append(line + "\n")

    def notes(self) -> list[str]:
        """Lines for the model about what the outputs left out."""
        return [self.omitted.describe(self.limits)] if self.omitted else []

    @property
    def outputs(self) -> list[NotebookNode]:
        """The kept outputs, then a marker output when some were left out."""
        for i, buf in self._stream_buffers.items():
            self._outputs[i].text = str(buf)
        outputs = list(self._outputs)
        if self.omitted:
            outputs.append(omitted_output(self.omitted.describe(self.limits)))
        return outputs


def omitted_output(note: str) -> NotebookNode:
    """A display output that says what was left out (text for any notebook viewer)."""
    return from_dict(
        {
            "output_type": "display_data",
            "data": {"text/plain": note},
            "metadata": {"kernel_bridge": {"omitted": True}},
        }
    )


class BackgroundOutput:
    """Output that belongs to no block: printed by a thread of an earlier block, or arriving
    after its block ended. Kept as bounded text (head and tail), taken by the next result."""

    def __init__(self, cap: int = 20_000) -> None:
        self.cap = cap
        self._text = HeadTail(cap)

    def __len__(self) -> int:
        return len(self._text)

    def handle(self, msg: dict[str, Any]) -> None:
        msg_type = msg["header"]["msg_type"]
        content = msg["content"]
        if msg_type == "stream":
            self.add_text(str(content.get("text", "")))
            return
        data = content.get("data") or {}
        if OMITTED_MIME in data:
            info = data[OMITTED_MIME]
            self._text.skip(_count(info.get("background")) if isinstance(info, dict) else 0)
        elif msg_type in ("display_data", "execute_result", "update_display_data"):
            self.add_line(describe_data(data))
        elif msg_type == "error":
            self.add_line(
                short_traceback(cap_lines([str(x) for x in content.get("traceback") or []], 2000))
            )

    def add_text(self, text: str) -> None:
        self._text.append(text)

    def add_line(self, line: str) -> None:
        if line:
            if self._text.last_char not in ("", "\n"):
                self._text.append("\n")
            self._text.append(line + "\n")

    def skip(self, n: int) -> None:
        self._text.skip(n)

    def take(self) -> str:
        """The text so far, and start again."""
        text = str(self._text) if len(self._text) else ""
        self._text = HeadTail(self.cap)
        return text


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


__all__ = [
    "ANSI_RE",
    "OMITTED_MIME",
    "OUTPUT_TYPES",
    "BackgroundOutput",
    "HeadTail",
    "OutputCollector",
    "OutputLimits",
    "cap_lines",
    "data_size",
    "describe_data",
    "format_size",
    "omission_marker",
    "omitted_output",
    "short_traceback",
    "shorten",
    "strip_ansi",
]
