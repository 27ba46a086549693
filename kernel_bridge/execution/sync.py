"""Synchronous use of the async ``Kernel``: ``BlockingKernel``, and the ``LoopThread`` it runs on.

The kernel runs on a private event loop in a daemon thread, so this works where a loop already
runs in the caller's thread (inside Jupyter).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from nbformat import NotebookNode

from kernel_bridge.execution.kernel import Kernel
from kernel_bridge.execution.result import ExecutionResult

T = TypeVar("T")


class LoopThread:
    """An event loop in a daemon thread, for calling async code from synchronous code.

    Works where a loop is already running in the caller's thread (inside Jupyter), because the
    coroutines run on this private loop instead.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name="kernel-bridge-loop"
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        self.loop.close()


class BlockingKernel:
    """``Kernel`` for synchronous code: ``with BlockingKernel() as k: k.execute("1+1")``."""

    def __init__(self, **kwargs: Any) -> None:
        self._loop = LoopThread()
        self.kernel: Kernel = self._loop.run(_make_kernel(kwargs))

    def start(self) -> BlockingKernel:
        self._loop.run(self.kernel.start())
        return self

    def execute(
        self,
        code: str | bytes,
        timeout: float | None = None,
        on_output: Callable[[NotebookNode], None] | None = None,
    ) -> ExecutionResult:
        return self._loop.run(self.kernel.execute(code, timeout=timeout, on_output=on_output))

    def restart(self) -> None:
        self._loop.run(self.kernel.restart())

    def shutdown(self) -> None:
        try:
            self._loop.run(self.kernel.shutdown())
        finally:
            self._loop.close()

    def __enter__(self) -> BlockingKernel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


async def _make_kernel(kwargs: dict[str, Any]) -> Kernel:
    return Kernel(**kwargs)  # created on the loop thread, so its lock binds to that loop


__all__ = ["BlockingKernel", "LoopThread"]
