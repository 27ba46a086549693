"""The execution stage: where a block of model code runs and what comes back.

Layers, each importing only those above it in this list:

- ``outputs``: kernel messages → nbformat outputs and the model's bounded output text
- ``result``: ``ExecutionResult`` (built in one place), ``KernelError``, the ``Executor`` protocol
- ``settings``: ``BlockSettings`` (what executors share), ``Seconds``, ``check_seconds``,
  ``check_count``
- ``cgroup``: ``PidsCgroup``, a pids cgroup per local kernel (its process limit)
- ``sandbox``: bubblewrap's command line for a sandboxed kernel, ``sandbox_problem``
- ``transport``: the ``Transport`` protocol, ``LocalTransport`` (how a local kernel is launched),
  ``scrub_environment`` (the allow-list environment)
- ``remote``: ``RemoteTransport`` (Jupyter Server, Kernel Gateway)
- ``kernel``: ``Kernel``, the async core
- ``shell``: ``ShellExecutor``, the notebook's own IPython shell
- ``pool``: ``KernelPool``; ``sync``: ``BlockingKernel``, ``LoopThread``

Names are imported lazily (``_EXPORTS``; the imports under ``TYPE_CHECKING`` are for type
checkers), so that the kernel command (``_launcher``) and a module that needs only ``outputs``
do not load jupyter_client and the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernel_bridge.execution.kernel import Kernel
    from kernel_bridge.execution.outputs import OutputCollector
    from kernel_bridge.execution.pool import KernelPool
    from kernel_bridge.execution.remote import RemoteTransport
    from kernel_bridge.execution.result import (
        ExecutionResult,
        Executor,
        KernelError,
        Setup,
        SetupExecutor,
        Status,
    )
    from kernel_bridge.execution.settings import (
        BlockSettings,
        Seconds,
        check_count,
        check_seconds,
    )
    from kernel_bridge.execution.shell import ShellExecutor, ShellJob
    from kernel_bridge.execution.sync import BlockingKernel, LoopThread
    from kernel_bridge.execution.transport import LocalTransport, Transport, scrub_environment

_EXPORTS = {
    "BlockSettings": "settings",
    "BlockingKernel": "sync",
    "ExecutionResult": "result",
    "Executor": "result",
    "Kernel": "kernel",
    "KernelError": "result",
    "KernelPool": "pool",
    "LocalTransport": "transport",
    "LoopThread": "sync",
    "OutputCollector": "outputs",
    "RemoteTransport": "remote",
    "Seconds": "settings",
    "Setup": "result",
    "SetupExecutor": "result",
    "ShellExecutor": "shell",
    "ShellJob": "shell",
    "Status": "result",
    "Transport": "transport",
    "check_count": "settings",
    "check_seconds": "settings",
    "scrub_environment": "transport",
}

__all__ = [
    "BlockSettings",
    "BlockingKernel",
    "ExecutionResult",
    "Executor",
    "Kernel",
    "KernelError",
    "KernelPool",
    "LocalTransport",
    "LoopThread",
    "OutputCollector",
    "RemoteTransport",
    "Seconds",
    "Setup",
    "SetupExecutor",
    "ShellExecutor",
    "ShellJob",
    "Status",
    "Transport",
    "check_count",
    "check_seconds",
    "scrub_environment",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
