"""Kept for existing imports; the execution stage lives in ``kernel_bridge.execution``.

``Kernel`` is in ``execution/kernel.py``, ``ExecutionResult`` and ``KernelError`` in
``execution/result.py``, ``KernelPool`` in ``execution/pool.py``, ``BlockingKernel`` and
``LoopThread`` in ``execution/sync.py``, the duration checks and ``BlockSettings`` in
``execution/settings.py``, ``scrub_environment`` and the transports in ``execution/transport.py``.
"""

from kernel_bridge.execution.kernel import RESTARTED_NOTE, Kernel
from kernel_bridge.execution.pool import KernelPool
from kernel_bridge.execution.result import ExecutionResult, KernelError, Status
from kernel_bridge.execution.settings import BlockSettings, Seconds, check_count, check_seconds
from kernel_bridge.execution.sync import BlockingKernel, LoopThread
from kernel_bridge.execution.transport import (
    LocalTransport,
    Transport,
    queue_get,
    scrub_environment,
)

__all__ = [
    "RESTARTED_NOTE",
    "BlockSettings",
    "BlockingKernel",
    "ExecutionResult",
    "Kernel",
    "KernelError",
    "KernelPool",
    "LocalTransport",
    "LoopThread",
    "Seconds",
    "Status",
    "Transport",
    "check_count",
    "check_seconds",
    "queue_get",
    "scrub_environment",
]
