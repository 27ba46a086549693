"""Kept for existing imports; this module lives in ``kernel_bridge/execution/outputs.py``."""

from kernel_bridge.execution.outputs import (
    ANSI_RE,
    HeadTail,
    OutputCollector,
    describe_data,
    omission_marker,
    short_traceback,
    strip_ansi,
)

__all__ = [
    "ANSI_RE",
    "HeadTail",
    "OutputCollector",
    "describe_data",
    "omission_marker",
    "short_traceback",
    "strip_ansi",
]
