"""The local kernel's command, ``python -m kernel_bridge._launcher [limits] -f CONN``.

The launcher lives in ``kernel_bridge.execution._launcher``; the command keeps this path, which
is also how leftover kernel processes are recognised (``tests/conftest.py``).
"""

from kernel_bridge.execution._launcher import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
