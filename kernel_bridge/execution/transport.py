"""How ``Kernel`` talks to a kernel process: the ``Transport`` protocol and ``LocalTransport``.

A transport only moves messages (execute requests out; shell and iopub replies in, through one
queue); timeouts, interrupts, restarts and outputs are ``Kernel``'s. ``RemoteTransport``
(``remote.py``) is the other implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeVar

import psutil
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

from kernel_bridge.execution.result import KernelError

T = TypeVar("T")

SECRET_NAME_RE = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE", re.IGNORECASE)


def scrub_environment(env: dict[str, str], allow: Iterable[str] = ()) -> dict[str, str]:
    """Drop variables whose names look like keys, tokens, secrets or passwords, unless allowed."""
    allowed = set(allow)
    return {k: v for k, v in env.items() if k in allowed or not SECRET_NAME_RE.search(k)}


async def queue_get(queue: asyncio.Queue[T], timeout: float) -> T:
    """The next item, at once if one is waiting; TimeoutError after ``timeout`` s (0: no wait)."""
    try:
        return queue.get_nowait()
    except asyncio.QueueEmpty:
        if timeout <= 0:
            raise TimeoutError from None
    async with asyncio.timeout(timeout):
        return await queue.get()


class Transport(Protocol):
    """How ``Kernel`` talks to one kernel process, wherever it runs."""

    async def start(self) -> None: ...
    async def send_execute(
        self, code: str, *, silent: bool = False, user_expressions: dict[str, str] | None = None
    ) -> str: ...
    async def next_message(self, timeout: float) -> tuple[str, dict[str, Any]]: ...
    async def interrupt(self) -> None: ...
    async def restart(self) -> None: ...
    async def is_alive(self) -> bool: ...
    async def shutdown(self) -> None: ...


class _BridgeKernelSpecs(KernelSpecManager):
    """Serves the one kernel spec a local ``Kernel`` launches: ipykernel under resource limits."""

    spec: KernelSpec | None = None  # set per manager

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        assert self.spec is not None
        return self.spec


class LocalTransport:
    """A kernel process on this machine through ``jupyter_client``."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        runtime_dir: str,
        startup_timeout: float,
    ) -> None:
        specs = _BridgeKernelSpecs()
        specs.spec = KernelSpec(argv=argv, display_name="kernel-bridge", language="python")
        self.km = AsyncKernelManager(
            kernel_name="kernel-bridge",
            kernel_spec_manager=specs,
            connection_file=os.path.join(runtime_dir, "kernel.json"),
            transport="ipc",
            ip=os.path.join(runtime_dir, "ipc"),
        )
        self.env = env
        self.cwd = cwd
        self.startup_timeout = startup_timeout
        self.client: Any = None
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=10_000)
        self._pumps: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int | None:
        proc = getattr(self.km.provisioner, "process", None)
        return proc.pid if proc is not None else None

    async def start(self) -> None:
        await self.km.start_kernel(env=self.env, cwd=self.cwd)
        self.client = self.km.client()
        self.client.allow_stdin = False
        self.client.start_channels()
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        """Wait for the kernel's first reply, then forward both channels into one queue."""
        await self._stop_pumps()
        try:
            await self.client.wait_for_ready(timeout=self.startup_timeout)
        except RuntimeError as e:
            raise KernelError(
                f"the kernel did not start within {self.startup_timeout} s: {e}"
            ) from e
        self._queue = asyncio.Queue(maxsize=10_000)
        self._pumps = [
            asyncio.create_task(self._pump("iopub", self.client.get_iopub_msg)),
            asyncio.create_task(self._pump("shell", self.client.get_shell_msg)),
        ]

    async def _stop_pumps(self) -> None:
        for task in self._pumps:
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        self._pumps = []

    async def _pump(
        self, channel: str, get: Callable[[], Coroutine[Any, Any, dict[str, Any]]]
    ) -> None:
        while True:
            msg = await get()
            await self._queue.put((channel, msg))

    async def send_execute(
        self, code: str, *, silent: bool = False, user_expressions: dict[str, str] | None = None
    ) -> str:
        return self.client.execute(
            code,
            silent=silent,
            store_history=not silent,
            allow_stdin=False,
            user_expressions=user_expressions or {},
            stop_on_error=False,
        )

    async def next_message(self, timeout: float) -> tuple[str, dict[str, Any]]:
        return await queue_get(self._queue, timeout)

    async def interrupt(self) -> None:
        await self.km.interrupt_kernel()

    async def restart(self) -> None:
        await self.km.restart_kernel(now=True)
        await self._wait_ready()

    async def is_alive(self) -> bool:
        return bool(await self.km.is_alive())

    async def shutdown(self) -> None:
        await self._stop_pumps()
        pid = self.pid
        children = []
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(pid).children(recursive=True)
        if self.client is not None:
            self.client.stop_channels()
        if self.km.has_kernel:
            await self.km.shutdown_kernel(now=True)
        for child in children:  # processes the model's code started in a new session
            with contextlib.suppress(psutil.Error):
                child.kill()


__all__ = ["SECRET_NAME_RE", "LocalTransport", "Transport", "queue_get", "scrub_environment"]
