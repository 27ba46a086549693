"""The ``%%reason`` cell magic: a model thinks in the notebook, and its code runs live.

``%load_ext kernel_bridge``, then a cell::

    %%reason --model local
    Which of the first 10,000 primes has the largest digit sum? Keep the list in `primes`.

**Where the code runs.** By default in the notebook's own namespace (``ShellExecutor``): the model
sees ``df``, and what it builds stays. ``--isolated`` uses a sidecar ``Kernel`` per notebook, kept
across cells (``%reason_kernel status|restart|shutdown``) and shut down when the kernel exits.

**Threads.** The magic runs on the kernel's main thread, inside the cell. The ``Reasoner`` runs on a
private event loop thread (``LoopThread``) and posts its events to a mailbox; the main thread takes
them in order, shows each in the cell, and runs the code blocks that ``ShellExecutor`` posts there.
So publishing outputs and running user code both happen on the main thread, as IPython expects.
The Stop button (SIGINT → KeyboardInterrupt in the main thread) cancels the Reasoner's task; the
Reasoner stops its sampler (and interrupts a sidecar block), saves the trace as ``interrupted``, and
the cell ends with one line saying so.

**Cold start.** A model that is not loaded yet loads on a thread of its own (``_load``) while the
main thread shows where it stands: within a second the cell says so (``LoadingView``: one display,
updated in place; an ipywidgets progress bar where ipywidgets is installed, its text in any
frontend) and the sidebar gets the run's comm with ``loading`` events, so it shows the new run, not
the last one, and its Stop works. Stop during the load ends the cell with one line; the load stops
at its next progress report and nothing half-loaded is kept. The libraries' warnings, log lines and
progress bars raised by the threads that load and run the model are dropped
(``loading.quiet_libraries``); the notebook's own code keeps its warnings.

**What the cell shows** (linear in bytes, readable in any frontend): while the run goes, the
thinking as stream text (ipykernel batches it every 0.2 s), each code block as a Markdown display,
its real outputs (live in shared mode; forwarded from the sidecar with ``--isolated``) and a status
line per block. When it ends, that is cleared and one view remains: the whole run as
``text/html`` (thinking, code, real outputs with their images, the answer: what nbviewer, GitHub,
VS Code and ``nbconvert`` show), then the trace as ``application/vnd.kernel-bridge.trace+json``
(packed, as ``kernel_bridge.bundle`` says; the JupyterLab extension draws it and hides the HTML)
with the answer and a one-line summary as ``text/plain``. So the saved notebook holds each run
once, and its second copy, the packed trace, is about a third of the trace's size.

**With the extension attached** (it sets ``ReasonMagics.live_view`` when it connects to the
kernel) the running cell streams nothing of its own: it holds one live bundle (``{"id", "live"}``)
that the extension draws from the run's comm, which it reads anyway for the sidebar, and the
blocks' outputs reach the cell only through that view. One copy of the run crosses the wire while
it runs instead of two; the finished cell is the same either way. A kernel that more than one
frontend watches shows the others only the live bundle's text line until the run ends.

**Comm** (target ``kernel_bridge.trace``, one comm per run, for the JupyterLab extension): the
events of the run in batches, as ``kernel_bridge.events`` defines them (docs/events.schema.json);
the cell only hands them on (``TraceComm``). With no frontend listening the messages cost only
their bytes; nothing waits.

**--cells.** A kernel cannot add cells to a notebook by itself (``set_next_input`` makes one). So
the cells go to the frontend over the comm (the extension inserts them), and, for any frontend,
into ``reason-<trace id>.ipynb`` next to the notebook (the kernel's working directory), linked from
the cell.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import queue
import string
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import clear_output, display, update_display
from IPython.utils.process import arg_split
from traitlets import Bool, Enum, Int, TraitError, Unicode

from kernel_bridge.bundle import TRACE_MIME, live_bundle, pack_trace
from kernel_bridge.errors import UserError
from kernel_bridge.events import (
    COMM_TARGET,
    CellsEvent,
    TraceComm,
    run_cells,
    run_summary,
    step_line,
    trace_html,
)
from kernel_bridge.execution import Kernel, LoopThread, Seconds, ShellExecutor, ShellJob
from kernel_bridge.execution.sandbox import sandbox_problem
from kernel_bridge.loading import (
    LoadStatus,
    LoadStopped,
    QuietLibraries,
    progress_bars_off,
    quiet_libraries,
)
from kernel_bridge.parsing import CodeEnd, TextDelta
from kernel_bridge.reasoner import Reasoner, RunFinished, StepFinished, StepOutput
from kernel_bridge.runspec import RunSpec, RunSpecError, check_model, load_tools
from kernel_bridge.settings import (
    ISOLATED,
    MAX_STEPS,
    MAX_TOKENS,
    PROFILE,
    REASONING_EFFORTS,
    STEP_TIMEOUT,
    TIME_LIMIT,
    count_option,
    seconds_option,
)
from kernel_bridge.trace import Trace

STOP_WAIT_S = 15.0  # how long an interrupted run may take to save its trace


class ReasonError(UserError):
    """A ``%%reason`` run that failed or was stopped; the cell shows it as one line."""

    def _render_traceback_(self) -> list[str]:
        return [f"kernel-bridge: {' '.join(str(self).split())}"]


class ReasonStopped(ReasonError):
    """Stop was pressed before the run began (while its model loaded)."""


# -- what the cell shows ------------------------------------------------------------------------


class CellRenderer:
    """Shows one run's events in the cell as plain stream and display outputs, in order.

    ``live_outputs``: the blocks' outputs already reach the cell as they run (shared mode), so
    ``StepOutput`` events only go to the comm; otherwise (a sidecar kernel) they are shown here.
    ``live_view``: the extension draws the run from the comm, so the cell holds only a live bundle
    until the run ends (needs ``comm``).
    """

    def __init__(
        self,
        *,
        show: str,
        live_outputs: bool,
        trace_path: Path,
        mode: str,
        cells: bool,
        comm: bool,
        live_view: bool = False,
    ) -> None:
        self.show_all = show == "all"
        self.live_outputs = live_outputs
        self.trace_path = trace_path
        self.mode = mode
        self.cells = cells
        self.comm = TraceComm(mode=mode, trace_path=str(trace_path)) if comm else None
        self.live_view = live_view and self.comm is not None
        self.finished = False
        self._trace_id: str | None = None
        self._live_shown = False
        self._line_start = True  # nothing streamed since the last display: skip leading blanks
        self._blank = ""  # trailing blank space not written yet
        self._open_line = False  # prose written without its final newline

    def start(self, trace_id: str, model: str, question: str) -> None:
        """The cell started: open the run's comm now, so the sidebar shows this run while the
        model loads (its trace will take ``trace_id``)."""
        self._trace_id = trace_id
        if self.comm:
            self.comm.open(trace_id, model, question)

    def abandon(self, trace_id: str, error: BaseException) -> None:
        """The run never started (its model failed to load, or Stop came first): the sidebar
        hears why, and the comm closes; the cell shows the error line itself."""
        if self.finished:
            return
        self.finished = True
        if self.comm:
            stopped = isinstance(error, KeyboardInterrupt | ReasonStopped)
            self.comm.abandon(trace_id, "interrupted" if stopped else "error", str(error))

    def handle(self, event: Any) -> None:
        if self.comm:
            self.comm.handle(event)
        if isinstance(event, RunFinished):
            self.finish(event.trace, event.saved_to, event.save_error)
        elif self.live_view:
            self._show_live()
        elif isinstance(event, TextDelta):
            if self.show_all and event.section != "answer":
                self._write(event.raw)
        elif isinstance(event, CodeEnd):
            if self.show_all and event.section != "answer" and event.code.strip():
                self._show_code(event.code)
        elif isinstance(event, StepOutput):
            if self.show_all and not self.live_outputs:
                self._show_output(event.output)
        elif isinstance(event, StepFinished) and self.show_all:
            self._show_status(event.step)

    def idle(self) -> None:
        """Nothing arrived for a moment: send what the comm holds."""
        if self.comm:
            self.comm.flush()

    # -- pieces -------------------------------------------------------------------------------

    def _show_live(self) -> None:
        """The live bundle, once: after the model loaded (the load's display clears the cell's
        outputs when it ends), before the run's first text."""
        if self._live_shown or self._trace_id is None:
            return
        self._live_shown = True
        line = f"kernel-bridge · running · trace {self._trace_id} in {self.trace_path}"
        display(
            {TRACE_MIME: live_bundle(self._trace_id), "text/plain": line},
            raw=True,
            metadata={TRACE_MIME: {"trace_path": str(self.trace_path)}},
        )

    def _write(self, text: str) -> None:
        """Stream prose; blank space is held back until more text follows, so no output of the
        cell starts or ends with empty lines."""
        if self._line_start:
            text = text.lstrip()
        body = text.rstrip()
        if body:
            sys.stdout.write(self._blank + body)
            self._line_start = False
            self._blank = ""
            self._open_line = True
        self._blank += text[len(body) :]

    def _display(self, bundle: dict[str, Any], kind: str, **meta: Any) -> None:
        self._end_line()
        display(bundle, raw=True, metadata={"kernel_bridge": {"kind": kind, **meta}})
        self._line_start, self._blank = True, ""

    def _end_line(self) -> None:
        """End streamed prose with its newline before a display (a terminal would run on)."""
        if self._open_line:
            sys.stdout.write("\n")
            self._open_line = False

    def _show_code(self, code: str) -> None:
        code = code.rstrip("\n")
        fence = "`" * max(3, _longest_run(code, "`") + 1)
        self._display(
            {"text/markdown": f"{fence}python\n{code}\n{fence}", "text/plain": code}, "code"
        )

    def _show_output(self, output: Mapping[str, Any]) -> None:
        kind = output.get("output_type")
        if kind == "stream":
            stream = sys.stderr if output.get("name") == "stderr" else sys.stdout
            stream.write(output.get("text", ""))
            self._line_start = False
        elif kind == "error":
            sys.stderr.write("\n".join(output.get("traceback", [])) + "\n")
            self._line_start = False
        elif kind in ("display_data", "execute_result"):
            self._end_line()
            display(
                dict(output.get("data", {})), raw=True, metadata=dict(output.get("metadata", {}))
            )
            self._line_start, self._blank = True, ""

    def _show_status(self, step: Any) -> None:
        self._display({"text/plain": step_line(step)}, "step", index=step.index, status=step.status)

    def finish(
        self, trace: Trace | None, saved_to: Path | None = None, save_error: str | None = None
    ) -> None:
        """The run ended (or was stopped): the answer, the cells, the trace bundle, the comm.
        ``saved_to`` and ``save_error`` are ``RunFinished``'s: the summary and the bundle's
        ``trace_path`` name the file that holds the trace, a fallback file if the store failed."""
        if self.finished:
            return
        self.finished = True
        if trace is None:
            if self.comm:
                self.comm.finish(None)
            return
        # One view of the run remains: what streamed goes; the trace (the extension's view) and
        # the same run as HTML (any other notebook viewer) take its place.
        self._end_line()
        clear_output()
        held = saved_to or (None if save_error else self.trace_path)  # None: saved nowhere
        where = f"in {held}" if held else "not saved"
        summary = f"kernel-bridge · {run_summary(trace)} · trace {trace.id} {where}"
        # The answer is in the HTML below, so a saved cell shows it once in any viewer.
        if not trace.answer and trace.finish_reason not in ("interrupted", "error"):
            summary = f"no answer\n\n{summary}"
        # The run for viewers without the extension (nbviewer, GitHub, VS Code, nbconvert): an
        # output of its own, since JupyterLab would prefer HTML to the trace within one bundle;
        # the extension hides it (its root is div.kb-run). The trace ends the cell.
        display({"text/html": trace_html(trace, answer_only=not self.show_all)}, raw=True)
        display(
            {TRACE_MIME: pack_trace(trace), "text/plain": summary},
            raw=True,
            metadata={TRACE_MIME: {"trace_path": str(held)} if held else {}},
        )
        if self.cells and trace.segments:
            self._write_cells(trace)
        if self.comm:
            if held:
                self.comm.trace_path = str(held)  # the sidebar's finished event names it too
            self.comm.finish(trace)

    def _write_cells(self, trace: Trace) -> None:
        import nbformat

        notebook, cells = run_cells(trace)
        path = Path.cwd() / f"reason-{trace.id[:8]}.ipynb"
        try:
            nbformat.write(notebook, str(path))
        except OSError as e:
            self._display({"text/plain": f"--cells: could not write {path}: {e}"}, "cells")
            return
        if self.comm:
            self.comm.add(CellsEvent(cells), flush=True)
        text = f"{len(cells)} cells written to {path.name}"
        self._display(
            {
                "text/markdown": f"{len(cells)} cells written to [{path.name}]({path.name})",
                "text/plain": text,
            },
            "cells",
            path=str(path),
        )


