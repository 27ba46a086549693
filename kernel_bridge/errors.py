"""The errors kernel-bridge raises on purpose.

Every one derives from `KernelBridgeError`. `UserError` marks what the user can put right (an
option, a config or task file, a model string, a trace path, a missing model or server, a kernel
that cannot start): front ends print its message in one line. Anything else that escapes is a
bug, and the CLI shows its traceback with a line that says so.

Each concrete class also keeps the built-in base it had before (``ValueError``, ``OSError``,
``RuntimeError``), so ``except ValueError`` in code written against older versions still works.
"""

from __future__ import annotations


class KernelBridgeError(Exception):
    """Base of the errors kernel-bridge raises on purpose."""


class UserError(KernelBridgeError):
    """The input or the environment is wrong, not kernel-bridge: shown as one line."""


__all__ = ["KernelBridgeError", "UserError"]
