"""``ShellExecutor``: model code run in the IPython shell the user works in.

``Kernel`` runs code in a kernel process of its own. ``ShellExecutor`` runs it in the IPython shell
the user works in (``%%reason`` without ``--isolated``): the model sees the user's ``df``, and what
it builds stays for the user. IPython, matplotlib and user code expect the main thread, so the code
runs there: ``execute()`` (a coroutine, awaited on any event loop) hands the block to the main
thread through ``submit`` and waits; ``run()`` is the synchronous body, called on the main thread.

Timeouts: a watchdog thread sends SIGINT to the main thread at the deadline; Python raises
KeyboardInterrupt in the running code, even inside ``time.sleep``. A block still running
``interrupt_grace`` seconds later (it ignores SIGINT or swallows KeyboardInterrupt) gets
``BlockTimeout`` raised in its thread, again every ``interrupt_grace`` seconds; a pure-Python loop
cannot refuse it. Code that catches BaseException, or sits in C code that never returns to the
interpreter, cannot be stopped in-process: after three tries the cell says so plainly (restart the
kernel). Run such code with ``--isolated`` (a ``Kernel``, which is interrupted and, failing that,
restarted). Shared mode cannot protect the notebook's kernel from a crash in C code either (a
segfault, ``os._exit``) or from a block that eats its memory.
"""

from __future__ import annotations

import _thread
import ast
import asyncio
import base64
import builtins
import concurrent.futures
import contextlib
import ctypes
import getpass
import io
import itertools
import linecache
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from nbformat import NotebookNode
from traitlets import Bool

from kernel_bridge.errors import KernelBridgeError
from kernel_bridge.execution.outputs import BackgroundOutput, OutputCollector, describe_data
from kernel_bridge.execution.result import (
    ExecutionResult,
    Guard,
    OnOutput,
    Setup,
    Status,
    check_code,
)
from kernel_bridge.execution.settings import BlockSettings, Seconds

# Blocks get unique names, so a traceback through a function the model defined earlier still
# shows that function's lines.
_block_numbers = itertools.count(1)


class StdinDisabledError(KernelBridgeError, RuntimeError):
    """``input()`` was called by code that has no user to answer it."""


def _no_input(*args: Any, **kwargs: Any) -> str:
    raise StdinDisabledError(
        "input() is not available to code run by %%reason: nobody is there to answer; "
        "pass values in the question or define them in the notebook"
    )


