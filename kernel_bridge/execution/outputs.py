"""Kernel messages → notebook outputs and the model-facing output text.

Everything here is bounded: a block that prints 100 MB leaves a few hundred kilobytes in memory,
kept as head and tail with an explicit omission marker.
"""

from __future__ import annotations

import base64
import re
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from nbformat import NotebookNode, from_dict
from nbformat.v4 import output_from_msg

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_TB_RULE_RE = re.compile(r"^-{20,}$")


def strip_ansi(text: str) -> str:
    """Remove terminal colour and cursor escapes."""
    return ANSI_RE.sub("", text)


def omission_marker(n: int) -> str:
    return f"[… {n:,} characters omitted …]"


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
        return self._head_len + self._tail_len + self.omitted

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

    def __str__(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)
        if not self.omitted:
            return head + tail
        sep_l = "" if head.endswith("\n") else "\n"
        sep_r = "" if tail.startswith("\n") else "\n"
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


class OutputCollector:
    """Accumulates one execution's iopub messages.

    Produces nbformat outputs in order (consecutive stream chunks merged, each capped at
    ``store_cap`` characters), ``stdout``/``stderr``, and the model-facing text (``text_cap``).
    """

    def __init__(
        self,
        text_cap: int = 2000,
        store_cap: int = 200_000,
        on_output: Callable[[NotebookNode], None] | None = None,
    ) -> None:
        self.text = HeadTail(text_cap)
        self.stdout = HeadTail(store_cap)
        self.stderr = HeadTail(store_cap)
        self.store_cap = store_cap
        self.on_output = on_output
        self._outputs: list[NotebookNode] = []
        self._stream_buffers: dict[int, HeadTail] = {}  # index in _outputs → capped text
        self._display_index: dict[str, list[int]] = {}
        self._clear_pending = False
        self.execution_count: int | None = None
        self.error: tuple[str, str, list[str]] | None = None

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
        if msg_type not in (
            "stream",
            "display_data",
            "execute_result",
            "error",
            "update_display_data",
        ):
            return
        if self._clear_pending:
            self._clear()
        if msg_type == "update_display_data":
            self._update_display(content)
            return
        if msg_type == "stream" and self._continues_stream(content.get("name")):
            # Only its text matters: skip building (and schema-checking) a node for it.
            self._add_stream(content["name"], content.get("text", ""))
            if self.on_output is not None:
                self.on_output(
                    from_dict(
                        {
                            "output_type": "stream",
                            "name": content["name"],
                            "text": content.get("text", ""),
                        }
                    )
                )
            return
        out = output_from_msg(msg)
        if msg_type == "stream":
            self._add_stream(out.name, out.text, out)
        else:
            self._add_rich(out, content)
        if self.on_output is not None:
            self.on_output(out)

    def _clear(self) -> None:
        self._outputs.clear()
        self._stream_buffers.clear()
        self._display_index.clear()
        self._clear_pending = False

    def _continues_stream(self, name: str | None) -> bool:
        last = len(self._outputs) - 1
        return last in self._stream_buffers and self._outputs[last].name == name

    def _add_stream(self, name: str, text: str, out: NotebookNode | None = None) -> None:
        """Append stream text: to the last output if it is the same stream, else as ``out``."""
        (self.stdout if name == "stdout" else self.stderr).append(text)
        self.text.append(text)
        if out is None:
            self._stream_buffers[len(self._outputs) - 1].append(text)
            return
        buf = HeadTail(self.store_cap)
        buf.append(text)
        self._stream_buffers[len(self._outputs)] = buf
        self._outputs.append(out)

    def _add_rich(self, out: NotebookNode, content: dict[str, Any]) -> None:
        if out.output_type == "error":
            tb = [strip_ansi(line) for line in content.get("traceback", [])]
            self.error = (content.get("ename", ""), content.get("evalue", ""), tb)
            self._append_line(short_traceback(content.get("traceback", [])))
        else:
            if out.output_type == "execute_result":
                self.execution_count = content.get("execution_count", self.execution_count)
            self._append_line(describe_data(content.get("data", {})))
            display_id = content.get("transient", {}).get("display_id")
            if display_id:
                self._display_index.setdefault(display_id, []).append(len(self._outputs))
        self._outputs.append(out)

    def _update_display(self, content: dict[str, Any]) -> None:
        display_id = content.get("transient", {}).get("display_id")
        for i in self._display_index.get(display_id, []):
            self._outputs[i].data = content.get("data", {})
            self._outputs[i].metadata = content.get("metadata", {})

    def _append_line(self, line: str) -> None:
        if not line:
            return
        if self.text.last_char not in ("", "\n"):
            self.text.append("\n")
        self.text.append(line + "\n")

    @property
    def outputs(self) -> list[NotebookNode]:
        for i, buf in self._stream_buffers.items():
            self._outputs[i].text = str(buf)
        return list(self._outputs)
