"""kernel-bridge: let a reasoning model think with a live Python kernel.

Names are imported lazily so that ``python -m kernel_bridge._launcher`` (every kernel start) and the
CLI stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "BlockingKernel": "kernel_bridge.execution",
    "ExecutionResult": "kernel_bridge.execution",
    "Kernel": "kernel_bridge.execution",
    "KernelError": "kernel_bridge.execution",
    "KernelPool": "kernel_bridge.execution",
    "Limits": "kernel_bridge.reasoner",
    "Reasoner": "kernel_bridge.reasoner",
    "Trace": "kernel_bridge.trace",
    "TraceStore": "kernel_bridge.trace",
    "make_sampler": "kernel_bridge.samplers",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kernel_bridge' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext kernel_bridge``: the ``%%reason`` magic (see ``kernel_bridge.magic``)."""
    from kernel_bridge.magic import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from kernel_bridge.magic import unload_ipython_extension as unload

    unload(ipython)