class ShellExecutor(BlockSettings):
    """Runs blocks in an IPython shell's own namespace, on the main thread, like a cell would.

    Outputs (stdout/stderr, displays such as figures and DataFrame HTML, the last expression's
    value, errors) become nbformat outputs and the model's output text through the same
    ``OutputCollector`` a ``Kernel`` uses. With ``echo`` they also show in the running cell as
    usual. ``submit(job)`` must arrange for ``job.run()`` to be called on the main thread; without
    it, ``execute()`` must be awaited on the main thread itself (e.g. from a top-level ``await``).
    """

    interrupt_grace = Seconds(
        3.0,
        help="Seconds after the deadline's interrupt before BlockTimeout is raised in a block "
        "that ignored it (and between further tries).",
    ).tag(config=True)
    echo = Bool(True, help="Also show the outputs in the running cell, as they happen.").tag(
        config=True
    )

    def __init__(
        self,
        shell: Any = None,
        submit: Callable[[ShellJob], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if shell is None:
            from IPython import get_ipython

            shell = get_ipython()
            if shell is None:
                raise RuntimeError("ShellExecutor needs an IPython shell; none is running")
        self.shell = shell
        self.submit = submit
        self._guards: list[Guard] = []

    def set_guards(self, guards: Sequence[Guard]) -> None:
        """Guards (``kernel_bridge.tools.guard``) that apply while model blocks run, and only then:
        the user's own cells are not the model's code."""
        for guard in self._guards:
            guard.uninstall()
        for guard in guards:
            guard.active = False
            guard.install()
        self._guards = list(guards)

    async def add_setup(self, setup: Setup) -> None:
        """Install ``setup`` (tools) as objects: its names into the shell's namespace, its guards
        on while model blocks run."""
        self.shell.user_ns.update(setup.namespace())
        guards = setup.guards()
        if guards:
            self.set_guards(guards)

    @property
    def started(self) -> bool:
        return True

    async def start(self) -> ShellExecutor:
        return self

    async def execute(
        self, code: str | bytes, timeout: float | None = None, on_output: OnOutput | None = None
    ) -> ExecutionResult:
        """Run ``code`` on the main thread and return what it did (never raises for the code).

        ``on_output`` is called on this coroutine's event loop with each output as it happens.
        """
        if self.submit is None:
            return self.run(code, timeout, on_output)
        loop = asyncio.get_running_loop()
        forward = None
        if on_output is not None:
            callback = on_output

            def forward(output: NotebookNode) -> None:
                loop.call_soon_threadsafe(callback, output)

        job = ShellJob(self, code, timeout, forward)
        self.submit(job)
        return await asyncio.wrap_future(job.future)

    def run(
        self, code: str | bytes, timeout: float | None = None, on_output: OnOutput | None = None
    ) -> ExecutionResult:
        """Run ``code`` now, on the main thread; a KeyboardInterrupt not caused by the deadline
        (the user pressing Stop) propagates to the caller after the block's outputs are restored."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "ShellExecutor.run() must be called on the main thread (IPython and the timeout "
                "signal need it); await execute() with a submit function from other threads"
            )
        started = time.time()
        text, problem = check_code(code)
        if problem is not None:
            return ExecutionResult.refused(problem, started)
        timeout = self.timeout if timeout is None else timeout
        collector = OutputCollector(self.output_limits, on_output)
        t0 = time.monotonic()
        with contextlib.ExitStack() as stack:
            for guard in self._guards:
                stack.enter_context(guard.enabled())
            capture = stack.enter_context(_Capture(self.shell, collector, echo=self.echo))
            watchdog = _Watchdog(timeout, self.interrupt_grace, notify=capture.stderr.write)
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                try:
                    status = self._run_block(text, capture, watchdog)
                finally:
                    watchdog.stop()
            except BlockTimeout:  # raised after the block's own frames ended, before stop()
                watchdog.stop()
                status = "timeout"
            finally:
                signal.signal(signal.SIGINT, previous)
        duration = time.monotonic() - t0
        return ExecutionResult.from_collector(
            collector, status, started, duration, timeout=timeout, background=capture.background
        )

    def _run_block(self, text: str, capture: _Capture, watchdog: _Watchdog) -> Status:
        """Compile and run one block as a cell would: statements, then the last expression shown."""
        shell = self.shell
        try:
            source = shell.transform_cell(text)  # IPython syntax (%magic, !cmd) as in a cell
            filename = f"<%%reason block {next(_block_numbers)}>"
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            tree = ast.parse(source, filename)
        except Exception as e:
            capture.error(e)
            return "error"
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        try:
            block = compile(tree, filename, "exec", dont_inherit=True) if tree.body else None
            expression = (
                None
                if last is None
                else compile(ast.Expression(last.value), filename, "eval", dont_inherit=True)
            )
        except Exception as e:
            capture.error(e)
            return "error"
        # The deadline counts the block's own time: started here, a slow transform or compile on
        # a busy machine can neither eat the budget nor be interrupted outside the block's frames.
        watchdog.start()
        try:
            if block is not None:
                exec(block, shell.user_global_ns, shell.user_ns)
            if expression is not None:
                value = eval(expression, shell.user_global_ns, shell.user_ns)
                if value is not None and not source.rstrip().endswith(";"):
                    capture.result(value)
            _flush_figures()
        except KeyboardInterrupt as e:
            if not watchdog.claim():
                raise  # the user's Stop: the caller ends the run
            watchdog.stop()  # before the traceback is formatted (slow), not during it
            capture.error(e)
            return "timeout"
        except BlockTimeout as e:  # the watchdog's escalation: the interrupt did not stop it
            watchdog.stop()
            capture.error(e)
            return "timeout"
        except BaseException as e:  # what the code raised (SystemExit included) is its output
            capture.error(e)
            return "error"
        return "ok"


class ShellJob:
    """One block waiting for the main thread: whoever serves it calls ``run()`` or ``cancel()``."""

    def __init__(
        self,
        executor: ShellExecutor,
        code: str | bytes,
        timeout: float | None,
        on_output: OnOutput | None,
    ) -> None:
        self.executor = executor
        self.code = code
        self.timeout = timeout
        self.on_output = on_output
        self.future: concurrent.futures.Future[ExecutionResult] = concurrent.futures.Future()

    def run(self) -> None:
        """Run the block here (the main thread); a user interrupt is re-raised after the awaiting
        side has been told the block was cancelled."""
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.executor.run(self.code, self.timeout, self.on_output)
        except KeyboardInterrupt:
            self.future.set_exception(asyncio.CancelledError())
            raise
        except Exception as e:
            self.future.set_exception(e)
        else:
            self.future.set_result(result)

    def cancel(self) -> None:
        """Never run it (the run was stopped while the block waited)."""
        self.future.cancel()


def _flush_figures() -> None:
    """Show the figures a block drew, as a cell's end would (matplotlib's inline backend)."""
    inline = sys.modules.get("matplotlib_inline.backend_inline")
    matplotlib = sys.modules.get("matplotlib")
    if inline is None or matplotlib is None:
        return
    if "inline" in str(matplotlib.get_backend()):
        inline.flush_figures()


def interrupt_main_thread() -> None:
    """Raise KeyboardInterrupt in the main thread, waking it from a blocking call (POSIX)."""
    if hasattr(signal, "pthread_kill"):
        ident = threading.main_thread().ident
        assert ident is not None
        signal.pthread_kill(ident, signal.SIGINT)
    else:  # pragma: no cover - Windows: takes effect at the next bytecode, not inside a sleep
        _thread.interrupt_main()


class BlockTimeout(BaseException):
    """Raised inside a block that outlived its deadline and did not stop at the interrupt (it
    ignores SIGINT or swallows KeyboardInterrupt). A BaseException, like KeyboardInterrupt, so
    that ``except Exception`` in the block does not swallow it."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or ("the block ignored the interrupt at its deadline",)))


def _raise_in_main_thread(exc: type[BaseException]) -> None:
    """Make the main thread raise ``exc`` at its next bytecode.

    CPython's PyThreadState_SetAsyncExc: it reaches a pure-Python loop whatever its signal
    handlers, but not C code until that code returns to the interpreter."""
    ident = threading.main_thread().ident
    assert ident is not None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc))


