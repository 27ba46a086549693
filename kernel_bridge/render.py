"""Terminal rendering of Reasoner events (live) and of saved traces, with rich.

Thinking is dim, code is highlighted as a block once it is complete (streamed plainly before),
outputs follow their block, a spinner runs while the kernel works, the answer ends the run.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.status import Status
from rich.syntax import Syntax
from rich.text import Text

from kernel_bridge.events import kernel_note, run_summary, step_line
from kernel_bridge.execution.outputs import describe_data, short_traceback
from kernel_bridge.parsing import CodeDelta, CodeEnd, CodeStart, TextDelta
from kernel_bridge.reasoner import RunFinished, RunStarted, StepFinished, StepOutput, StepStarted
from kernel_bridge.trace import Trace, trace_pieces

_SECTION_STYLE = {"think": "dim italic", "text": "", "answer": "bold"}

# Control characters (C0 but newline and tab, DEL, C1) and bidirectional overrides, as escapes:
# model text and kernel output must not set the window title, clear the screen or write the
# clipboard of the terminal that shows them.
_VISIBLE = {
    code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0)) if code not in (9, 10)
} | {code: f"\\u{code:04x}" for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def visible(text: str) -> str:
    """``text`` safe for a terminal: control characters shown as ``\\x1b``-style escapes, never
    passed through; newlines and tabs kept (and ``\\r\\n`` read as a newline)."""
    return text.replace("\r\n", "\n").translate(_VISIBLE)


_STATUS_STYLE = {"ok": "green", "error": "red", "timeout": "yellow", "died": "red bold"}


class TerminalRenderer:
    """Prints one run's events as they arrive."""

    def __init__(
        self, color: bool = True, console: Console | None = None, error_detail: bool = True
    ) -> None:
        """``error_detail=False`` leaves a failed run's error message out of the summary line
        (the CLI prints it as one line on stderr instead)."""
        self.error_detail = error_detail
        self.console = console or Console(
            highlight=False,
            no_color=not color,
            force_terminal=None if color else False,
            stderr=False,
        )
        self._status: Status | None = None
        self._at_line_start = True

    def _write(self, text: str, style: str = "") -> None:
        if text:
            self.console.print(Text(visible(text), style=style), end="")
            self._at_line_start = text.endswith("\n")

    def _newline(self) -> None:
        if not self._at_line_start:
            self.console.print()
            self._at_line_start = True

    def handle(self, event: Any) -> None:
        if isinstance(event, RunStarted):
            question = visible(event.trace.question or "")
            self.console.rule(Text(question, style="bold"), align="left")
        elif isinstance(event, TextDelta):
            self._write(event.raw, _SECTION_STYLE[event.section])
        elif isinstance(event, CodeStart):
            self._newline()
            self._write(event.raw, "cyan dim")
        elif isinstance(event, CodeDelta):
            self._write(event.raw, "cyan")
        elif isinstance(event, CodeEnd):
            self._write(event.raw, "cyan dim")
            self._newline()
        elif isinstance(event, StepStarted):
            self._status = self.console.status(f"running block {event.index + 1}…", spinner="dots")
            self._status.start()
        elif isinstance(event, StepOutput):
            self._write_output(event.output)
        elif isinstance(event, StepFinished):
            self._stop_spinner()
            self._newline()
            step = event.step
            style = _STATUS_STYLE.get(step.status, "")
            if not step.outputs and step.status == "ok":
                self._write("[no output]\n", "dim")
            note = kernel_note(step)  # interrupted, restarted
            if note is not None:
                self._write(note + "\n", style)
            self._write(step_line(step, notes=False) + "\n", style + " dim")
        elif isinstance(event, RunFinished):
            self._stop_spinner()
            self._newline()
            self._finish(event.trace)

    def _write_output(self, output: Any) -> None:
        kind = output.get("output_type")
        if kind == "stream":
            self._write(output.get("text", ""), "red" if output.get("name") == "stderr" else "")
        elif kind == "error":
            self._newline()
            self._write(short_traceback(output.get("traceback", [])) + "\n", "red")
        else:
            self._newline()
            self._write(describe_data(output.get("data", {})) + "\n")

    def _stop_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def _finish(self, trace: Trace) -> None:
        if trace.answer:
            self.console.print(
                Panel(
                    Markdown(visible(trace.answer)),
                    title="answer",
                    title_align="left",
                    border_style="green",
                )
            )
        self.note(run_summary(trace, error=self.error_detail, tokens=True))

    def note(self, text: str) -> None:
        self._newline()
        self.console.print(Text(visible(text), style="dim"))

    def close(self) -> None:
        self._stop_spinner()

    def show_trace(self, trace: Trace) -> None:
        """Print a saved trace: its thinking, code, outputs and answer, from its spans."""
        title = visible(f"{trace.id} · {trace.model} · {trace.created}")
        self.console.rule(Text(title, style="dim"))
        if trace.question:
            self.console.print(Text(visible(trace.question), style="bold"))
        for piece in trace_pieces(trace):
            if piece.kind != "code":
                self._write(piece.text, "" if piece.whole_segment else _SECTION_STYLE[piece.kind])
                continue
            self._newline()
            self.console.print(
                Syntax(visible(piece.text.rstrip("\n")), "python", theme="ansi_dark")
            )
            self._at_line_start = True
            step = piece.ran
            if step is not None:
                style = _STATUS_STYLE.get(step.status, "") if step.status != "ok" else ""
                self._write((step.output_text or "[no output]") + "\n", style)
        self._newline()
        self._finish(trace)
