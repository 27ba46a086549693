"""Kept for existing imports; ``RemoteTransport`` lives in ``kernel_bridge/execution/remote.py``."""

from kernel_bridge.execution.remote import RemoteTransport

__all__ = ["RemoteTransport"]
