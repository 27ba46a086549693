"""Runs inside the kernel: bounds what one block sends to the client, before it leaves the kernel.

``Kernel`` sends this file's source as silent code after every start and restart (a remote kernel
needs nothing installed); it needs ipykernel and only the standard library. It is not a security
boundary (model code can undo it): the client's ``OutputCollector`` bounds what it keeps whatever
arrives. What it gives:

- **Less traffic.** A stream keeps its first ``store_cap / 2`` characters and its last, sent when
  the block ends (or before its next display); a block sends at most ``max_outputs`` displays and
  ``max_output_bytes`` of display data. A Jupyter server's IOPub rate limit (1 MB/s by default)
  then drops nothing, and the client parses kilobytes instead of gigabytes. What was left out is
  said by a display whose ``text/plain`` reads like the client's own markers and whose
  ``application/vnd.kernel-bridge.omitted+json`` says how much.
- **A count.** ``report()`` (asked for in the execute request's ``user_expressions``, so it comes
  back on the reliable shell channel) says how many outputs the block sent: fewer arriving means
  some were lost on the way.
- **Background output.** A thread that was running before the block started (an earlier block's)
  prints under a parent header of its own, ``kernel-bridge-background``, so the client does not
  take it for the block's output; so does every thread between blocks.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import threading
import types
from typing import Any

MIME = "application/vnd.kernel-bridge.omitted+json"
BACKGROUND_ID = "kernel-bridge-background"
OUTPUT_TYPES = frozenset(
    {"stream", "display_data", "execute_result", "error", "update_display_data", "clear_output"}
)


def _shorten(text: str, cap: int) -> str:
    if len(text) <= cap:
        return text
    half = cap // 2
    return f"{text[:half]}\n[… {len(text) - cap:,} characters omitted …]\n{text[-half:]}"


def _cap_lines(lines: list[str], cap: int) -> list[str]:
    """The first and last of ``lines`` that fit in about ``cap`` characters (a traceback)."""
    if sum(len(line) for line in lines) <= cap:
        return lines
    lines = [_shorten(line, cap // 4) for line in lines]
    head: list[str] = []
    tail: list[str] = []
    used, i, j = 0, 0, len(lines) - 1
    while i <= j:  # alternately from both ends while there is room
        if used + len(lines[i]) > cap:
            break
        head.append(lines[i])
        used, i = used + len(lines[i]), i + 1
        if i > j or used + len(lines[j]) > cap:
            break
        tail.append(lines[j])
        used, j = used + len(lines[j]), j - 1
    left_out = j - i + 1
    middle = [f"[… {left_out:,} traceback lines omitted …]"] if left_out > 0 else []
    return head + middle + tail[::-1]


def _data_size(data: dict[str, Any]) -> int:
    total = 0
    for value in data.values():
        if isinstance(value, str):
            total += len(value)
        else:
            total += len(json.dumps(value, default=str))
    return total


def _parent_id(msg_or_type: Any, parent: Any) -> tuple[str, str | None]:
    if isinstance(msg_or_type, dict):
        header = msg_or_type.get("parent_header") or {}
        return str(msg_or_type.get("header", {}).get("msg_type", "")), header.get("msg_id")
    if isinstance(parent, dict):
        header = parent.get("header", parent)
        return str(msg_or_type), header.get("msg_id") if isinstance(header, dict) else None
    return str(msg_or_type), None


def _closure_cell(fn: Any, name: str) -> Any:
    """The closure cell of ``fn`` that holds variable ``name``, or None."""
    code = getattr(fn, "__code__", None)
    if code is None or fn.__closure__ is None or name not in code.co_freevars:
        return None
    return fn.__closure__[code.co_freevars.index(name)]


class _StreamCap:
    """One stream of one block: the head goes out as written, then the tail is held back."""

    def __init__(self, cap: int) -> None:
        self.head_left = cap // 2
        self.tail_cap = cap - cap // 2
        self.tail: list[str] = []
        self.tail_len = 0
        self.omitted = 0

    def take(self, text: str) -> str:
        """What of ``text`` to send now; the rest goes to the held tail."""
        if self.head_left >= len(text) and not self.tail:
            self.head_left -= len(text)
            return text
        now, text = text[: self.head_left], text[self.head_left :]
        self.head_left -= len(now)
        self.tail.append(text)
        self.tail_len += len(text)
        while self.tail_len > self.tail_cap:
            excess = self.tail_len - self.tail_cap
            first = self.tail[0]
            cut = min(excess, len(first))
            self.tail[0] = first[cut:]
            if not self.tail[0]:
                self.tail.pop(0)
            self.tail_len -= cut
            self.omitted += cut
        return now

    def release(self) -> tuple[int, str]:
        """(characters left out, held tail), and start holding afresh."""
        out = (self.omitted, "".join(self.tail))
        self.tail, self.tail_len, self.omitted = [], 0, 0
        return out


class Guard:
    def __init__(self, shell: Any, limits: dict[str, int]) -> None:
        self.shell = shell
        self.kernel = shell.kernel
        self.limits = limits
        self.lock = threading.RLock()
        self.local = threading.local()  # .inside: this thread is sending the guard's own output
        self.msg_id: str | None = None
        self.running = False
        self.cell_thread = threading.get_ident()
        self.known_threads: set[int | None] = set()
        self.background_omitted = 0
        self.background_sent = 0
        self._reset()
        self.streams = {name: getattr(sys, name) for name in ("stdout", "stderr")}
        self.writes: dict[str, Any] = {}  # the streams' own writes, under the guard's
        self._hook_streams()
        self.sessions = {id(s): s for s in self._sessions()}
        self.sends = {key: s.send for key, s in self.sessions.items()}
        for key, session in self.sessions.items():
            session.send = self._sender(self.sends[key])
        self.publish = shell.display_pub.publish
        shell.events.register("pre_execute", self.pre_execute)
        shell.events.register("post_execute", self.post_execute)

    def _sessions(self) -> list[Any]:
        found = [self.kernel.session, getattr(self.shell.display_pub, "session", None)]
        found.append(getattr(self.shell.displayhook, "session", None))
        found += [getattr(stream, "session", None) for stream in self.streams.values()]
        return [s for s in found if s is not None]

    def _reset(self) -> None:
        self.caps = {name: _StreamCap(self.limits["store_cap"]) for name in ("stdout", "stderr")}
        self.sent = 0
        self.displays = 0
        self.updates = 0
        self.size = 0
        self.omitted_outputs = 0  # not sent
        self.reduced_outputs = 0  # sent as a line of text
        self.omitted_bytes = 0
        self.pending_updates: dict[str, Any] = {}

    # -- block boundaries ---------------------------------------------------------------------

    def pre_execute(self) -> None:
        parent = self.kernel.get_parent() if hasattr(self.kernel, "get_parent") else {}
        self._hook_streams()
        with self.lock:
            self.msg_id = (parent or {}).get("header", {}).get("msg_id")
            self.cell_thread = threading.get_ident()
            self.known_threads = {t.ident for t in threading.enumerate()} - {self.cell_thread}
            self._reset()
            self.running = True

    def post_execute(self) -> None:
        self._release_streams()
        with self.lock:
            pending, self.pending_updates = self.pending_updates, {}
        for args in pending.values():  # the last state of each display updated past the cap
            self._own(self.publish, *args[0], **args[1])
        if self.omitted_outputs or self.reduced_outputs:
            n, cut, size = self.omitted_outputs, self.reduced_outputs, self.omitted_bytes
            text = (
                f"[… {n:,} outputs omitted, {cut:,} cut to their text ({size:,} characters): "
                f"a block keeps {self.limits['max_outputs']:,} outputs and "
                f"{self.limits['max_output_bytes']:,} characters …]"
            )
            info = {"outputs": n, "reduced": cut, "bytes": size}
            self._own(self.publish, {"text/plain": text, MIME: info})
            self.omitted_outputs = self.reduced_outputs = self.omitted_bytes = 0
        self._flush()
        with self.lock:
            self.running = False

    def report(self) -> dict[str, int]:
        """What this block sent, asked for by the client once the block has run."""
        self._flush()
        with self.lock:
            background, self.background_omitted = self.background_omitted, 0
            self.background_sent = 0  # the client takes what came so far with this result
            return {"sent": self.sent, "background_omitted": background}

    def _flush(self) -> None:
        for stream in self.streams.values():
            with contextlib.suppress(Exception):  # a closed stream: nothing to flush
                stream.flush()

    def _own(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``fn`` as the guard (its output is not capped again)."""
        self.local.inside = True
        try:
            return fn(*args, **kwargs)
        finally:
            self.local.inside = False

    def _release_streams(self) -> None:
        """Send what each stream held back: a marker for the middle left out, then the tail."""
        for name, cap in self.caps.items():
            with self.lock:
                omitted, tail = cap.release()
            if omitted:
                self._flush()
                text = f"[… {omitted:,} characters omitted …]"
                self._own(
                    self.publish,
                    {"text/plain": text, MIME: {"stream": name, "characters": omitted}},
                )
            if tail:
                self._own(self.writes[name], tail)
                self._flush()

    # -- streams ------------------------------------------------------------------------------

    def _is_background(self) -> bool:
        ident = threading.get_ident()
        if ident == self.cell_thread:
            return False
        return not self.running or ident in self.known_threads

    def _hook_streams(self) -> None:
        """Put the guard's write on stdout and stderr, under IPython's history recorder.

        While a cell runs, IPython replaces a stream's ``write`` with a recorder and puts back
        what it found when the cell ends; the guard goes in the recorder's closure, so it is
        what is put back, and stays between cells. Checked at the start of every block."""
        for name, stream in self.streams.items():
            current = stream.__dict__.get("write")
            if getattr(current, "kernel_bridge_guard", False):
                continue
            cell = _closure_cell(current, "original_write")
            if cell is not None:
                if not getattr(cell.cell_contents, "kernel_bridge_guard", False):
                    cell.cell_contents = self._writer(name, cell.cell_contents)
                continue
            stream.write = self._writer(
                name, current or functools.partial(type(stream).write, stream)
            )

    def _writer(self, name: str, write: Any) -> Any:
        self.writes.setdefault(name, write)
        stream = self.streams[name]

        def guarded_write(text: Any, *args: Any, **kwargs: Any) -> Any:
            if not isinstance(text, str) or getattr(self.local, "inside", False):
                return write(text, *args, **kwargs)
            if self._is_background():
                return self._background_write(stream, write, text)
            if not self.running:  # the kernel's own thread after the block: not capped here
                return write(text, *args, **kwargs)
            with self.lock:
                now = self.caps[name].take(text)
            if now:
                write(now)
            return len(text)

        guarded_write.kernel_bridge_guard = True  # type: ignore[attr-defined]
        return guarded_write

    def _background_write(self, stream: Any, write: Any, text: str) -> int:
        with self.lock:
            room = self.limits["background_cap"] - self.background_sent
            now = text[: max(room, 0)]
            self.background_sent += len(now)
            self.background_omitted += len(text) - len(now)
        if now and hasattr(stream, "set_thread_parent"):
            token = stream.set_thread_parent({"msg_id": BACKGROUND_ID, "msg_type": "background"})
            try:
                write(now)
            finally:
                stream.reset_thread_parent(token)
        elif now:
            write(now)
        return len(text)

    # -- every message the kernel sends -------------------------------------------------------

    def _sender(self, send: Any) -> Any:
        def guarded_send(
            stream: Any,
            msg_or_type: Any,
            content: Any = None,
            parent: Any = None,
            *args: Any,
            **kwargs: Any,
        ) -> Any:
            msg_type, parent_id = _parent_id(msg_or_type, parent)
            if parent_id is None or parent_id != self.msg_id:
                return send(stream, msg_or_type, content, parent, *args, **kwargs)
            if msg_type == "execute_reply":
                msg_or_type, content = self._cap_reply(msg_or_type, content)
            elif msg_type in OUTPUT_TYPES:
                inside = getattr(self.local, "inside", False)
                if (
                    msg_type != "stream"
                    and not inside
                    and threading.get_ident() == self.cell_thread
                ):
                    self._release_streams()  # the held tail goes before the next output
                if not inside:
                    kept = self._cap_output(msg_type, msg_or_type, content)
                    if kept is None:
                        return None
                    msg_or_type, content = kept
                with self.lock:
                    self.sent += 1
            return send(stream, msg_or_type, content, parent, *args, **kwargs)

        return guarded_send

    def _content(self, msg_or_type: Any, content: Any) -> dict[str, Any]:
        if isinstance(msg_or_type, dict):
            return dict(msg_or_type.get("content") or {})
        return dict(content or {})

    def _with(self, msg_or_type: Any, content: Any, new: dict[str, Any]) -> tuple[Any, Any]:
        if isinstance(msg_or_type, dict):
            return {**msg_or_type, "content": new}, content
        return msg_or_type, new

    def _cap_output(self, msg_type: str, msg_or_type: Any, content: Any) -> tuple[Any, Any] | None:
        """The message to send in place of this one, or None to leave it out."""
        if msg_type in ("stream", "clear_output"):
            return msg_or_type, content
        body = self._content(msg_or_type, content)
        limits = self.limits
        if msg_type == "error":
            body["evalue"] = _shorten(str(body.get("evalue", "")), limits["error_cap"])
            body["traceback"] = _cap_lines(
                [str(x) for x in body.get("traceback") or []], limits["traceback_cap"]
            )
            return self._with(msg_or_type, content, body)
        data = body.get("data") or {}
        size = _data_size(data)
        with self.lock:
            if msg_type == "update_display_data":
                self.updates += 1
                if self.updates > limits["max_outputs"]:  # keep only the last, sent at the end
                    display_id = (body.get("transient") or {}).get("display_id")
                    self.pending_updates[str(display_id)] = (
                        (data, body.get("metadata")),
                        {"transient": body.get("transient"), "update": True},
                    )
                    return None
            elif self.displays >= limits["max_outputs"]:
                self.omitted_outputs += 1
                self.omitted_bytes += size
                return None
            else:
                self.displays += 1
            if msg_type == "update_display_data":  # it replaces a display: its size alone
                over = size > limits["max_output_bytes"]
            else:
                over = self.size + size > limits["max_output_bytes"]
                self.size += 0 if over else size
            if over:
                self.reduced_outputs += 1
                self.omitted_bytes += size
                mimes = ", ".join(sorted(data))
                plain = data.get("text/plain")
                note = f"[{mimes} output of {size:,} characters omitted: over the block's limit]"
                if isinstance(plain, str) and plain and len(plain) <= 1000:
                    note = f"{plain}\n{note}"
                body["data"] = {"text/plain": note}
                return self._with(msg_or_type, content, body)
        return msg_or_type, content

    def _cap_reply(self, msg_or_type: Any, content: Any) -> tuple[Any, Any]:
        body = self._content(msg_or_type, content)
        if body.get("status") != "error":
            return msg_or_type, content
        body["evalue"] = _shorten(str(body.get("evalue", "")), self.limits["error_cap"])
        body["traceback"] = _cap_lines(
            [str(x) for x in body.get("traceback") or []], self.limits["traceback_cap"]
        )
        return self._with(msg_or_type, content, body)


def install(limits: dict[str, int]) -> None:
    """Put the guard in place in this kernel (once; a second call changes its limits)."""
    existing = sys.modules.get("_kernel_bridge_guard")
    if existing is not None and getattr(existing, "guard", None) is not None:
        existing.guard.limits = dict(limits)
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return
    guard = Guard(shell, dict(limits))
    guard.pre_execute()  # this silent execution is a block too
    module = types.ModuleType("_kernel_bridge_guard")
    module.guard = guard  # type: ignore[attr-defined]
    module.report = guard.report  # type: ignore[attr-defined]
    sys.modules["_kernel_bridge_guard"] = module


if __name__ == "_kernel_bridge_guard_install":
    install(LIMITS)  # type: ignore[name-defined]  # noqa: F821 - given by the installing code
