"""The defaults of a run and the checks of its numbers, in one place for every front end.

``Limits``, the CLI's flags, the magic's settings and the JupyterLab extension's settings schema
(``labextension/schema/plugin.json``, whose ``%%reason`` defaults ``lab_schema`` writes) all take
their defaults from here; counts and durations are checked by ``check_count``/``check_seconds``.
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when first used, so that the CLI starts fast
    from kernel_bridge.execution.settings import Seconds

MAX_STEPS = 20  # code blocks one run executes
MAX_TOKENS = 8192  # tokens the model writes in one run
STEP_TIMEOUT = 30.0  # seconds one block may run
TIME_LIMIT = 600.0  # seconds one run may take
PROFILE = "auto"  # the code-block format: the one the model's chat template implies
REASONING_EFFORTS = ("none", "low", "medium", "high")  # LiteLLM's reasoning_effort values
ISOLATED = False  # %%reason runs the model's code in the notebook's namespace

# The extension's settings that are %%reason defaults in each kernel (kernel_bridge.lab's
# apply_settings), by schema key: the extension compares them with these to know what changed.
LAB_DEFAULTS: dict[str, Any] = {"defaultModel": "", "isolated": ISOLATED, "maxSteps": MAX_STEPS}


def default_trace_path() -> Path:
    """Where traces go unless ``--trace`` says otherwise: ``$KERNEL_BRIDGE_HOME/traces.jsonl``."""
    home = os.environ.get("KERNEL_BRIDGE_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "kernel-bridge"
    )
    return Path(home) / "traces.jsonl"


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


def seconds_option(text: str) -> float:
    """An argparse type: a finite number of seconds above 0 (``nan`` and ``inf`` are refused)."""
    try:
        return check_seconds(float(text), "seconds")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a finite number of seconds above 0, got {text!r}"
        ) from None


def count_option(text: str) -> int:
    """An argparse type: a whole number, at least 1."""
    try:
        return check_count(int(text), "count")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, at least 1, got {text!r}"
        ) from None


def lab_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The extension's settings schema with the ``%%reason`` defaults of this module.

    Only the ``default`` of the ``LAB_DEFAULTS`` properties changes; titles, descriptions and the
    extension's own settings are the schema's.
    """
    updated = dict(schema)
    properties = {key: dict(value) for key, value in schema["properties"].items()}
    for key, default in LAB_DEFAULTS.items():
        if key not in properties:
            raise KeyError(f"the extension's settings schema has no property {key!r}")
        properties[key]["default"] = default
    updated["properties"] = properties
    return updated


def __getattr__(name: str) -> Any:
    if name == "Seconds":  # a traitlet: loads traitlets, which the CLI does not need to start
        from kernel_bridge.execution.settings import Seconds

        return Seconds
    raise AttributeError(f"module 'kernel_bridge.settings' has no attribute {name!r}")


__all__ = [
    "ISOLATED",
    "LAB_DEFAULTS",
    "MAX_STEPS",
    "MAX_TOKENS",
    "PROFILE",
    "REASONING_EFFORTS",
    "STEP_TIMEOUT",
    "TIME_LIMIT",
    "Seconds",
    "check_count",
    "check_seconds",
    "count_option",
    "default_trace_path",
    "lab_schema",
    "seconds_option",
]
