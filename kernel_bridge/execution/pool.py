"""``KernelPool``: warm kernels for rollouts, each used once and then replaced by a fresh one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from kernel_bridge.execution.kernel import Kernel
from kernel_bridge.execution.result import KernelError


class KernelPool:
    """Keeps ``size`` warm kernels; each is used by one holder and then replaced by a fresh one.

    ``async with pool.acquire() as kernel:`` waits for a warm kernel (at most ``size`` exist at
    once) that is still alive (a warm kernel that died is replaced, never handed out); on exit
    the used kernel is shut down and a new one started in the background.
    """

    def __init__(self, size: int = 4, **kernel_options: Any) -> None:
        if size < 1:
            raise ValueError(f"KernelPool size must be at least 1, got {size}")
        self.size = size
        self.kernel_options = kernel_options
        self._ready: asyncio.Queue[Kernel] = asyncio.Queue()
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self._errors: list[BaseException] = []
        self._in_use: set[Kernel] = set()

    async def start(self) -> KernelPool:
        """Start the pool's kernels (concurrently) and return once all are warm."""
        await asyncio.gather(*(self._add_kernel() for _ in range(self.size)))
        return self

    async def _add_kernel(self) -> None:
        kernel = Kernel(**self.kernel_options)
        try:
            await kernel.start()
        except BaseException as e:
            self._errors.append(e)
            raise
        if self._closed:
            await kernel.shutdown()
        else:
            self._ready.put_nowait(kernel)

    @property
    def warm(self) -> int:
        return self._ready.qsize()

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Kernel]:
        if self._closed:
            raise KernelError("the kernel pool is closed")
        if self._errors and self._ready.empty() and not self._background:
            raise KernelError(f"the kernel pool cannot start kernels: {self._errors[-1]}")
        while True:
            kernel = await self._ready.get()
            if await kernel.is_alive():
                break
            # Died while warm (killed, out of memory): replace it, and wait for a live one.
            self._spawn(self._recycle(kernel))
        self._in_use.add(kernel)
        try:
            yield kernel
        finally:
            self._in_use.discard(kernel)
            self._spawn(self._recycle(kernel))

    async def _recycle(self, kernel: Kernel) -> None:
        await kernel.shutdown()
        if not self._closed:
            await self._add_kernel()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Shut down every kernel of the pool, warm, in use or starting."""
        self._closed = True
        await asyncio.gather(*list(self._background), return_exceptions=True)
        kernels = list(self._in_use)
        while not self._ready.empty():
            kernels.append(self._ready.get_nowait())
        await asyncio.gather(*(k.shutdown() for k in kernels), return_exceptions=True)

    async def __aenter__(self) -> KernelPool:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ["KernelPool"]
