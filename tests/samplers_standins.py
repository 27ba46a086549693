"""Samplers that stand in for a model in tests (each named as a stand-in)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from kernel_bridge.samplers import Delta, SampleRequest


class TurnsSamplerStandIn:
    """Streams ``turns[k]`` on the k-th call, ignoring stop strings (like an API without them)."""

    name = "turns-stand-in"

    def __init__(
        self,
        turns: list[str],
        chunk_size: int = 5,
        delay: float = 0.0,
        fail_after: int | None = None,
        token_ids: bool = False,
    ) -> None:
        self.turns = turns
        self.calls = 0
        self.chunk_size = chunk_size
        self.delay = delay
        self.fail_after = fail_after
        self.token_ids = token_ids
        self.emitted_ids: list[list[int]] = []
        self.closed = 0

    def params(self) -> dict[str, Any]:
        return {"chunk_size": self.chunk_size}

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        return [ord(c) for m in messages for c in f"<{m['role']}>{m['content']}"]

    def encode(self, text: str) -> list[int] | None:
        return [ord(c) for c in text] if self.token_ids else None

    async def stream(self, request: SampleRequest) -> AsyncIterator[Delta]:
        turn = self.turns[self.calls] if self.calls < len(self.turns) else ""
        self.calls += 1
        ids: list[int] = []
        self.emitted_ids.append(ids)
        sent = 0
        try:
            for i in range(0, len(turn), self.chunk_size):
                if self.fail_after is not None and sent >= self.fail_after:
                    raise ConnectionError("the model server went away mid-stream")
                await asyncio.sleep(self.delay)
                piece = turn[i : i + self.chunk_size]
                sent += len(piece)
                delta_ids = [ord(c) for c in piece] if self.token_ids else None
                if delta_ids:
                    ids.extend(delta_ids)
                yield Delta(
                    piece,
                    token_ids=delta_ids,
                    logprobs=[-0.5] * len(piece) if self.token_ids else None,
                )
            yield Delta("", finish_reason="stop")
        finally:
            self.closed += 1
