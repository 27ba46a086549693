"""Kept for existing imports; the execution stage lives in ``kernel_bridge.execution``.

The ``Executor`` protocol is in ``execution/result.py``, ``ShellExecutor`` and ``ShellJob`` in
``execution/shell.py``.
"""

from kernel_bridge.execution.result import Executor, OnOutput, SetupExecutor
from kernel_bridge.execution.shell import (
    ShellExecutor,
    ShellJob,
    StdinDisabledError,
    interrupt_main_thread,
)

__all__ = [
    "Executor",
    "OnOutput",
    "SetupExecutor",
    "ShellExecutor",
    "ShellJob",
    "StdinDisabledError",
    "interrupt_main_thread",
]
