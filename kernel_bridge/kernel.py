"""Real IPython kernels that keep state, survive faults, and come from a warm pool.

``Kernel`` is the async core: ``await kernel.execute(code)`` returns an ``ExecutionResult``.
It runs a local kernel through ``jupyter_client`` or, given ``url=``, a kernel on a Jupyter
Server or Kernel Gateway. ``BlockingKernel`` is the same API for synchronous code;
``KernelPool`` keeps warm, never-reused kernels for rollouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import numbers
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import psutil
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from nbformat import NotebookNode
from traitlets import Bool, Dict, Float, Int, List, TraitError, Unicode
from traitlets.config import LoggingConfigurable

from kernel_bridge.outputs import OutputCollector

Status = Literal["ok", "error", "timeout", "died"]
T = TypeVar("T")

RESTARTED_NOTE = "[the kernel was restarted; variables are lost]"
SECRET_NAME_RE = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|PRIVATE", re.IGNORECASE)


class KernelError(RuntimeError):
    """The kernel could not be started or reached; the message says what to do."""


def check_seconds(value: Any, what: str, *, allow_zero: bool = False) -> float:
    """``value`` as a duration: a finite number of seconds above 0 (or 0 too, with
    ``allow_zero``). NaN or infinity would silently remove a limit, so they are errors."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "above 0"
        raise ValueError(f"{what} must be a finite number of seconds {bound}, got {value!r}")
    return float(value)