class LoadingView:
    """What the cell and the sidebar show while the model loads: one display in the cell, updated
    in place (``update_display``), and ``loading`` events on the run's comm.

    Where ipywidgets is installed the display is a progress bar widget, with its line as
    ``text/plain`` beside it for a frontend without a widget manager; otherwise the line alone.
    Updates go at most every ``UPDATE_S`` seconds (a stage that changes goes at once).
    """

    UPDATE_S = 0.2
    WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
    METADATA: ClassVar[dict[str, Any]] = {"kernel_bridge": {"kind": "loading"}}

    def __init__(self, comm: TraceComm | None) -> None:
        self.comm = comm
        self.display_id: str | None = None
        self._widgets: tuple[Any, Any, Any] | None = None  # (box, bar, label)
        self._shown: LoadStatus | None = None
        self._pending: LoadStatus | None = None
        self._last = 0.0
        self._t0 = time.monotonic()

    def show(self, status: LoadStatus) -> None:
        """A new status; shown now when its stage or message changed, else within UPDATE_S."""
        shown = self._shown
        self._pending = status
        if shown is None or (shown.stage, shown.message) != (status.stage, status.message):
            self._send()
        else:
            self.tick()

    def tick(self) -> None:
        """Show what is pending once UPDATE_S has passed since the last update."""
        if self._pending is not None and time.monotonic() - self._last >= self.UPDATE_S:
            self._send()

    def end(self, loaded: bool) -> None:
        """The load ended: the display goes (the run's own output takes its place), the
        sidebar hears ``ready`` when it loaded."""
        if self._shown is None:
            return
        took = time.monotonic() - self._t0
        if loaded:  # until the first output (the model reads the prompt first): say so
            self._pending = LoadStatus("loading", f"Loaded in {took:.1f} s; thinking…", 1.0)
            self._send(comm=False)
        if self.display_id is not None:
            clear_output(wait=True)  # the run's first output replaces it, without a flicker
        if loaded and self.comm:
            self.comm.loading("ready", f"Loaded in {took:.1f} s", 1.0)
        self._shown = self._pending = None

    def close(self) -> None:
        """The cell ended: close the bar's widgets (shown until the run's first output)."""
        widgets, self._widgets = self._widgets, None
        for widget in widgets or ():
            parts = [getattr(widget, name, None) for name in ("layout", "style")]
            for part in [*(p for p in parts if p is not None), widget]:
                with contextlib.suppress(Exception):
                    part.close()

    def _send(self, comm: bool = True) -> None:
        status, self._pending = self._pending, None
        if status is None:
            return
        stage_changed = self._shown is None or self._shown.stage != status.stage
        self._shown, self._last = status, time.monotonic()
        if self.comm and comm:
            self.comm.loading(status.stage, status.message, status.fraction)
        if self.display_id is None:
            # The line first (importing ipywidgets takes a moment), then the bar in its place.
            self.display_id = uuid.uuid4().hex
            display(
                self._bundle(status), raw=True, display_id=self.display_id, metadata=self.METADATA
            )
            self._widgets = _progress_widgets()
            stage_changed = True
        if self._widgets is None or stage_changed:
            update_display(
                self._bundle(status), raw=True, display_id=self.display_id, metadata=self.METADATA
            )
        if self._widgets is not None:
            _, bar, label = self._widgets
            label.value = status.message
            if status.fraction is not None:
                bar.value = min(max(status.fraction, 0.0), 1.0)
            bar.bar_style = "info" if status.stage == "converting" else ""

    def _bundle(self, status: LoadStatus) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": status.line()}
        if self._widgets is not None:
            box = self._widgets[0]
            view = {"version_major": 2, "version_minor": 0, "model_id": box.model_id}
            bundle[self.WIDGET_MIME] = view
        return bundle


