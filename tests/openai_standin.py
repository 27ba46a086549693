"""OpenAIStandIn: a stand-in for an OpenAI-compatible server (OpenAI, vLLM), for tests.

A real HTTP server on 127.0.0.1 that speaks ``POST /v1/chat/completions``, streaming (server-sent
events: ``data: {chunk}`` lines with ``choices[0].delta.content``, a last chunk with
``finish_reason``, then ``data: [DONE]``) and non-streaming. Each test scripts it with a queue of
``Reply``s (text split into chunks, a delay before each chunk, an HTTP error status before
streaming, an error event or a dropped connection mid-stream), and reads back every request body
and whether the client hung up before the reply was complete. It never reaches the network.
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
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer; with ``status`` other than 200 it is an error before any chunk."""

    text: str = ""
    chunks: list[str] | None = None  # explicit chunks; else ``text`` in pieces of ``chunk_size``
    chunk_size: int = 4
    delay: float = 0.0  # seconds before each chunk
    finish_reason: str = "stop"
    status: int = 200
    error_message: str = "scripted error"
    error_after: int | None = None  # send an error event after this many chunks
    drop_after: int | None = None  # close the connection after this many chunks

    def pieces(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        n = max(1, self.chunk_size)
        return [self.text[i : i + n] for i in range(0, len(self.text), n)]


@dataclass
class Exchange:
    """What happened to one request: its body, when each chunk left, and how it ended."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    reply: Reply
    sent_at: list[float] = field(default_factory=list)  # time.monotonic() per content chunk
    completed: bool = False  # the whole reply (and [DONE]) was written
    disconnected: bool = False  # the client hung up before that
    disconnected_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event)


class OpenAIStandIn:
    """The server; use as a context manager. ``base_url`` ends in ``/v1``."""

    def __init__(self, replies: list[Reply] | None = None, model: str = "standin") -> None:
        self.model = model
        self.replies: deque[Reply] = deque(replies or [])
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        standin = self

        class Handler(_Handler):
            server_standin = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [e.body for e in self.exchanges]

    def add(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def start(self) -> OpenAIStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> OpenAIStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_done(self, index: int = -1, timeout: float = 5.0) -> Exchange:
        """Wait until the server has finished with request ``index`` (sent all, or saw a hang-up).

        This blocks; on an event loop use ``await done(...)``, which lets the client's own
        callbacks (such as closing its socket) run meanwhile.
        """
        exchange = self.exchanges[index]
        if not exchange.done.wait(timeout):
            raise TimeoutError(f"request {index} still open after {timeout} s")
        return exchange

    async def done(self, index: int = -1, timeout: float = 5.0) -> Exchange:
        """``wait_done`` for async tests."""
        return await asyncio.to_thread(self.wait_done, index, timeout)

    def _next_reply(self) -> Reply:
        with self._lock:
            if not self.replies:
                return Reply(status=500, error_message="the stand-in has no scripted reply left")
            return self.replies.popleft()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and chunked bodies so a dropped stream is an error
    server_standin: OpenAIStandIn

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            super().handle()  # a client may drop an idle keep-alive connection

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        standin = self.server_standin
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, _error(404, f"no route {self.path}"))
            return
        reply = standin._next_reply()
        exchange = Exchange(self.path, body, dict(self.headers.items()), reply)
        with standin._lock:
            standin.exchanges.append(exchange)
        try:
            if reply.status != 200:
                self._send_json(reply.status, _error(reply.status, reply.error_message))
                exchange.completed = True
            elif body.get("stream"):
                self._stream(exchange)
            else:
                text = "".join(reply.pieces())
                self._send_json(200, self._completion(text, reply.finish_reason))
                exchange.completed = True
        except (BrokenPipeError, ConnectionResetError):
            exchange.disconnected = True
            exchange.disconnected_at = time.monotonic()
            self.close_connection = True
        finally:
            exchange.done.set()

    # -- the streaming reply ---------------------------------------------------------------------

    def _stream(self, exchange: Exchange) -> None:
        reply = exchange.reply
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._event(self._chunk({"role": "assistant", "content": ""}, None))
        pieces = reply.pieces()
        for i, piece in enumerate(pieces):
            if reply.drop_after is not None and i == reply.drop_after:
                self._drop()
                return
            if reply.error_after is not None and i == reply.error_after:
                self._event({"error": {"message": reply.error_message, "type": "server_error"}})
                self._end()
                exchange.completed = True
                return
            if reply.delay and self._client_gone(reply.delay):
                raise ConnectionResetError("the client hung up")
            self._event(self._chunk({"content": piece}, None))
            exchange.sent_at.append(time.monotonic())
        if reply.drop_after is not None and reply.drop_after >= len(pieces):
            self._drop()
            return
        self._event(self._chunk({}, reply.finish_reason))
        self._write(b"data: [DONE]\n\n")
        self._end()
        exchange.completed = True

    def _client_gone(self, wait: float) -> bool:
        """Wait ``wait`` seconds, returning early (True) if the client closes the connection."""
        conn: socket.socket = self.connection
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([conn], [], [], left)
            if readable:
                try:
                    if conn.recv(1, socket.MSG_PEEK) == b"":
                        return True
                except OSError:
                    return True
                time.sleep(min(left, 0.01))  # pipelined bytes, not a hang-up
        return False

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

    # -- bodies ----------------------------------------------------------------------------------

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-standin",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.server_standin.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    def _completion(self, text: str, finish_reason: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.server_standin.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def _error(status: int, message: str) -> dict[str, Any]:
    kind = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }.get(status, "server_error")
    code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
