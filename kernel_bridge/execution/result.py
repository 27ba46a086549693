"""What running a block of model code gives back, whatever ran it, and what runs it.

``ExecutionResult`` is built in one place, ``ExecutionResult.from_collector``, for a kernel and
for the notebook's own shell alike. ``Executor`` is what the Reasoner runs code with;
``SetupExecutor`` adds the one thing tools need from it, ``add_setup``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from nbformat import NotebookNode

from kernel_bridge.errors import UserError
from kernel_bridge.execution.outputs import OutputCollector, omitted_output, shorten

Status = Literal["ok", "error", "timeout", "died"]
BACKGROUND_NOTE = (
    "[background output, not from this block (a thread of an earlier block, "
    "or output after a block ended):]"
)
OnOutput = Callable[[NotebookNode], None]


class KernelError(UserError, RuntimeError):
    """The kernel could not be started or reached; the message says what to do."""


@dataclass
class ExecutionResult:
    """What one block of code did in the kernel.

    ``outputs`` are nbformat v4 outputs ready for a notebook cell; ``output_text`` is what the model
    reads (streams in order, last value, short ANSI-free traceback, capped head and tail).
    ``background_output`` is text that arrived while this block ran or before it but is not its
    own (a thread of an earlier block printing); ``output_text`` ends with a labelled excerpt.
    Output lost on the way (dropped by a server's rate limit, or a channel that went silent) makes
    the status ``error`` with ``error_name`` ``OutputLost``, never ``ok``.
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
    background_output: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outputs"] = [dict(o) for o in self.outputs]
        return d

    @classmethod
    def from_collector(
        cls,
        collector: OutputCollector,
        status: Status,
        started: float,
        duration: float,
        *,
        timeout: float | None = None,
        reply: dict[str, Any] | None = None,
        restarted: bool = False,
        lost: str | None = None,
        background: str = "",
    ) -> ExecutionResult:
        """The result of a block whose outputs ``collector`` gathered.

        ``reply`` is a kernel's ``execute_reply`` content: the error when no error output came,
        and the execution count. A timed-out block gets a note naming ``timeout``; a block whose
        kernel died gets a ``KernelDied`` error and a note. ``lost`` says what output did not
        arrive: an ``ok`` block becomes an ``OutputLost`` error. ``background`` is output that is
        not this block's (see ``BackgroundOutput``).
        """
        content = reply or {}
        ename = evalue = None
        tb: list[str] = []
        limits = collector.limits
        if collector.error is not None:
            ename, evalue, tb = collector.error
        elif status == "error":  # an error reply without an iopub error message
            ename = shorten(str(content.get("ename", "")), 200)
            evalue = shorten(str(content.get("evalue", "")), limits.error_cap)
        if status == "died" and ename is None:
            ename, evalue = "KernelDied", "the kernel process died while running this block"
        if lost is not None and status == "ok":
            status, ename, evalue = "error", "OutputLost", lost
        output_text = str(collector.text)
        for note in collector.notes():
            output_text = append_note(output_text, note)
        if status == "died":
            output_text = append_note(output_text, f"{ename}: {evalue}")
        if lost is not None:
            output_text = append_note(output_text, f"[OutputLost: {lost}]")
        outputs = collector.outputs
        if lost is not None:
            outputs.append(omitted_output(f"[OutputLost: {lost}]"))
        result = cls(
            status=status,
            output_text=output_text.rstrip("\n"),
            outputs=outputs,
            stdout=str(collector.stdout),
            stderr=str(collector.stderr),
            error_name=ename,
            error_value=evalue,
            traceback=tb,
            execution_count=content.get("execution_count", collector.execution_count),
            started=started,
            duration_s=duration,
            restarted=restarted,
            background_output=background,
        )
        if status == "timeout" and timeout is not None:
            result.add_note(f"[timed out after {timeout:g} s and interrupted]")
        if background:
            excerpt = shorten(background.strip("\n"), max(limits.text_cap // 2, 200))
            result.add_note(f"{BACKGROUND_NOTE}\n{excerpt}")
        return result

    @classmethod
    def refused(cls, problem: tuple[str, str], started: float) -> ExecutionResult:
        """The result for code that cannot be sent to a kernel (see ``check_code``)."""
        name, value = problem
        return cls(
            status="error",
            output_text=f"{name}: {value}",
            error_name=name,
            error_value=value,
            started=started,
        )

    def add_note(self, note: str) -> None:
        """Append a line such as ``[the kernel was restarted; variables are lost]``."""
        self.output_text = append_note(self.output_text, note)


def append_note(text: str, note: str) -> str:
    return f"{text.rstrip()}\n{note}" if text.strip() else note


def check_code(code: str | bytes) -> tuple[str, tuple[str, str] | None]:
    """Validate a block before it reaches the kernel: text, UTF-8 clean, not empty.

    Returns the code as text and None, or ``""`` and the (error name, message) to refuse it with.
    """
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


# -- executors --------------------------------------------------------------------------------


class Executor(Protocol):
    """What the Reasoner runs code with: a ``Kernel`` (its own process) or a ``ShellExecutor``."""

    @property
    def started(self) -> bool: ...

    async def start(self) -> Any: ...

    async def execute(
        self, code: str, timeout: float | None = None, on_output: OnOutput | None = None
    ) -> ExecutionResult: ...


class Guard(Protocol):
    """A guard on model code (``kernel_bridge.tools.guard``): installed, then on inside
    ``enabled()`` when ``active`` is False."""

    active: bool

    def install(self) -> object: ...

    def uninstall(self) -> None: ...

    def enabled(self) -> AbstractContextManager[None]: ...


class Setup(Protocol):
    """What model code finds in place before its first block (a ``Toolbox``), in both forms an
    executor may take: code for a kernel process, or objects for an executor in this process."""

    def install_code(self) -> str:
        """Code that defines the names and puts the guards in place, run in the kernel."""
        ...

    def namespace(self) -> dict[str, Any]:
        """The names as objects."""
        ...

    def guards(self) -> Sequence[Guard]:
        """The guards as objects, to be on while model code runs."""
        ...


@runtime_checkable
class SetupExecutor(Executor, Protocol):
    """An executor that can install a ``Setup`` (tools): ``Kernel`` runs its code now and after
    every restart; ``ShellExecutor`` takes its objects, with the guards on for model blocks only."""

    async def add_setup(self, setup: Setup) -> None: ...


__all__ = [
    "BACKGROUND_NOTE",
    "ExecutionResult",
    "Executor",
    "Guard",
    "KernelError",
    "OnOutput",
    "Setup",
    "SetupExecutor",
    "Status",
    "append_note",
    "check_code",
]