def _progress_widgets() -> tuple[Any, Any, Any] | None:
    """(box, bar, label) of ipywidgets for the loading display; None without ipywidgets."""
    try:
        import ipywidgets
    except ImportError:
        return None
    try:
        bar = ipywidgets.FloatProgress(value=0.0, min=0.0, max=1.0)
        label = ipywidgets.Label("")
        return ipywidgets.HBox([bar, label]), bar, label
    except Exception:  # a kernel without comms (a plain IPython shell): the text alone
        return None


@contextlib.contextmanager
def _busy_until_done(shell: Any) -> Any:
    """Keep the kernel's published state busy while the run lasts.

    A request on the control channel (JupyterLab's debugger asks ``debugInfo`` when a notebook is
    shown; the server nudges with ``kernel_info`` when a client reconnects) is answered while the
    cell runs, and ipykernel ends it with ``status: idle``, which JupyterLab shows for the whole
    kernel. Each such idle is followed here by ``busy`` for the running cell, so the status bar and
    the sidebar say busy until the run ends, as the cell's own ``[*]`` does."""
    kernel: Any = getattr(shell, "kernel", None)
    publish = getattr(kernel, "_publish_status", None)
    get_parent = getattr(kernel, "get_parent", None)
    if publish is None or get_parent is None:
        yield
        return
    cell = get_parent("shell")
    own = "_publish_status" in vars(kernel)

    def publish_status(status: str, channel: str, parent: Any = None) -> None:
        publish(status, channel, parent)
        if status == "idle" and channel != "shell":
            with contextlib.suppress(Exception):
                publish("busy", "shell", cell)

    kernel._publish_status = publish_status
    try:
        yield
    finally:
        if own:
            kernel._publish_status = publish
        else:
            del kernel._publish_status