def _take_back_raise_in_main_thread() -> None:
    """Cancel an exception ``_raise_in_main_thread`` asked for that has not been raised yet."""
    ident = threading.main_thread().ident
    assert ident is not None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)


class _Watchdog:
    """Stops the main thread's block at the deadline, escalating while it does not stop.

    At the deadline: SIGINT (KeyboardInterrupt, even inside ``time.sleep``). Then every ``grace``
    seconds while the block runs: ``BlockTimeout`` raised in the main thread, which a loop that
    ignores SIGINT or catches KeyboardInterrupt cannot refuse. After ``patience`` such tries it
    says once, through ``notify``, that nothing works: in a notebook's own kernel only a restart
    is left. It counts the interrupts it sent, so a KeyboardInterrupt can be told apart from the
    user's.
    """

    def __init__(
        self,
        timeout: float,
        grace: float,
        notify: Callable[[str], object] | None = None,
        patience: int = 3,
    ) -> None:
        self.timeout = timeout
        self.grace = max(grace, 0.1)
        self.notify = notify
        self.patience = patience
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._started = 0.0
        self.sent = 0
        self.claimed = 0
        self.escalations = 0

    def start(self) -> None:
        self._started = time.monotonic()
        threading.Thread(target=self._watch, daemon=True, name="kernel-bridge-watchdog").start()

    def _watch(self) -> None:
        wait = self.timeout
        while not self._stopped.wait(wait):
            with self._lock:
                if self._stopped.is_set():
                    return
                if self.sent == 0:
                    self.sent += 1
                    interrupt_main_thread()
                else:
                    self.escalations += 1
                    _raise_in_main_thread(BlockTimeout)
            if self.escalations == self.patience and self.notify is not None:
                self.notify(self._nothing_works())
            wait = self.grace

    def _nothing_works(self) -> str:
        return (
            f"\nkernel-bridge: this block has run {time.monotonic() - self._started:.0f} s, past "
            f"its {self.timeout:g} s deadline, and ignores both the interrupt and the exception "
            "raised in it (it catches BaseException, or waits inside C code). In the notebook's "
            "own kernel nothing else can stop it: restart the kernel (its variables are lost), "
            "and run code like this with %%reason --isolated.\n"
        )

    def claim(self) -> bool:
        """A KeyboardInterrupt arrived: True if this watchdog sent it, False if someone else did."""
        if self.claimed < self.sent:
            self.claimed += 1
            return True
        return False

    def stop(self) -> None:
        """Stop watching (again: no harm); an interrupt or exception already sent but not yet
        delivered is absorbed (or taken back) here."""
        while True:
            try:
                with self._lock:
                    self._stopped.set()
                    if self.escalations:
                        _take_back_raise_in_main_thread()
                if self.claimed < self.sent and not self.escalations:
                    time.sleep(1.0)  # the signal is on its way; it arrives in microseconds
                return
            except KeyboardInterrupt:
                if not self.claim():
                    raise
            except BlockTimeout:
                pass  # raised before it could be taken back: the block is over


