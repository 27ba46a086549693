"""Stand-ins for API servers, for tests: ``OpenAIStandIn`` (an OpenAI-compatible server: OpenAI,
vLLM, DeepSeek, SGLang, Ollama) and ``AnthropicStandIn`` (Anthropic's Messages API).

``OpenAIStandIn`` is a real HTTP server on 127.0.0.1 that speaks ``POST /v1/chat/completions``,
streaming (server-sent events: ``data: {chunk}`` lines with ``choices[0].delta.content``, a last
chunk with ``finish_reason``, then ``data: [DONE]``) and non-streaming. A reply's ``reasoning`` is
streamed first in the reasoning channel, the way DeepSeek and vLLM's ``--reasoning-parser`` send
it: ``delta.reasoning_content`` (``reasoning_key="reasoning"`` as newer vLLM and Ollama name it;
``null_content`` adds ``"content": null`` beside it, as DeepSeek does). ``AnthropicStandIn`` speaks
``POST /v1/messages`` and streams Anthropic's events: a ``thinking`` block (``thinking_delta``s,
then a ``signature_delta``) for the reasoning, then a ``text`` block.

Each test scripts a stand-in with a queue of ``Reply``s (text split into chunks, a delay before
each chunk, an HTTP error status before streaming, an error event or a dropped connection
mid-stream), and reads back every request body and whether the client hung up before the reply
was complete. It never reaches the network.
The server plumbing is ``ScriptedServer`` (``tests/http_standin.py``).
"""

from __future__ import annotations