def check_count(value: Any, what: str, minimum: int = 1) -> int:
    """``value`` as a whole number of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {value!r}")
    return int(value)


class Seconds(Float):
    """A traitlet for a duration: a finite number of seconds above 0 (or 0 too, ``allow_zero``)."""

    def __init__(self, default_value: float, *, allow_zero: bool = False, **kwargs: Any) -> None:
        self.allow_zero = allow_zero
        super().__init__(default_value, **kwargs)

    def validate(self, obj: Any, value: Any) -> float:
        value = super().validate(obj, value)
        try:
            return check_seconds(
                value, f"{type(obj).__name__}.{self.name}", allow_zero=self.allow_zero
            )
        except ValueError as e:
            raise TraitError(str(e)) from None


@dataclass
class ExecutionResult:
    """What one block of code did in the kernel.

    ``outputs`` are nbformat v4 outputs ready for a notebook cell; ``output_text`` is what the model
    reads (streams in order, last value, short ANSI-free traceback, capped head and tail).
    """

    status: Status
    output_text: str
    outputs: list[NotebookNode] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    error_name: str | None = None
    error_value: str | None = None
    traceback: list[str] = field(default_factory=list)
    execution_count: int | None = None
    started: float = 0.0
    duration_s: float = 0.0
    new_files: list[str] = field(default_factory=list)
    restarted: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outputs"] = [dict(o) for o in self.outputs]
        return d


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


class BlockSettings(LoggingConfigurable):
    """What every executor of model code shares: the block timeout and how much output is kept."""

    timeout = Seconds(30.0, help="Seconds a block may run before it is interrupted.").tag(
        config=True
    )
    output_cap = Int(2000, min=0, help="Characters of output the model reads (head and tail).").tag(
        config=True
    )
    store_cap = Int(
        200_000,
        min=0,
        help="Characters kept per stream output in the notebook outputs (head and tail).",
    ).tag(config=True)


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
        None,
        allow_none=True,
        min=0,
        help="Processes the kernel's user may own (RLIMIT_NPROC; None: off).",
    ).tag(config=True)
    file_size_limit = Int(
        1 << 30,
        allow_none=True,
        min=0,
        help="Largest file the kernel may write, in bytes (None: off).",
    ).tag(config=True)
    allow_env = List(
        Unicode(), help="Environment variables passed to the kernel although they look secret."
    ).tag(config=True)
    extra_env = Dict(help="Environment variables set in the kernel.").tag(config=True)
    workspace = Unicode(
        None,
        allow_none=True,
        help="Working directory of the kernel; by default a fresh temporary one, "
        "removed at shutdown.",
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
            from kernel_bridge.remote import RemoteTransport

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
        runtime = tempfile.mkdtemp(prefix=f"kernel-bridge-{os.getpid()}-")
        self._tmpdirs.append(runtime)
        if self.workspace:
            ws = Path(self.workspace).resolve()
            ws.mkdir(parents=True, exist_ok=True)
        else:
            ws = Path(runtime) / "workspace"
            ws.mkdir()
        self.workspace_path = ws
        argv = [sys.executable, "-m", "kernel_bridge._launcher"]
        for name, value in (
            ("memory", self.memory_limit),
            ("cpu-time", self.cpu_time_limit),
            ("processes", self.process_limit),
            ("file-size", self.file_size_limit),
        ):
            if value:
                argv += [f"--limit-{name}", str(value)]
        argv += ["-f", "{connection_file}", "--HistoryManager.hist_file=:memory:"]
        env = scrub_environment(dict(os.environ), self.allow_env)
        env.update(self.extra_env)
        env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
        env["IPYTHONDIR"] = os.path.join(runtime, "ipython")
        return LocalTransport(argv, env, str(ws), runtime, self.startup_timeout)

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
        text, problem = _check_code(code)
        if problem is not None:
            return _refused(problem, started)
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
            result = run.result(status, started, duration)
            if status == "timeout":
                note = f"[timed out after {timeout:g} s and interrupted]"
                result.output_text = _append_note(result.output_text, note)
            if run.restarted:
                result.output_text = _append_note(result.output_text, RESTARTED_NOTE)
                if self.setup_code:
                    try:
                        await self._run_setup(self.setup_code)
                        note = "[the setup code (tools) ran again]"
                    except KernelError as e:
                        note = f"[{e}]"
                    result.output_text = _append_note(result.output_text, note)
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

    def result(self, status: Status, started: float, duration: float) -> ExecutionResult:
        c = self.collector
        content = self.reply["content"] if self.reply else {}
        ename = evalue = None
        tb: list[str] = []
        if c.error is not None:
            ename, evalue, tb = c.error
        elif status == "error":  # an error reply without an iopub error message
            ename, evalue = content.get("ename"), content.get("evalue")
        if status == "died" and ename is None:
            ename, evalue = "KernelDied", "the kernel process died while running this block"
        output_text = str(c.text)
        if status == "died":
            output_text = _append_note(output_text, f"{ename}: {evalue}")
        return ExecutionResult(
            status=status,
            output_text=output_text.rstrip("\n"),
            outputs=c.outputs,
            stdout=str(c.stdout),
            stderr=str(c.stderr),
            error_name=ename,
            error_value=evalue,
            traceback=tb,
            execution_count=content.get("execution_count", c.execution_count),
            started=started,
            duration_s=duration,
            restarted=self.restarted,
        )


def _append_note(text: str, note: str) -> str:
    return f"{text.rstrip()}\n{note}" if text.strip() else note


def _refused(problem: tuple[str, str], started: float) -> ExecutionResult:
    """The result for code that cannot be sent to a kernel (see ``_check_code``)."""
    name, value = problem
    return ExecutionResult(
        status="error",
        output_text=f"{name}: {value}",
        error_name=name,
        error_value=value,
        started=started,
    )


def _check_code(code: str | bytes) -> tuple[str, tuple[str, str] | None]:
    """Validate a block before it reaches the kernel: text, UTF-8 clean, not empty."""
    if isinstance(code, bytes):
        try:
            code = code.decode("utf-8")
        except UnicodeDecodeError as e:
            return "", (
                "UnicodeDecodeError",
                f"the code is not valid UTF-8 ({e.reason} at byte {e.start})",
            )
    try:
        code.encode("utf-8")
    except UnicodeEncodeError as e:
        return "", ("UnicodeEncodeError", f"the code is not valid UTF-8 ({e.reason} at {e.start})")
    if "\x00" in code:
        return "", ("ValueError", "the code contains a NUL character")
    if not code.strip():
        return "", ("ValueError", "the code block is empty: nothing to run")
    return code, None


# -- synchronous convenience ------------------------------------------------------------------


class LoopThread:
    """An event loop in a daemon thread, for calling async code from synchronous code.

    Works where a loop is already running in the caller's thread (inside Jupyter), because the
    coroutines run on this private loop instead.
    """

    def __init__(self) -> None:
        import threading

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


# -- pool -------------------------------------------------------------------------------------


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


__all__ = [
    "BlockingKernel",
    "ExecutionResult",
    "Kernel",
    "KernelError",
    "KernelPool",
    "LoopThread",
    "Seconds",
    "check_count",
    "check_seconds",
    "scrub_environment",
]