def _loads_weights(model: str) -> bool:
    """True for the model strings whose sampler loads weights or a tokenizer here (through
    transformers and huggingface_hub, which draw progress bars of their own)."""
    return model.startswith(("local", "hf:", "gguf:", "vllm:"))


def _longest_run(text: str, char: str) -> int:
    longest = run = 0
    for c in text:
        run = run + 1 if c == char else 0
        longest = max(longest, run)
    return longest


# -- the magics ---------------------------------------------------------------------------------


@dataclass
class _Options:
    spec: RunSpec  # limits, tools, trace file, profile: as the CLI's
    model: str | None
    reasoning_effort: str | None
    isolated: bool
    sandbox: bool
    show: str
    cells: bool
    continue_: bool


class _StrictNamespace(dict):  # type: ignore[type-arg]
    """The notebook's variables for ``{name}`` fields; a missing name is an error, not a guess."""

    def __missing__(self, key: str) -> Any:
        raise UsageError(
            f"the question uses {{{key}}}, but the notebook has no variable {key!r}; "
            "write {{ and }} for literal braces (or %reason_config interpolate=False)"
        )


@magics_class
class ReasonMagics(Magics):
    """``%%reason``, ``%reason_config`` and ``%reason_kernel``.

    Every option of ``%%reason`` has a default here, settable with ``%reason_config key=value`` or
    in IPython's config (``c.ReasonMagics.model = "local"``). The sidecar kernel of ``--isolated``
    takes ``c.Kernel.*`` settings; shared mode takes ``c.ShellExecutor.*``.
    """

    model = Unicode(
        None,
        allow_none=True,
        help="Model string ('local', 'hf:ID_OR_PATH', 'scripted:PATH'); None: "
        "$KERNEL_BRIDGE_MODEL, else the config file, else 'local'.",
    ).tag(config=True)
    isolated = Bool(
        ISOLATED,
        help="Run the model's code in a sidecar kernel instead of the notebook's namespace.",
    ).tag(config=True)
    sandbox = Bool(
        False,
        help="With isolated: run the sidecar kernel under bubblewrap (no network, a read-only "
        "system, its own processes).",
    ).tag(config=True)
    max_steps = Int(MAX_STEPS, min=1, help="Most code blocks one run executes.").tag(config=True)
    max_tokens = Int(MAX_TOKENS, min=1, help="Most tokens the model writes in one run.").tag(
        config=True
    )
    timeout = Seconds(STEP_TIMEOUT, help="Seconds one code block may run.").tag(config=True)
    time_limit = Seconds(TIME_LIMIT, help="Seconds one run may take.").tag(config=True)
    trace = Unicode(
        "", help="JSONL file the traces are appended to; empty: the CLI's default store."
    ).tag(config=True)
    show = Enum(
        ["all", "answer"], "all", help="'all': thinking, code and outputs; 'answer': the answer."
    ).tag(config=True)
    cells = Bool(False, help="Also turn each trace into notebook cells (see --cells).").tag(
        config=True
    )
    profile = Unicode(PROFILE, help="Code-block format of the model.").tag(config=True)
    reasoning_effort = Unicode(
        None,
        allow_none=True,
        help="How much an API model thinks: " + ", ".join(REASONING_EFFORTS) + " (None: its own).",
    ).tag(config=True)
    interpolate = Bool(True, help="Fill {name} in the question with notebook variables.").tag(
        config=True
    )
    comm = Bool(True, help="Send live events over the kernel_bridge.trace comm.").tag(config=True)
    live_view = Bool(
        False,
        help="A frontend draws the running cell from the comm (the JupyterLab extension sets this "
        "when it connects): the cell holds one live view instead of streaming its own copy.",
    ).tag(config=True)
    tools = Unicode(
        "",
        help="Toolsets installed for the model, comma-separated: finance, documents, or the name "
        "of a notebook variable holding a Toolbox, a tool or a list of tools.",
    ).tag(config=True)
    cutoff = Unicode("", help="Data cutoff (YYYY-MM-DD) of the finance tools; empty: none.").tag(
        config=True
    )
    authorized_imports = Unicode(
        "", help="Comma-separated modules the model's code may import; empty: any."
    ).tag(config=True)

    _settings = (
        "model",
        "isolated",
        "max_steps",
        "max_tokens",
        "timeout",
        "time_limit",
        "trace",
        "show",
        "cells",
        "profile",
        "reasoning_effort",
        "sandbox",
        "interpolate",
        "comm",
        "live_view",
        "tools",
        "cutoff",
        "authorized_imports",
    )

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._loop: LoopThread | None = None
        self._sidecar: Kernel | None = None
        # Samplers by model string, kept so a model loads once per session. Put a sampler object
        # of your own here to use it as ``%%reason --model NAME``.
        self.samplers: dict[str, Any] = {}
        self.history: list[tuple[str, Trace]] = []  # (question, trace) of this session's runs
        self._toolboxes: dict[tuple[str, str, str], Any] = {}  # built once, installed as is
        atexit.register(self.close)

    # -- %%reason -----------------------------------------------------------------------------

    @magic_arguments()
    @argument("--model", "-m", default=None, help="model string (see %%reason_config)")
    @argument(
        "--isolated",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the code in a sidecar kernel, not the notebook's namespace",
    )
    @argument(
        "--sandbox",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --isolated: the sidecar kernel runs sandboxed (bubblewrap)",
    )
    @argument("--max-steps", type=count_option, default=None, help="most code blocks to run")
    @argument("--max-tokens", type=count_option, default=None, help="most model tokens")
    @argument("--timeout", type=seconds_option, default=None, help="seconds per code block")
    @argument("--time-limit", type=seconds_option, default=None, help="seconds for the whole run")
    @argument("--trace", default=None, metavar="FILE", help="JSONL file to append the trace to")
    @argument("--show", choices=["all", "answer"], default=None, help="what the cell shows")
    @argument(
        "--cells",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="turn the trace into notebook cells",
    )
    @argument(
        "--continue",
        dest="continue_",
        action="store_true",
        help="prepend this session's earlier %%%%reason exchanges",
    )
    @argument("--profile", default=None, help="code-block format of the model")
    @argument(
        "--reasoning-effort",
        dest="reasoning_effort",
        choices=REASONING_EFFORTS,
        default=None,
        help="how much an API model thinks (LiteLLM's reasoning_effort)",
    )
    @argument(
        "--tools",
        default=None,
        help="toolsets for the model (finance, documents) and notebook variables holding tools",
    )
    @argument("--cutoff", default=None, metavar="YYYY-MM-DD", help="data cutoff of the tools")
    @argument(
        "--authorized-imports",
        dest="authorized_imports",
        default=None,
        help="comma-separated modules the model's code may import",
    )
    @cell_magic
    def reason(self, line: str, cell: str) -> None:
        """Think about the question in the cell with a live Python kernel.

        The cell body is the question; ``{name}`` fills in the notebook variable ``name``
        (``{{``/``}}`` for literal braces). The model's code runs in this notebook's namespace
        unless ``--isolated``.
        """
        try:
            args = parse_argstring(self.reason, line)
            options = self._options(args)
            question = self._question(cell)
            name = self._model_name(options.model)
        except KeyboardInterrupt:
            raise ReasonError("interrupted before the run started") from None
        renderer = CellRenderer(
            show=options.show,
            live_outputs=not options.isolated,
            trace_path=options.spec.trace_path,
            mode="isolated" if options.isolated else "shared",
            cells=options.cells,
            comm=self.comm,
            live_view=self.live_view,
        )
        trace_id = uuid.uuid4().hex
        loading = LoadingView(renderer.comm)
        with _busy_until_done(self.shell), quiet_libraries() as quiet:
            try:
                renderer.start(trace_id, name, question)
                sampler = self._sampler(name, options.reasoning_effort, loading, quiet)
                quiet.cover()
                self._run(options, question, sampler, renderer, trace_id)
            except KeyboardInterrupt as e:
                renderer.abandon(trace_id, e)
                raise ReasonError("interrupted before the run started") from None
            except BaseException as e:
                renderer.abandon(trace_id, e)
                raise
            finally:
                loading.close()

    def _options(self, args: argparse.Namespace) -> _Options:
        def pick(name: str) -> Any:
            value = getattr(args, name)
            return getattr(self, name) if value is None else value

        sandbox = bool(pick("sandbox"))
        if sandbox and not pick("isolated"):
            raise UsageError(
                "--sandbox needs --isolated: without it the model's code runs in this notebook's "
                "own kernel, which no sandbox can hold"
            )
        if sandbox and (problem := sandbox_problem()):
            raise UsageError(f"--sandbox: {problem}")
        try:
            check_model(args.model)
            spec = RunSpec.build(
                max_steps=pick("max_steps"),
                max_tokens=pick("max_tokens"),
                timeout=pick("timeout"),
                time_limit=pick("time_limit"),
                trace=pick("trace"),
                profile=pick("profile"),
                tools=self._toolbox(pick("tools"), pick("cutoff"), pick("authorized_imports")),
            )
        except RunSpecError as e:
            raise UsageError(str(e)) from None
        return _Options(
            spec=spec,
            model=pick("model"),
            reasoning_effort=pick("reasoning_effort"),
            isolated=bool(pick("isolated")),
            sandbox=sandbox,
            show=pick("show"),
            cells=bool(pick("cells")),
            continue_=args.continue_,
        )

    def _toolbox(self, tools: str, cutoff: str, authorized: str) -> Any:
        """The session's toolbox for these options (built once, so a sidecar installs it once).

        A name in ``--tools`` that is not a toolset (nor ``module:attribute``) names a notebook
        variable holding a ``Toolbox``, a tool or a list of tools (``--tools finance,my_tools``)."""
        from kernel_bridge.tools import TOOLSETS, Toolbox, ToolError

        names = [n.strip() for n in (tools or "").split(",") if n.strip()]
        loadable = [n for n in names if n in TOOLSETS or ":" in n]  # toolsets, module:attribute
        own = [n for n in names if n not in loadable]
        key = (",".join(loadable), cutoff or "", authorized or "")
        if key not in self._toolboxes:
            try:
                self._toolboxes[key] = load_tools(key[0], key[1] or None, key[2] or None)
            except RunSpecError as e:
                raise UsageError(str(e)) from None
        box = self._toolboxes[key]
        if not own:
            return box
        namespace: dict[str, Any] = self.shell.user_ns if self.shell else {}
        for name in own:
            if name not in namespace:
                raise UsageError(
                    f"--tools {name}: no toolset and no notebook variable of that name; the "
                    f"toolsets are {', '.join(TOOLSETS)}, or name a variable that holds a "
                    "Toolbox, a tool or a list of tools"
                )
            value = namespace[name]
            try:
                box = box.merge(Toolbox.of(value if isinstance(value, list | tuple) else [value]))
            except (ToolError, TypeError) as e:
                raise UsageError(f"--tools {name}: {e}") from None
        # The same objects as last time: keep that toolbox, so a sidecar does not install it again.
        own_key = (",".join(names), key[1], key[2])
        if self._toolboxes.get(own_key) != box:
            self._toolboxes[own_key] = box
        return self._toolboxes[own_key]

    def _question(self, cell: str) -> str:
        question = cell.strip()
        if not question:
            raise UsageError("write the question in the cell, below the %%reason line")
        if not self.interpolate:
            return question
        try:
            namespace = _StrictNamespace(self.shell.user_ns if self.shell else {})
            return string.Formatter().vformat(question, (), namespace)
        except UsageError:
            raise
        except (ValueError, IndexError, KeyError, AttributeError, TypeError) as e:
            raise UsageError(
                f"cannot fill in the question's {{…}} fields ({type(e).__name__}: {e}); "
                "write {{ and }} for literal braces (or %reason_config interpolate=False)"
            ) from None

    def _model_name(self, model: str | None) -> str:
        """The model string a run uses (``--model``, else the environment, the config file)."""
        from kernel_bridge.samplers import ModelSpecError, resolve_model

        try:
            return resolve_model(model).strip()
        except ModelSpecError as e:
            raise UsageError(str(e)) from None

    def _sampler(
        self,
        name: str,
        reasoning_effort: str | None,
        loading: LoadingView,
        quiet: QuietLibraries,
    ) -> Any:
        """The session's sampler for ``name``, loaded the first time (``_load``)."""
        from kernel_bridge.samplers import ModelSpecError

        # The same API model asked to think is another sampler than the one that is not.
        key = name if reasoning_effort is None else f"{name} ({reasoning_effort} effort)"
        if key in self.samplers:
            return self.samplers[key]
        try:
            sampler = self._load(name, reasoning_effort, loading, quiet)
        except (ModelSpecError, FileNotFoundError) as e:
            raise UsageError(str(e)) from None
        except KeyboardInterrupt:
            raise ReasonStopped(
                f"interrupted while loading model {name!r}; nothing was kept, so the next "
                "%%reason loads it again"
            ) from None
        except Exception as e:  # a model that fails to load: one line, not a traceback
            raise ReasonError(f"cannot load model {name!r}: {type(e).__name__}: {e}") from None
        if not name.startswith("scripted:"):  # scripts are re-read, so edits take effect
            self.samplers[key] = sampler
        return sampler

    def _load(
        self,
        name: str,
        reasoning_effort: str | None,
        view: LoadingView,
        quiet: QuietLibraries,
    ) -> Any:
        """Make the sampler on a thread of its own while this (main) thread shows the load's
        progress; Stop (KeyboardInterrupt here) makes the load stop at its next progress report
        and is re-raised once it has (or after ``STOP_WAIT_S``)."""
        from kernel_bridge.samplers import make_sampler

        mailbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        stop = threading.Event()

        def progress(status: LoadStatus) -> None:
            if stop.is_set():
                raise LoadStopped(f"stopped while loading {name}")
            mailbox.put(("status", status))

        def load() -> None:
            try:
                # A local model's libraries would draw their own bars into the cell.
                bars = progress_bars_off() if _loads_weights(name) else contextlib.nullcontext()
                with bars:
                    sampler = make_sampler(
                        name, reasoning_effort=reasoning_effort, progress=progress
                    )
                mailbox.put(("done", sampler))
            except BaseException as e:  # handed to the main thread, which raises it there
                mailbox.put(("failed", e))

        thread = threading.Thread(target=load, name="kernel-bridge-load", daemon=True)
        loaded = False
        try:
            if _loads_weights(name):  # said now, not at the load's first report: its imports
                view.show(LoadStatus("loading", f"Loading model {name}…", None))  # take a second
            thread.start()
            while True:
                try:
                    kind, item = mailbox.get(timeout=0.1)
                except queue.Empty:
                    view.tick()
                    continue
                quiet.cover()  # a library imported by the load set up its logger
                if kind == "status":
                    view.show(item)
                elif kind == "done":
                    loaded = True
                    return item
                else:
                    raise item
        except KeyboardInterrupt:
            stop.set()
            give_up = time.monotonic() + STOP_WAIT_S
            with contextlib.suppress(KeyboardInterrupt):  # a second Stop: wait no longer
                view.show(LoadStatus("loading", "Stopping the load…", None))
                while thread.is_alive() and time.monotonic() < give_up:
                    thread.join(0.1)
            raise
        finally:
            view.end(loaded)

    def _messages(self, question: str, continue_: bool) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if continue_:
            for previous, trace in self.history:
                if trace.text:
                    messages.append({"role": "user", "content": previous})
                    messages.append({"role": "assistant", "content": trace.text})
        messages.append({"role": "user", "content": question})
        return messages

    def _run(
        self,
        options: _Options,
        question: str,
        sampler: Any,
        renderer: CellRenderer,
        trace_id: str,
    ) -> None:
        """One run: the Reasoner on the loop thread, this (main) thread shows and executes."""
        spec = options.spec
        loop = self._loop_thread()
        mailbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        executor: Any
        if options.isolated:
            executor = self._sidecar_kernel(options.sandbox)
        else:
            executor = ShellExecutor(
                self.shell,
                submit=lambda job: mailbox.put(("job", job)),
                parent=self,
                echo=options.show == "all" and not renderer.live_view,
            )
        try:
            reasoner = spec.reasoner(sampler, executor)
        except RunSpecError as e:
            raise UsageError(str(e)) from None
        messages = self._messages(question, options.continue_)

        async def produce() -> None:
            async for event in reasoner.stream(messages, trace_id=trace_id):
                mailbox.put(("event", event))

        async def start() -> asyncio.Task[None]:
            task = asyncio.get_running_loop().create_task(produce())
            task.add_done_callback(lambda t: mailbox.put(("done", t)))
            return task

        task = loop.run(start())
        stopped = self._serve(
            mailbox, renderer, lambda: loop.loop.call_soon_threadsafe(task.cancel)
        )
        trace = reasoner.trace
        try:
            renderer.finish(trace)
        except KeyboardInterrupt:
            stopped = True
        if trace is not None:
            self.history.append((question, trace))
        self._report(trace, task if task.done() else None, stopped, reasoner, spec.trace_path)

    def _serve(
        self, mailbox: queue.Queue[tuple[str, Any]], renderer: CellRenderer, cancel: Any
    ) -> bool:
        """Show events and run blocks on this thread until the run is done; True if stopped."""
        stopped = False
        give_up = float("inf")
        while True:
            try:
                try:
                    kind, item = mailbox.get(timeout=0.1)
                except queue.Empty:
                    if time.monotonic() > give_up:
                        return stopped
                    renderer.idle()
                    continue
                if kind == "done":
                    return stopped
                if kind == "job":
                    job: ShellJob = item
                    job.cancel() if stopped else job.run()
                else:
                    renderer.handle(item)
            except KeyboardInterrupt:
                if not stopped:
                    stopped = True
                    give_up = time.monotonic() + STOP_WAIT_S
                    cancel()

    def _report(
        self,
        trace: Trace | None,
        task: asyncio.Task[None] | None,
        stopped: bool,
        reasoner: Reasoner,
        path: Path,
    ) -> None:
        """End the cell: quietly for a finished run saved to ``path``, with one error line
        otherwise (as the CLI's: a store that could not be written is named, with why and where
        the trace went instead)."""
        failure = task.exception() if task is not None and not task.cancelled() else None
        if failure is not None or trace is None:
            raise ReasonError(f"the run failed: {type(failure).__name__}: {failure}")
        if trace.finish_reason is None:  # still winding down after STOP_WAIT_S
            raise ReasonError(
                f"interrupted; the run is still stopping, trace {trace.id} goes to {path}"
            )
        problem = reasoner.save_problem
        where = problem or f"trace {trace.id} saved to {path}"
        if trace.finish_reason == "interrupted":
            raise ReasonError(f"interrupted; {where}")
        if trace.finish_reason == "error":
            raise ReasonError(f"{trace.error}; {where}")
        if problem is not None:
            raise ReasonError(problem)

    # -- the sidecar kernel and the loop thread -----------------------------------------------

    def _loop_thread(self) -> LoopThread:
        if self._loop is None:
            self._loop = LoopThread()
        return self._loop

    def _sidecar_kernel(self, sandbox: bool | None = None) -> Kernel:
        """The notebook's sidecar kernel (started by the first run that needs it); ``sandbox``
        True or False must match a running one (None: whichever runs)."""
        if self._sidecar is not None and sandbox is not None and self._sidecar.sandbox != sandbox:
            running = "sandboxed" if self._sidecar.sandbox else "not sandboxed"
            raise UsageError(
                f"the sidecar kernel runs {running}: `%reason_kernel shutdown` first to switch"
            )
        if self._sidecar is None:
            options: dict[str, Any] = {"sandbox": bool(sandbox)}
            configured = self.config.get("Kernel", {})
            if "workspace" not in configured:
                options["workspace"] = os.getcwd()  # the notebook's files, e.g. its data
                if "track_depth" not in configured:
                    # New files are looked for next to the notebook only: walking a notebook's
                    # folder (data, a virtualenv) before and after each block cost 0.3 s a block.
                    options["track_depth"] = 0
            self._sidecar = Kernel(parent=self, **options)
        return self._sidecar

    @line_magic
    def reason_kernel(self, line: str) -> None:
        """``%reason_kernel status|restart|shutdown``: the sidecar kernel of ``--isolated``."""
        action = line.strip() or "status"
        kernel = self._sidecar
        if action == "status":
            if kernel is None or not kernel.started:
                print("sidecar kernel: not started (the first %%reason --isolated starts it)")
            else:
                print(
                    f"sidecar kernel: running, pid {kernel.pid}, workspace {kernel.workspace_path}"
                )
            return
        try:
            if action == "restart":
                kernel = self._sidecar_kernel()
                loop = self._loop_thread()
                loop.run(kernel.restart() if kernel.started else kernel.start())
                print("sidecar kernel restarted: its variables are gone")
            elif action in ("shutdown", "stop"):
                if kernel is not None and self._loop is not None:
                    self._loop.run(kernel.shutdown())
                self._sidecar = None
                print("sidecar kernel shut down")
            else:
                raise UsageError(
                    f"%reason_kernel takes status, restart or shutdown, not {action!r}"
                )
        except KeyboardInterrupt:
            raise ReasonError(f"interrupted during %reason_kernel {action}") from None
        except (RuntimeError, OSError) as e:
            raise ReasonError(f"%reason_kernel {action} failed: {e}") from None

    # -- %reason_config -----------------------------------------------------------------------

    @line_magic
    def reason_config(self, line: str) -> None:
        """``%reason_config key=value ...`` sets defaults of ``%%reason``; alone, lists them."""
        tokens = arg_split(line)
        traits: dict[str, Any] = self.traits()
        if not tokens:
            for name in self._settings:
                print(f"{name} = {getattr(self, name)!r}  # {traits[name].help}")
            return
        updates = {}
        for token in tokens:
            key, sep, value = token.partition("=")
            name = key.strip().replace("-", "_")
            if not sep:
                raise UsageError(f"%reason_config takes key=value, got {token!r}")
            if name not in self._settings:
                raise UsageError(
                    f"no setting {key!r}; the settings are: {', '.join(self._settings)}"
                )
            trait = traits[name]
            try:
                updates[name] = trait.validate(self, trait.from_string(value))
            except (TraitError, ValueError) as e:
                raise UsageError(f"{key}={value}: {e}") from None
        for name, value in updates.items():
            setattr(self, name, value)

    # -- life cycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Shut the sidecar kernel down and stop the loop thread (at exit, or on unload)."""
        loop, self._loop = self._loop, None
        kernel, self._sidecar = self._sidecar, None
        if loop is None:
            return
        if kernel is not None:
            future = asyncio.run_coroutine_threadsafe(kernel.shutdown(), loop.loop)
            with contextlib.suppress(Exception):
                future.result(timeout=10)
        loop.close()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext kernel_bridge``: ``%%reason``, ``%reason_config`` and ``%reason_kernel``."""
    ipython.register_magics(ReasonMagics(shell=ipython))


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext kernel_bridge``: shuts the sidecar down and removes the magics."""
    manager = ipython.magics_manager
    magics = manager.registry.pop("ReasonMagics", None)
    if magics is not None:
        atexit.unregister(magics.close)
        magics.close()
    manager.magics["cell"].pop("reason", None)
    manager.magics["line"].pop("reason_config", None)
    manager.magics["line"].pop("reason_kernel", None)


__all__ = [
    "COMM_TARGET",
    "TRACE_MIME",
    "CellRenderer",
    "ReasonError",
    "ReasonMagics",
    "TraceComm",
    "load_ipython_extension",
    "unload_ipython_extension",
]
