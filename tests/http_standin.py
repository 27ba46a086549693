"""ScriptedServer: what the HTTP stand-ins for tests share (``tests/openai_standin.py``, the
OpenAI chat server, and ``tests/vllm_standin.py``, vLLM's completions server).

A real HTTP server on 127.0.0.1, served from a background thread, that answers each request with
the next reply a test scripted (an HTTP 500 when the script has run out) and keeps an
``Exchange`` record of it: the request body, when each chunk left, and whether the client hung up
first. ``ScriptedHandler`` holds the wire plumbing: JSON bodies, and chunked server-sent events
that can pause, notice a hang-up, or drop the connection mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar


class Script(Protocol):
    """What the server reads of every scripted reply: with ``status`` other than 200 it is an
    error (``error_message``) before any chunk."""

    status: int
    error_message: str


@dataclass(kw_only=True)
class ScriptedExchange:
    """How one request went; each stand-in's ``Exchange`` adds what its protocol sent."""

    body: dict[str, Any]
    sent_at: list[float] = field(default_factory=list)  # time.monotonic() per content chunk
    completed: bool = False  # the whole reply (and [DONE]) was written
    disconnected: bool = False  # the client hung up before that
    disconnected_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event)


S = TypeVar("S", bound=Script)
E = TypeVar("E", bound=ScriptedExchange)


class ScriptedServer(Generic[S, E]):
    """The server; use as a context manager. A subclass sets ``handler`` (its protocol) and
    ``_unscripted`` (the 500 it answers once the script has run out)."""

    handler: ClassVar[type[ScriptedHandler]]

    def __init__(self, script: Iterable[S] = ()) -> None:
        self.script: deque[S] = deque(script)
        self.exchanges: list[E] = []
        self.lock = threading.Lock()
        handler = type("Handler", (self.handler,), {"server_standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """The OpenAI API base, ending in ``/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [e.body for e in self.exchanges]

    def add(self, *replies: S) -> None:
        with self.lock:
            self.script.extend(replies)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_done(self, index: int = -1, timeout: float = 5.0) -> E:
        """Wait until the server has finished with request ``index`` (sent all, or saw a hang-up).

        This blocks; on an event loop use ``await done(...)``, which lets the client's own
        callbacks (such as closing its socket) run meanwhile.
        """
        exchange = self.exchanges[index]
        if not exchange.done.wait(timeout):
            raise TimeoutError(f"request {index} still open after {timeout} s")
        return exchange

    async def done(self, index: int = -1, timeout: float = 5.0) -> E:
        """``wait_done`` for async tests."""
        return await asyncio.to_thread(self.wait_done, index, timeout)

    def _next_script(self) -> S:
        with self.lock:
            return self.script.popleft() if self.script else self._unscripted()

    def _unscripted(self) -> S:
        raise NotImplementedError


class ScriptedHandler(BaseHTTPRequestHandler):
    """The plumbing of a stand-in's request handler; a subclass speaks the protocol."""

    protocol_version = "HTTP/1.1"  # keep-alive, and chunked bodies so a dropped stream is an error
    server_standin: ScriptedServer[Any, Any]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            super().handle()  # a client may drop an idle keep-alive connection

    @staticmethod
    def _error_body(status: int, message: str) -> dict[str, Any]:
        """An error as the protocol writes it, for an HTTP ``status``."""
        raise NotImplementedError

    def _read_json(self) -> dict[str, Any]:
        """The request body; one that is not JSON comes back as ``{"_raw": text}``."""
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return {"_raw": raw.decode("utf-8", "replace")}

    def _serve(self, exchange: ScriptedExchange, script: Script, send: Callable[[], None]) -> None:
        """Record ``exchange`` and answer it: the scripted error status, else ``send()``. A client
        that hangs up meanwhile marks it disconnected; either way it ends ``done``."""
        standin = self.server_standin
        with standin.lock:
            standin.exchanges.append(exchange)
        try:
            if script.status != 200:
                self._send_json(
                    script.status, self._error_body(script.status, script.error_message)
                )
                exchange.completed = True
            else:
                send()
        except (BrokenPipeError, ConnectionResetError):
            exchange.disconnected = True
            exchange.disconnected_at = time.monotonic()
            self.close_connection = True
        finally:
            exchange.done.set()

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    # -- server-sent events ----------------------------------------------------------------------

    def _start_events(self, *headers: tuple[str, str]) -> None:
        """Send the status line and headers of a chunked event stream (``headers`` besides)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` before the next chunk; a client that closes the connection meanwhile
        raises ConnectionResetError at once rather than at the next write."""
        conn: socket.socket = self.connection
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([conn], [], [], left)
            if readable:
                try:
                    gone = conn.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    gone = True
                if gone:
                    raise ConnectionResetError("the client hung up")
                time.sleep(min(left, 0.01))  # pipelined bytes, not a hang-up

    def _event(self, payload: dict[str, Any]) -> None:
        self._write(b"data: " + json.dumps(payload).encode() + b"\n\n")

    def _write(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        """Hang up mid-body: the chunked body never ends, which the client sees as an error."""
        self.close_connection = True
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
