"""``Kernel``: a live IPython kernel whose state persists across ``execute`` calls.

``await kernel.execute(code)`` returns an ``ExecutionResult``. The kernel is local (through
``LocalTransport``, with limits, a scrubbed environment and its own workspace) or, given ``url=``,
on a Jupyter Server or Kernel Gateway (``RemoteTransport``); timeouts, interrupts, restarts and
output collection are the same code for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from nbformat import NotebookNode
from traitlets import Bool, Dict, Int, List, Unicode

from kernel_bridge.execution.outputs import OutputCollector
from kernel_bridge.execution.result import (
    ExecutionResult,
    KernelError,
    Setup,
    Status,
    check_code,
)
from kernel_bridge.execution.sandbox import default_read_only_paths, find_bwrap
from kernel_bridge.execution.settings import BlockSettings, Seconds
from kernel_bridge.execution.transport import (
    LaunchSettings,
    LocalTransport,
    Transport,
    scrub_environment,
)

RESTARTED_NOTE = "[the kernel was restarted; variables are lost]"


class Kernel(BlockSettings):
    """A live IPython kernel whose state persists across ``execute`` calls.

    Local by default (a fresh process with limits, a scrubbed environment and its own workspace);
    with ``url=`` it is a kernel on a Jupyter Server or Kernel Gateway, used the same way.
    """

    interrupt_grace = Seconds(
        3.0,
        allow_zero=True,
        help="Seconds to wait after an interrupt before the kernel is restarted.",
    ).tag(config=True)
    startup_timeout = Seconds(60.0, help="Seconds to wait for a kernel to start.").tag(config=True)
    poll_interval = Seconds(
        0.25, help="Seconds of iopub silence after which the kernel's liveness is checked."
    ).tag(config=True)
    iopub_grace = Seconds(
        2.0,
        allow_zero=True,
        help="Seconds to wait for the final iopub messages once the reply has arrived.",
    ).tag(config=True)
    memory_limit = Int(
        4 << 30,
        allow_none=True,
        min=0,
        help="Address-space limit of a local kernel in bytes (None: off).",
    ).tag(config=True)
    cpu_time_limit = Int(
        None,
        allow_none=True,
        min=0,
        help="CPU seconds a local kernel may use in its life (None: off).",
    ).tag(config=True)
    process_limit = Int(
        1024,
        allow_none=True,
        min=0,
        help="Processes and threads a local kernel may have at once (None: off). A pids cgroup "
        "per kernel where the system offers a writable one; elsewhere RLIMIT_NPROC over the "
        "user's current count, which does nothing for root.",
    ).tag(config=True)
    file_size_limit = Int(
        1 << 30,
        allow_none=True,
        min=0,
        help="Largest file the kernel may write, in bytes (None: off).",
    ).tag(config=True)
    allow_env = List(
        Unicode(),
        help="Environment variables passed to the kernel besides the allow-list of locale, "
        "path and thread settings (names, or patterns such as 'AWS_*'); nothing else of this "
        "process's environment reaches the kernel.",
    ).tag(config=True)
    extra_env = Dict(help="Environment variables set in the kernel.").tag(config=True)
    workspace = Unicode(
        None,
        allow_none=True,
        help="Working directory of the kernel; by default a fresh temporary one, "
        "removed at shutdown.",
    ).tag(config=True)
    sandbox = Bool(
        False,
        help="Run the local kernel under bubblewrap: no network, a read-only view of the "
        "system, its own processes only (docs/security.md).",
    ).tag(config=True)
    sandbox_network = Bool(False, help="Let a sandboxed kernel use the network.").tag(config=True)
    sandbox_paths = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        help="Host paths a sandboxed kernel sees, read-only (None: the kernel-bridge cache, "
        "where the finance tools keep market data).",
    ).tag(config=True)
    track_files = Bool(True, help="Report files created or changed in the workspace.").tag(
        config=True
    )
    url = Unicode(
        None, allow_none=True, help="Jupyter Server or Kernel Gateway URL for a remote kernel."
    ).tag(config=True)
    token = Unicode(None, allow_none=True, help="Token for the remote server.").tag(config=True)
    kernel_name = Unicode("python3", help="Kernel spec name on the remote server.").tag(config=True)
    setup_code = List(
        Unicode(),
        help="Code run silently after every start and restart (tools, imports); if it fails, "
        "start() fails with its error.",
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._transport: Transport | None = None
        self._lock = asyncio.Lock()
        self._tmpdirs: list[str] = []
        self.workspace_path: Path | None = None

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def is_remote(self) -> bool:
        return bool(self.url)

    @property
    def started(self) -> bool:
        return self._transport is not None

    @property
    def pid(self) -> int | None:
        return getattr(self._transport, "pid", None)

    async def start(self) -> Kernel:
        """Start the kernel and wait until it answers."""
        if self._transport is not None:
            return self
        if self.url:
            # Imported here: a local kernel never needs tornado's HTTP and websocket clients.
            from kernel_bridge.execution.remote import RemoteTransport

            transport: Transport = RemoteTransport(
                self.url,
                token=self.token,
                kernel_name=self.kernel_name,
                startup_timeout=self.startup_timeout,
            )
        else:
            transport = self._local_transport()
        try:
            await transport.start()
        except BaseException:
            await transport.shutdown()
            self._remove_tmpdirs()
            raise
        self._transport = transport
        try:
            await self._run_setup(self.setup_code)
        except BaseException:
            await self.shutdown()
            raise
        return self

    async def add_setup_code(self, code: str) -> None:
        """Run ``code`` now (if started) and after every restart; a failure raises KernelError.

        Code already in ``setup_code`` is not added (or run) again."""
        if code in self.setup_code:
            return
        if self._transport is not None:
            async with self._lock:
                await self._run_setup([code])
        self.setup_code = [*self.setup_code, code]

    async def add_setup(self, setup: Setup) -> None:
        """Install ``setup`` (tools) by its code: now if started, and after every restart."""
        await self.add_setup_code(setup.install_code())

    async def _run_setup(self, codes: Iterable[str]) -> None:
        transport = self._require()
        for code in codes:
            run = _Run(transport, OutputCollector(self.output_cap, self.store_cap))
            await run.send(code, silent=True)
            status = await self._collect(run, time.monotonic() + self.startup_timeout)
            if status != "ok":
                result = run.result(status, time.time(), 0.0)
                raise KernelError(
                    f"the kernel's setup code failed ({status}): {result.output_text}\n"
                    f"setup code:\n{code[:500]}"
                )

    def _local_transport(self) -> LocalTransport:
        if self.sandbox:
            find_bwrap()  # bubblewrap missing: say so before anything is made
        directory = tempfile.mkdtemp(prefix=f"kernel-bridge-{os.getpid()}-")
        self._tmpdirs.append(directory)
        settings = LaunchSettings(
            env=scrub_environment(os.environ, self.allow_env, self.extra_env),
            workspace=self.workspace,
            memory=self.memory_limit,
            cpu_time=self.cpu_time_limit,
            processes=self.process_limit,
            file_size=self.file_size_limit,
            sandbox=self.sandbox,
            network=self.sandbox_network,
            read_only=list(
                default_read_only_paths() if self.sandbox_paths is None else self.sandbox_paths
            ),
        )
        try:
            transport = LocalTransport(directory, settings, self.startup_timeout)
        except BaseException:
            self._remove_tmpdirs()
            raise
        self.workspace_path = transport.workspace
        return transport

    async def shutdown(self) -> None:
        """Stop the kernel and remove every process and temporary file it made."""
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.shutdown()
        self._remove_tmpdirs()

    def _remove_tmpdirs(self) -> None:
        for d in self._tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
        self._tmpdirs.clear()

    async def is_alive(self) -> bool:
        """True when the kernel is started and its process (or remote kernel) is still there."""
        transport = self._transport
        if transport is None:
            return False
        try:
            return await transport.is_alive()
        except Exception:  # a remote server that cannot answer: not a kernel to hand out
            return False

    async def restart(self) -> None:
        """Restart the kernel process; all variables are lost."""
        await self._require().restart()

    async def interrupt(self) -> None:
        await self._require().interrupt()

    async def __aenter__(self) -> Kernel:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def _require(self) -> Transport:
        if self._transport is None:
            raise KernelError("the kernel is not started: call `await kernel.start()` first")
        return self._transport

    # -- execution ----------------------------------------------------------------------------

    async def execute(
        self,
        code: str | bytes,
        timeout: float | None = None,
        on_output: Callable[[NotebookNode], None] | None = None,
    ) -> ExecutionResult:
        """Run ``code`` and return what it did; ``on_output`` sees each output as it arrives.

        Never raises for anything the code does: errors, timeouts and kernel deaths are statuses.
        """
        started = time.time()
        text, problem = check_code(code)
        if problem is not None:
            return ExecutionResult.refused(problem, started)
        transport = self._require()
        timeout = self.timeout if timeout is None else timeout
        async with self._lock:
            before = self._snapshot_files()
            run = _Run(transport, OutputCollector(self.output_cap, self.store_cap, on_output))
            t0 = time.monotonic()
            try:
                await run.send(text)
                status = await self._collect(run, t0 + timeout)
            except asyncio.CancelledError:
                # Cancelled by the caller (Ctrl-C, task cancel): stop the code, keep the kernel.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._stop(run))
                raise
            duration = time.monotonic() - t0
            result = run.result(status, started, duration, timeout)
            if run.restarted:
                result.add_note(RESTARTED_NOTE)
                if self.setup_code:
                    try:
                        await self._run_setup(self.setup_code)
                        note = "[the setup code (tools) ran again]"
                    except KernelError as e:
                        note = f"[{e}]"
                    result.add_note(note)
            result.new_files = self._new_files(before)
            return result

    async def _collect(self, run: _Run, deadline: float) -> Status:
        """Read messages until reply and idle; interrupt, restart or report death as needed."""
        state = await run.wait(deadline, self.poll_interval, self.iopub_grace)
        if state == "done":
            return "error" if run.failed else "ok"
        if state == "died":
            await run.restart()
            return "died"
        # Timed out: interrupt, give it a grace period, else restart.
        await run.transport.interrupt()
        state = await run.wait(
            time.monotonic() + self.interrupt_grace, self.poll_interval, self.iopub_grace
        )
        if state != "done":
            await run.restart()
        return "timeout"

    async def _stop(self, run: _Run) -> None:
        await run.transport.interrupt()
        if (
            await run.wait(
                time.monotonic() + self.interrupt_grace, self.poll_interval, self.iopub_grace
            )
            != "done"
        ):
            await run.restart()

    # -- workspace files ----------------------------------------------------------------------

    def _snapshot_files(self) -> dict[str, tuple[int, int]]:
        if not self.track_files or self.workspace_path is None:
            return {}
        snap: dict[str, tuple[int, int]] = {}
        root = str(self.workspace_path)
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    st = os.stat(path)
                    snap[os.path.relpath(path, root)] = (st.st_mtime_ns, st.st_size)
                if len(snap) >= 10_000:
                    return snap
        return snap

    def _new_files(self, before: dict[str, tuple[int, int]]) -> list[str]:
        if not self.track_files or self.workspace_path is None:
            return []
        after = self._snapshot_files()
        return sorted(p for p, stat in after.items() if before.get(p) != stat)


class _Run:
    """One execute request in flight: its messages, its reply, its outputs."""

    def __init__(self, transport: Transport, collector: OutputCollector) -> None:
        self.transport = transport
        self.collector = collector
        self.msg_id = ""
        self.reply: dict[str, Any] | None = None
        self.idle = False
        self.restarted = False

    @property
    def failed(self) -> bool:
        return self.reply is not None and self.reply["content"].get("status") != "ok"

    async def send(self, code: str, silent: bool = False) -> None:
        # Drop what earlier executions left on the channels.
        with contextlib.suppress(asyncio.TimeoutError):
            while True:
                await self.transport.next_message(0)
        self.msg_id = await self.transport.send_execute(code, silent=silent)

    async def wait(self, deadline: float, poll: float, grace: float) -> str:
        """Collect until "done", past the deadline ("timeout"), or until the kernel "died"."""
        last_activity = time.monotonic()
        while not (self.reply is not None and self.idle):
            now = time.monotonic()
            if self.reply is None and now >= deadline:
                return "timeout"
            if self.reply is not None and now - last_activity > grace:
                break  # iopub lost its final messages (e.g. dropped at the high-water mark)
            wait = poll if self.reply is not None else min(poll, deadline - now)
            try:
                channel, msg = await self.transport.next_message(max(wait, 0.001))
            except TimeoutError:
                if not await self.transport.is_alive():
                    return "died"
                continue
            msg_type = msg["header"]["msg_type"]
            state = msg["content"].get("execution_state") if msg_type == "status" else None
            if state in ("dead", "restarting"):  # a server restarted the kernel under us
                return "died"
            if msg.get("parent_header", {}).get("msg_id") != self.msg_id:
                continue
            last_activity = time.monotonic()
            if channel == "shell":
                if msg_type == "execute_reply":
                    self.reply = msg
            elif msg_type == "status":
                self.idle = self.idle or state == "idle"
            else:
                self.collector.handle(msg)
        return "done"

    async def restart(self) -> None:
        await self.transport.restart()
        self.restarted = True

    def result(
        self, status: Status, started: float, duration: float, timeout: float | None = None
    ) -> ExecutionResult:
        return ExecutionResult.from_collector(
            self.collector,
            status,
            started,
            duration,
            timeout=timeout,
            reply=self.reply["content"] if self.reply else None,
            restarted=self.restarted,
        )


__all__ = ["RESTARTED_NOTE", "Kernel"]
