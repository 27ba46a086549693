"""Settings every executor of model code shares, and the checks that keep limits meaningful.

``BlockSettings`` (timeout, output limits) is the base of ``Kernel`` and ``ShellExecutor``; the
``Seconds`` traitlet refuses values that would silently remove a limit (NaN, infinity), with the
checks of ``kernel_bridge.settings``.
"""

from __future__ import annotations

from typing import Any

from traitlets import Float, Int, TraitError
from traitlets.config import LoggingConfigurable

from kernel_bridge.execution.outputs import OutputLimits
from kernel_bridge.settings import STEP_TIMEOUT, check_count, check_seconds


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


class BlockSettings(LoggingConfigurable):
    """What every executor of model code shares: the block timeout and how much output is kept."""

    timeout = Seconds(STEP_TIMEOUT, help="Seconds a block may run before it is interrupted.").tag(
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
    max_outputs = Int(
        200,
        min=1,
        help="Notebook outputs kept per block (streams, displays, results); the rest are "
        "counted in a marker output. An error is always kept.",
    ).tag(config=True)
    max_output_bytes = Int(
        4 << 20,
        min=0,
        help="Size of the outputs kept per block (display data, stream text, errors, counted "
        "as characters of JSON text); a display past it is cut to one line of text.",
    ).tag(config=True)

    @property
    def output_limits(self) -> OutputLimits:
        """The limits an ``OutputCollector`` keeps a block's output within."""
        return OutputLimits(
            text_cap=self.output_cap,
            store_cap=self.store_cap,
            max_outputs=self.max_outputs,
            max_output_bytes=self.max_output_bytes,
        )


__all__ = ["BlockSettings", "Seconds", "check_count", "check_seconds"]
