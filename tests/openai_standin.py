"""OpenAIStandIn: a stand-in for an OpenAI-compatible server (OpenAI, vLLM), for tests.

A real HTTP server on 127.0.0.1 that speaks ``POST /v1/chat/completions``, streaming (server-sent
events: ``data: {chunk}`` lines with ``choices[0].delta.content``, a last chunk with
``finish_reason``, then ``data: [DONE]``) and non-streaming. Each test scripts it with a queue of
``Reply``s (text split into chunks, a delay before each chunk, an HTTP error status before
streaming, an error event or a dropped connection mid-stream), and reads back every request body
and whether the client hung up before the reply was complete. It never reaches the network.
The server plumbing is ``ScriptedServer`` (``tests/http_standin.py``).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from tests.http_standin import ScriptedExchange, ScriptedHandler, ScriptedServer


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


@dataclass(kw_only=True)
class Exchange(ScriptedExchange):
    """What happened to one request: its body, when each chunk left, and how it ended."""

    path: str
    headers: dict[str, str]
    reply: Reply


class _Handler(ScriptedHandler):
    server_standin: OpenAIStandIn

    def do_POST(self) -> None:
        body = self._read_json()
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, self._error_body(404, f"no route {self.path}"))
            return
        reply = self.server_standin._next_script()
        exchange = Exchange(
            body=body, path=self.path, headers=dict(self.headers.items()), reply=reply
        )
        self._serve(exchange, reply, lambda: self._reply(exchange))

    def _reply(self, exchange: Exchange) -> None:
        if exchange.body.get("stream"):
            self._stream(exchange)
        else:
            reply = exchange.reply
            text = "".join(reply.pieces())
            self._send_json(200, self._completion(text, reply.finish_reason))
            exchange.completed = True

    # -- the streaming reply ---------------------------------------------------------------------

    def _stream(self, exchange: Exchange) -> None:
        reply = exchange.reply
        self._start_events(("Cache-Control", "no-cache"))
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
            self._pause(reply.delay)
            self._event(self._chunk({"content": piece}, None))
            exchange.sent_at.append(time.monotonic())
        if reply.drop_after is not None and reply.drop_after >= len(pieces):
            self._drop()
            return
        self._event(self._chunk({}, reply.finish_reason))
        self._write(b"data: [DONE]\n\n")
        self._end()
        exchange.completed = True

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

    @staticmethod
    def _error_body(status: int, message: str) -> dict[str, Any]:
        kind = {
            400: "invalid_request_error",
            401: "invalid_request_error",
            404: "not_found_error",
            429: "rate_limit_error",
        }.get(status, "server_error")
        code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class OpenAIStandIn(ScriptedServer[Reply, Exchange]):
    """The server; use as a context manager. ``base_url`` ends in ``/v1``."""

    handler = _Handler

    def __init__(self, replies: list[Reply] | None = None, model: str = "standin") -> None:
        self.model = model
        super().__init__(replies or [])

    @property
    def replies(self) -> deque[Reply]:
        """The replies not yet sent, next first."""
        return self.script

    def _unscripted(self) -> Reply:
        return Reply(status=500, error_message="the stand-in has no scripted reply left")
