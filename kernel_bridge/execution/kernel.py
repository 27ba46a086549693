"""``Kernel``: a live IPython kernel whose state persists across ``execute`` calls.

``await kernel.execute(code)`` returns an ``ExecutionResult``. The kernel is local (through
``LocalTransport``, with limits, a scrubbed environment and its own workspace) or, given ``url=``,
on a Jupyter Server or Kernel Gateway (``RemoteTransport``); timeouts, interrupts, restarts and
output collection are the same code for both.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from nbformat import NotebookNode
from traitlets import Bool, Dict, Int, List, Unicode

from kernel_bridge.execution.outputs import OUTPUT_TYPES, BackgroundOutput, OutputCollector
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
    remove_stale_dirs,
    scrub_environment,
)

RESTARTED_NOTE = "[the kernel was restarted; variables are lost]"
# The kernel-side guard's report, asked for in every execute request once the guard is in place.
GUARD_REPORT = {"kernel_bridge": "__import__('_kernel_bridge_guard').report()"}
# What a Jupyter server sends in place of output it drops (its IOPub rate limits).
SERVER_DROP_NOTICES = ("IOPub data rate exceeded", "IOPub message rate exceeded")
_swept = False  # whether this process removed the kernel directories of dead ones
# A kernel's channels are Unix sockets in its directory (…/kernel-bridge-<pid>-<random>/run/ipc-N);
# Linux takes socket paths of at most 107 bytes, so a longer temporary directory is not used.
IPC_PATH_ROOM = 60


def _kernel_dir_parent() -> str:
    """Where kernel directories go: the temporary directory, or /tmp where its path is too long
    for the kernel's sockets."""
    base = tempfile.gettempdir()
    if len(base) > IPC_PATH_ROOM and os.access("/tmp", os.W_OK):
        return "/tmp"
    return base