import json
import threading
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
    drop_after: int | None = None  # close the connection after this many chunks (all kinds)
    reasoning: str = ""  # thinking, streamed in the reasoning channel before the text
    reasoning_chunks: list[str] | None = None  # explicit chunks of it
    reasoning_key: str = "reasoning_content"  # the delta's field: DeepSeek, vLLM; or "reasoning"
    null_content: bool = False  # reasoning deltas also carry "content": null (DeepSeek)
    # gates[i] is set by the test when it has chunk i; the server sends chunk i + 1 only then
    # (or after GATE_WAIT_S, counted in the exchange's ``gates_missed``).
    gates: list[threading.Event] | None = None

    def pieces(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        return _split(self.text, self.chunk_size)

    def reasoning_pieces(self) -> list[str]:
        if self.reasoning_chunks is not None:
            return list(self.reasoning_chunks)
        return _split(self.reasoning, self.chunk_size)

    def all_pieces(self) -> list[tuple[str, str]]:
        """``(kind, text)`` in the order they are sent: ``reasoning`` pieces, then ``text``."""
        return [("reasoning", p) for p in self.reasoning_pieces()] + [
            ("text", p) for p in self.pieces()
        ]


GATE_WAIT_S = 30.0  # how long a gated chunk waits for the client to have the one before


def _split(text: str, size: int) -> list[str]:
    n = max(1, size)
    return [text[i : i + n] for i in range(0, len(text), n)]


@dataclass(kw_only=True)
class Exchange(ScriptedExchange):
    """What happened to one request: its body, when each chunk left, and how it ended."""

    path: str
    headers: dict[str, str]
    reply: Reply
    gates_missed: int = 0  # chunks sent before the client had the one before


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
            self._send_json(200, self._completion(text, reply.finish_reason, reply.reasoning))
            exchange.completed = True

    # -- the streaming reply ---------------------------------------------------------------------

    def _stream(self, exchange: Exchange) -> None:
        reply = exchange.reply
        self._start_events(("Cache-Control", "no-cache"))
        self._event(self._chunk({"role": "assistant", "content": ""}, None))
        pieces = reply.all_pieces()
        for i, (kind, piece) in enumerate(pieces):
            if reply.drop_after is not None and i == reply.drop_after:
                self._drop()
                return
            if reply.error_after is not None and i == reply.error_after:
                self._event({"error": {"message": reply.error_message, "type": "server_error"}})
                self._end()
                exchange.completed = True
                return
            self._pause(reply.delay)
            if reply.gates is not None and i > 0 and not reply.gates[i - 1].wait(GATE_WAIT_S):
                exchange.gates_missed += 1
            if kind == "reasoning":
                delta: dict[str, Any] = {reply.reasoning_key: piece}
                if reply.null_content:
                    delta["content"] = None
            else:
                delta = {"content": piece}
            self._event(self._chunk(delta, None))
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

    def _completion(self, text: str, finish_reason: str, reasoning: str = "") -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if reasoning:
            message["reasoning_content"] = reasoning
        return {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.server_standin.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
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


# -- Anthropic's Messages API ----------------------------------------------------------------------

_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens"}


class _AnthropicHandler(ScriptedHandler):
    server_standin: AnthropicStandIn

    def do_POST(self) -> None:
        body = self._read_json()
        if not self.path.rstrip("/").endswith("/messages"):
            self._send_json(404, self._error_body(404, f"no route {self.path}"))
            return
        reply = self.server_standin._next_script()
        exchange = Exchange(
            body=body, path=self.path, headers=dict(self.headers.items()), reply=reply
        )
        self._serve(exchange, reply, lambda: self._stream(exchange))

    def _stream(self, exchange: Exchange) -> None:
        """Anthropic's event stream: message_start, a thinking block, a text block, the end."""
        reply = exchange.reply
        self._start_events(("Cache-Control", "no-cache"))
        model = self.server_standin.model
        self._send(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_standin",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": model,
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 1},
                },
            },
        )
        pieces = reply.all_pieces()
        block, index = None, -1  # the open content block's kind and index
        for i, (kind, piece) in enumerate(pieces):
            if reply.drop_after is not None and i == reply.drop_after:
                self._drop()
                return
            if reply.error_after is not None and i == reply.error_after:
                error = {"type": "api_error", "message": reply.error_message}
                self._send("error", {"type": "error", "error": error})
                self._end()
                exchange.completed = True
                return
            if kind != block:
                self._close_block(block, index)
                block, index = kind, index + 1
                start = (
                    {"type": "thinking", "thinking": "", "signature": ""}
                    if kind == "reasoning"
                    else {"type": "text", "text": ""}
                )
                self._send(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": start,
                    },
                )
            self._pause(reply.delay)
            delta = (
                {"type": "thinking_delta", "thinking": piece}
                if kind == "reasoning"
                else {"type": "text_delta", "text": piece}
            )
            self._send(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": delta,
                },
            )
            exchange.sent_at.append(time.monotonic())
        if reply.drop_after is not None and reply.drop_after >= len(pieces):
            self._drop()
            return
        self._close_block(block, index)
        self._send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": _ANTHROPIC_STOP.get(reply.finish_reason, "end_turn"),
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": 15},
            },
        )
        self._send("message_stop", {"type": "message_stop"})
        self._end()
        exchange.completed = True

    def _close_block(self, kind: str | None, index: int) -> None:
        if kind is None:
            return
        if kind == "reasoning":  # a thinking block ends with its signature
            delta = {"type": "signature_delta", "signature": "c2lnbmVkLWJ5LXRoZS1zdGFuZC1pbg=="}
            self._send(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": delta,
                },
            )
        self._send("content_block_stop", {"type": "content_block_stop", "index": index})

    def _send(self, event: str, payload: dict[str, Any]) -> None:
        self._write(f"event: {event}\ndata: ".encode() + json.dumps(payload).encode() + b"\n\n")

    @staticmethod
    def _error_body(status: int, message: str) -> dict[str, Any]:
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            404: "not_found_error",
            429: "rate_limit_error",
        }.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}


class AnthropicStandIn(ScriptedServer[Reply, Exchange]):
    """A stand-in for Anthropic's Messages API; use as a context manager. ``api_base`` is what
    LiteLLM's ``anthropic/…`` models take as ``api_base``."""

    handler = _AnthropicHandler

    def __init__(self, replies: list[Reply] | None = None, model: str = "claude-standin") -> None:
        self.model = model
        super().__init__(replies or [])

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _unscripted(self) -> Reply:
        return Reply(status=500, error_message="the stand-in has no scripted reply left")