class _TeeStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` while a block runs: text goes to the capture (and the cell)."""

    def __init__(self, name: str, original: Any, capture: _Capture) -> None:
        self.name = name
        self.original = original
        self.capture = capture

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.capture.stream(self.name, text)
        if self.capture.echo:
            self.original.write(text)
        return len(text)

    def flush(self) -> None:
        if self.capture.echo:
            self.original.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.original, "errors", None)

    def fileno(self) -> int:
        return int(self.original.fileno())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


class _Capture:
    """While a block runs: its streams, displays and errors go into the collector (and the cell).

    Stream text is handed to the collector in batches (every 0.2 s or 64 KiB, and before any other
    output), as ipykernel batches it, so a print loop costs few outputs. ``clear_output`` from the
    block is recorded but not shown: in the cell it would wipe the whole run. Threads that were
    running before the block started (an earlier cell's or block's) are not the block: what they
    print goes to ``background`` (bounded), and still shows in the cell.
    """

    FLUSH_INTERVAL = 0.2
    FLUSH_SIZE = 65536

    def __init__(self, shell: Any, collector: OutputCollector, echo: bool) -> None:
        self.shell = shell
        self.collector = collector
        self.echo = echo
        self._lock = threading.RLock()
        self._pending: list[str] = []
        self._pending_name = ""
        self._pending_size = 0
        self._last_flush = time.monotonic()
        self._background = BackgroundOutput(collector.limits.background_cap)
        self._earlier_threads: set[int | None] = set()

    @property
    def background(self) -> str:
        """What threads of earlier blocks printed while this one ran (head and tail)."""
        with self._lock:
            return self._background.take()

    def _from_background(self) -> bool:
        return threading.get_ident() in self._earlier_threads

    def __enter__(self) -> _Capture:
        self._earlier_threads = {t.ident for t in threading.enumerate()} - {threading.get_ident()}
        self.stdout, self.stderr = sys.stdout, sys.stderr
        pub = self.shell.display_pub
        self._pub = pub
        self._pub_saved = {
            n: pub.__dict__[n] for n in ("publish", "clear_output") if n in pub.__dict__
        }
        self._publish_original = pub.publish
        self._input_saved = (builtins.input, getpass.getpass)
        sys.stdout = _TeeStream("stdout", self.stdout, self)
        sys.stderr = _TeeStream("stderr", self.stderr, self)
        pub.publish = self._publish
        pub.clear_output = self._clear_output
        builtins.input = getpass.getpass = _no_input
        self._noise = _EventLoopNoise()
        logging.getLogger("asyncio").addFilter(self._noise)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.flush_streams()
        finally:
            sys.stdout, sys.stderr = self.stdout, self.stderr
            for name in ("publish", "clear_output"):
                if name in self._pub_saved:
                    setattr(self._pub, name, self._pub_saved[name])
                else:
                    self._pub.__dict__.pop(name, None)
            builtins.input, getpass.getpass = self._input_saved
            logging.getLogger("asyncio").removeFilter(self._noise)

    # -- what the block produces --------------------------------------------------------------

    def stream(self, name: str, text: str) -> None:
        if not text:
            return
        with self._lock:
            if self._from_background():
                self._background.add_text(text)
                return
            if self._pending and name != self._pending_name:
                self._flush_locked()
            self._pending.append(text)
            self._pending_name = name
            self._pending_size += len(text)
            if (
                self._pending_size >= self.FLUSH_SIZE
                or time.monotonic() - self._last_flush >= self.FLUSH_INTERVAL
            ):
                self._flush_locked()

    def flush_streams(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        text, self._pending, self._pending_size = "".join(self._pending), [], 0
        self._handle("stream", {"name": self._pending_name, "text": text})

    def _handle(self, msg_type: str, content: dict[str, Any]) -> None:
        """Give the collector a message shaped like the kernel's own iopub message."""
        with self._lock:
            self.collector.handle({"header": {"msg_type": msg_type}, "content": content})

    def _publish(
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        if self._from_background():
            with self._lock:
                self._background.add_line(describe_data(_json_bundle(data)))
            if self.echo:
                self._publish_original(data, metadata, *args, **kwargs)
            return
        self.flush_streams()
        msg_type = "update_display_data" if kwargs.get("update") else "display_data"
        content = {
            "data": _json_bundle(data),
            "metadata": metadata or {},
            "transient": kwargs.get("transient") or {},
        }
        try:
            self._handle(msg_type, content)
        except Exception:  # a bundle nbformat refuses: keep its text for the model
            content["data"] = {"text/plain": str(data.get("text/plain", ""))}
            self._handle(msg_type, content)
        if self.echo:
            self._publish_original(data, metadata, *args, **kwargs)

    def _clear_output(self, wait: bool = False) -> None:
        self.flush_streams()
        self._handle("clear_output", {"wait": wait})

    def result(self, value: Any) -> None:
        """The block's last expression: recorded as its result, shown like any display."""
        self.flush_streams()
        data, metadata = self.shell.display_formatter.format(value)
        # Blocks run inside the %%reason cell: no execution count of their own.
        content = {"data": _json_bundle(data), "metadata": metadata, "execution_count": None}
        self._handle("execute_result", content)
        if self.echo:
            self._publish_original(data, metadata)

    def error(self, exc: BaseException) -> None:
        """Record an exception with IPython's traceback, from the block's first frame on: the
        frames of kernel-bridge that ran it are cut from the traceback itself."""
        self.flush_streams()
        etype = type(exc)
        render = getattr(exc, "_render_traceback_", None)  # as IPython honours it
        if callable(render):
            stb = list(render())
        elif isinstance(exc, SyntaxError):
            stb = self.shell.SyntaxTB.structured_traceback(etype, exc, [])
        else:
            exc.__traceback__ = _without_our_frames(exc.__traceback__)
            # tb_offset=0: IPython 8 would drop as many leading frames as the shell's default
            # offset (1, meant for run_cell's own frame), here the block's; IPython 9 ignores it.
            stb = self.shell.InteractiveTB.structured_traceback(
                etype, exc, exc.__traceback__, tb_offset=0
            )
        content = {"ename": etype.__name__, "evalue": str(exc), "traceback": stb}
        self._handle("error", content)
        if self.echo:
            self.stderr.write("\n".join(stb) + "\n")
            self.stderr.flush()


def _without_our_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback without this module's frames: the one that ran the block, and those of the
    stand-ins it installs (``input()``); what is left is the code's own."""
    frames = []
    while tb is not None:
        if tb.tb_frame.f_code.co_filename != __file__:
            frames.append(tb)
        tb = tb.tb_next
    kept: TracebackType | None = None
    for frame in reversed(frames):
        kept = TracebackType(kept, frame.tb_frame, frame.tb_lasti, frame.tb_lineno)
    return kept


class _EventLoopNoise(logging.Filter):
    """While a block runs, asyncio's reports about tasks that are not the block's (``Task was
    destroyed but it is pending!`` when a collection that the block's allocations triggered
    finds a kernel or kernel-bridge task) go to the process's own stderr, the kernel's log, not
    into the block's output: the model would read them as its code's. A report that names a
    block's code (``<%%reason block N>``) is the block's and stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:
            return True
        if "<%%reason block" in text or (
            record.exc_text is not None and "<%%reason block" in record.exc_text
        ):
            return True
        with contextlib.suppress(Exception):
            sys.__stderr__.write(f"{record.name}: {text}\n")  # type: ignore[union-attr]
        return False


def _json_bundle(data: dict[str, Any]) -> dict[str, Any]:
    """A MIME bundle as a kernel would send it: binary images as base64 text."""
    bundle: dict[str, Any] = {}
    for mime, value in data.items():
        if isinstance(value, bytes):
            bundle[mime] = base64.b64encode(value).decode("ascii")
        elif isinstance(value, (str, dict, list)):
            bundle[mime] = value
        else:
            bundle[mime] = str(value)
    return bundle


__all__ = [
    "BlockTimeout",
    "ShellExecutor",
    "ShellJob",
    "StdinDisabledError",
    "interrupt_main_thread",
]