@functools.cache
def guard_source() -> str:
    """The kernel-side output guard, as code to send (``_kernel_guard.py``)."""
    return (Path(__file__).parent / "_kernel_guard.py").read_text(encoding="utf-8")


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
    track_depth = Int(
        None,
        allow_none=True,
        min=0,
        help="Folder levels below the workspace searched for new files (0: its own files only); "
        "None: all, up to 10,000 files. Each block searches twice, so a large folder (a "
        "notebook's) costs time per block.",
    ).tag(config=True)
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
    output_guard = Bool(
        True,
        help="Install the output guard in the kernel after every start and restart: it bounds "
        "what a block sends (as the output limits do here), counts it, so lost output is "
        "reported, and tells background threads' output apart. Off, or in a kernel that is not "
        "ipykernel, the limits still hold here.",
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._transport: Transport | None = None
        self._lock = asyncio.Lock()
        self._tmpdirs: list[str] = []
        self.workspace_path: Path | None = None
        self._guarded = False
        self._background = BackgroundOutput(self.output_limits.background_cap)

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
        if self.url and self.sandbox:
            raise KernelError(
                f"sandbox=True applies to a local kernel; the kernel at {self.url} runs where its "
                "server runs: sandbox that server instead"
            )
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
            await self._after_start()
        except BaseException:
            await self.shutdown()
            raise
        return self

    async def _after_start(self) -> None:
        """What every start and restart is followed by: the output guard, then the setup code."""
        self._guarded = False
        if self.output_guard:
            limits = self.output_limits.to_dict()
            code = (
                f"exec({guard_source()!r}, "
                f"{{'__name__': '_kernel_bridge_guard_install', 'LIMITS': {limits!r}}})"
            )
            run = self._new_run(OutputCollector(self.output_limits))
            await run.send(code, silent=True)
            status = await self._collect(run, time.monotonic() + self.startup_timeout)
            self._guarded = status == "ok"
            if not self._guarded:
                self.log.warning(
                    "kernel-bridge: the output guard could not be installed in the kernel "
                    "(%s); output is still bounded here, but lost output is detected only "
                    "when a server says so",
                    run.result(status, time.time(), 0.0).output_text[:300],
                )
        await self._run_setup(self.setup_code)

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
        for code in codes:
            run = self._new_run(OutputCollector(self.output_limits))
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
        global _swept
        parent = _kernel_dir_parent()
        if not _swept:  # once per process: what killed processes left behind
            _swept = True
            remove_stale_dirs(parent)
        directory = tempfile.mkdtemp(prefix=f"kernel-bridge-{os.getpid()}-", dir=parent)
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
        """Restart the kernel process; all variables are lost. The output guard and the setup
        code run again."""
        async with self._lock:
            await self._require().restart()
            await self._after_start()

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
        self._require()
        timeout = self.timeout if timeout is None else timeout
        async with self._lock:
            before = self._snapshot_files()
            run = self._new_run(OutputCollector(self.output_limits, on_output))
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
            result = run.result(status, started, duration, timeout, with_background=True)
            if run.restarted:
                result.add_note(RESTARTED_NOTE)
                try:
                    await self._after_start()
                    note = "[the setup code (tools) ran again]" if self.setup_code else ""
                except KernelError as e:
                    note = f"[{e}]"
                if note:
                    result.add_note(note)
            result.new_files = self._new_files(before)
            return result

    def _new_run(self, collector: OutputCollector) -> _Run:
        return _Run(self._require(), collector, self._background, guarded=self._guarded)

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
        for dirpath, dirs, files in os.walk(root):
            if self.track_depth is not None:
                depth = 0 if dirpath == root else os.path.relpath(dirpath, root).count(os.sep) + 1
                if depth >= self.track_depth:
                    dirs.clear()
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
    """One execute request in flight: its messages, its reply, its outputs.

    Output messages of other requests (a thread of an earlier block, output after a block ended)
    go to ``background``. Output that did not arrive is noticed three ways: the kernel-side
    guard's count of what it sent (``guarded``), a server's notice that it dropped output, and a
    reply whose idle status never came.
    """

    def __init__(
        self,
        transport: Transport,
        collector: OutputCollector,
        background: BackgroundOutput,
        *,
        guarded: bool = False,
    ) -> None:
        self.transport = transport
        self.collector = collector
        self.background = background
        self.guarded = guarded
        self.msg_id = ""
        self.reply: dict[str, Any] | None = None
        self.idle = False
        self.restarted = False
        self.received = 0  # output messages of this request that arrived
        self.silent_end = 0.0  # the reply came but iopub went silent for this many seconds
        self.server_notice: str | None = None  # a server said it dropped this block's output

    @property
    def failed(self) -> bool:
        return self.reply is not None and self.reply["content"].get("status") != "ok"

    async def send(self, code: str, silent: bool = False) -> None:
        # What arrived since the last request belongs to no block: background output.
        with contextlib.suppress(asyncio.TimeoutError):
            while True:
                _channel, msg = await self.transport.next_message(0)
                self._other(msg)
        self.msg_id = await self.transport.send_execute(
            code, silent=silent, user_expressions=GUARD_REPORT if self.guarded else None
        )

    def _other(self, msg: dict[str, Any]) -> None:
        """A message of no request of ours, or of an earlier one."""
        if msg["header"]["msg_type"] in OUTPUT_TYPES and not _server_notice(msg):
            self.background.handle(msg)

    async def wait(self, deadline: float, poll: float, grace: float) -> str:
        """Collect until "done", past the deadline ("timeout"), or until the kernel "died"."""
        last_ours = last_any = time.monotonic()
        while not (self.reply is not None and self.idle):
            now = time.monotonic()
            if self.reply is None and now >= deadline:
                return "timeout"
            # The reply came but not the idle status: iopub lost this block's last messages (e.g.
            # at the high-water mark) once nothing of ours came for `grace` seconds (10 × while
            # other output, such as a background thread's, is still being read).
            if self.reply is not None and (now - last_any > grace or now - last_ours > 10 * grace):
                self.silent_end = now - last_ours
                break
            wait = poll if self.reply is not None else min(poll, deadline - now)
            try:
                channel, msg = await self.transport.next_message(max(wait, 0.001))
            except TimeoutError:
                if not await self.transport.is_alive():
                    return "died"
                continue
            last_any = time.monotonic()
            msg_type = msg["header"]["msg_type"]
            state = msg["content"].get("execution_state") if msg_type == "status" else None
            if state in ("dead", "restarting"):  # a server restarted the kernel under us
                return "died"
            if msg.get("parent_header", {}).get("msg_id") != self.msg_id:
                self._other(msg)
                continue
            last_ours = last_any
            if channel == "shell":
                if msg_type == "execute_reply":
                    self.reply = msg
            elif msg_type == "status":
                self.idle = self.idle or state == "idle"
            elif (notice := _server_notice(msg)) is not None:
                self.server_notice = notice
            else:
                if msg_type in OUTPUT_TYPES:
                    self.received += 1
                self.collector.handle(msg)
        return "done"

    def lost(self) -> str | None:
        """What output of this block did not arrive, in words; None when all of it did."""
        problems = []
        sent = self._guard_report().get("sent")
        if isinstance(sent, int) and sent > self.received:
            problems.append(f"{sent - self.received:,} of the {sent:,} outputs this block sent")
        elif self.silent_end:
            problems.append(
                "the end of this block's output (its channel went silent "
                f"{self.silent_end:.1f} s after the reply)"
            )
        if self.server_notice is not None:
            cause = (
                f"the Jupyter server dropped them ({self.server_notice}); raise its "
                "ZMQChannelsWebsocketConnection.iopub_data_rate_limit and iopub_msg_rate_limit "
                "(0: no limit), or print less"
            )
            return f"{problems[0] if problems else 'output of this block'} did not arrive: {cause}"
        if problems:
            return f"{problems[0]} did not arrive on the kernel's output channel"
        return None

    def _guard_report(self) -> dict[str, Any]:
        if not self.guarded or self.reply is None:
            return {}
        expression = self.reply["content"].get("user_expressions", {}).get("kernel_bridge", {})
        if expression.get("status") != "ok":
            return {}
        try:
            report = ast.literal_eval(expression.get("data", {}).get("text/plain", ""))
        except (ValueError, SyntaxError):
            return {}
        return report if isinstance(report, dict) else {}

    async def restart(self) -> None:
        await self.transport.restart()
        self.restarted = True

    def result(
        self,
        status: Status,
        started: float,
        duration: float,
        timeout: float | None = None,
        *,
        with_background: bool = False,
    ) -> ExecutionResult:
        """The block's result; ``with_background`` takes the background output so far into it."""
        skipped = self._guard_report().get("background_omitted")
        if isinstance(skipped, int) and skipped > 0:
            self.background.skip(skipped)
        background = self.background.take() if with_background else ""
        return ExecutionResult.from_collector(
            self.collector,
            status,
            started,
            duration,
            timeout=timeout,
            reply=self.reply["content"] if self.reply else None,
            restarted=self.restarted,
            lost=self.lost(),
            background=background,
        )


def _server_notice(msg: dict[str, Any]) -> str | None:
    """The first line of a Jupyter server's notice that it dropped output, if ``msg`` is one."""
    if msg["header"]["msg_type"] != "stream":
        return None
    text = str(msg["content"].get("text", ""))
    if text.startswith(SERVER_DROP_NOTICES):
        return text.split("\n", 1)[0].strip()
    return None


__all__ = ["RESTARTED_NOTE", "Kernel"]
