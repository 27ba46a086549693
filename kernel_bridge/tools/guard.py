"""Guards for model code: refused imports and refused hosts. A guard, not a sandbox.

``ImportGuard`` wraps ``builtins.__import__`` and ``importlib.import_module``. It judges only
imports made directly by model code (code whose module is ``__main__``, which is where a kernel
runs cells); libraries keep importing what they need. It refuses

- modules a cutoff date blocks (``yfinance`` and its HTTP layer ``curl_cffi``, so model code
  cannot fetch prices past the cutoff itself), and
- with ``authorized_imports`` set, every module outside that list (a listed package allows its
  submodules; ``"*"`` allows all).

``HostGuard`` wraps ``socket.getaddrinfo`` and refuses the data provider's hosts to everything
but the tools' own fetches (``HostGuard.allowed()``), which stops ``urllib``/``requests`` detours.

What this does not stop: code that reaches a module already loaded through ``sys.modules`` or a
tool's attributes, a subprocess running ``curl``, or ``ctypes``. Run untrusted models in a
container; the guards keep an honest model's backtest honest and say why.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import socket
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any


class ImportRefusedError(ImportError):
    """Model code imported a module the session does not allow."""

    def _render_traceback_(self) -> list[str]:
        return [f"ImportRefusedError: {self}"]


def _from_model_code(depth: int) -> bool:
    try:
        frame = sys._getframe(depth + 1)
    except ValueError:  # pragma: no cover - no caller
        return False
    return frame.f_globals.get("__name__") == "__main__"


def _covered(name: str, patterns: Iterable[str]) -> bool:
    return any(p == "*" or name == p or name.startswith(p + ".") for p in patterns)


class _Switch:
    """A guard that can be on (the default) or on only inside ``enabled()``."""

    active = True

    @contextlib.contextmanager
    def enabled(self) -> Iterator[None]:
        """Active inside the block (``%%reason`` in the notebook's own namespace)."""
        active, self.active = self.active, True
        try:
            yield
        finally:
            self.active = active


class ImportGuard(_Switch):
    """Refuses imports by model code; ``install()`` puts it in place, replacing an older guard."""

    _installed: ImportGuard | None = None

    def __init__(
        self,
        blocked: Iterable[str] = (),
        authorized: Iterable[str] | None = None,
        reason: str = "",
    ) -> None:
        self.blocked = tuple(blocked)
        self.authorized = None if authorized is None else tuple(authorized)
        self.reason = reason

    def refusal(self, name: str) -> str | None:
        """Why model code may not import ``name``, or None when it may."""
        if _covered(name, self.blocked):
            return f"import of {name!r} is blocked in this session: {self.reason}".rstrip(": ")
        if self.authorized is not None and not _covered(name, self.authorized):
            return (
                f"import of {name!r} is not allowed in this session; allowed imports: "
                f"{', '.join(sorted(self.authorized)) or 'none'}"
            )
        return None

    def check(self, name: str) -> None:
        message = self.refusal(name) if self.active else None
        if message:
            raise ImportRefusedError(message)

    def install(self) -> ImportGuard:
        previous = ImportGuard._installed
        if previous is not None:
            previous.uninstall()
        self._import = builtins.__import__
        self._import_module = importlib.import_module
        guard = self

        def guarded_import(
            name: str,
            globals: Any = None,
            locals: Any = None,
            fromlist: Any = (),
            level: int = 0,
        ) -> Any:
            if level == 0 and _from_model_code(1):
                guard.check(name)
            return guard._import(name, globals, locals, fromlist, level)

        def guarded_import_module(name: str, package: str | None = None) -> Any:
            if not name.startswith(".") and _from_model_code(1):
                guard.check(name)
            return guard._import_module(name, package)

        builtins.__import__ = guarded_import
        importlib.import_module = guarded_import_module
        ImportGuard._installed = self
        return self

    def uninstall(self) -> None:
        if ImportGuard._installed is self:
            builtins.__import__ = self._import
            importlib.import_module = self._import_module
            ImportGuard._installed = None


class HostGuard(_Switch):
    """Refuses name lookups of ``hosts`` (and their subdomains) outside ``allowed()``."""

    _installed: HostGuard | None = None
    _local = threading.local()

    def __init__(self, hosts: Iterable[str], reason: str = "") -> None:
        self.hosts = tuple(h.lower().lstrip(".") for h in hosts)
        self.reason = reason

    def refuses(self, host: Any) -> bool:
        if not self.active or getattr(HostGuard._local, "allowed", False):
            return False
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if not isinstance(host, str):
            return False
        host = host.lower().rstrip(".")
        return any(host == h or host.endswith("." + h) for h in self.hosts)

    def install(self) -> HostGuard:
        previous = HostGuard._installed
        if previous is not None:
            previous.uninstall()
        self._getaddrinfo = socket.getaddrinfo
        guard = self

        def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if guard.refuses(host):
                raise ConnectionRefusedError(
                    f"connections to {host} are blocked in this session: {guard.reason}; "
                    "use the tools instead"
                )
            return guard._getaddrinfo(host, *args, **kwargs)

        socket.getaddrinfo = guarded_getaddrinfo
        HostGuard._installed = self
        return self

    def uninstall(self) -> None:
        if HostGuard._installed is self:
            socket.getaddrinfo = self._getaddrinfo
            HostGuard._installed = None

    @staticmethod
    @contextlib.contextmanager
    def allowed() -> Iterator[None]:
        """The tools' own fetches: lookups in this thread pass while inside."""
        local = HostGuard._local
        local.allowed = getattr(local, "allowed", 0) + 1
        try:
            yield
        finally:
            local.allowed -= 1


def install_guards(
    blocked: Iterable[str] = (),
    authorized: Iterable[str] | None = None,
    hosts: Iterable[str] = (),
    reason: str = "",
) -> tuple[ImportGuard | None, HostGuard | None]:
    """Put the guards a toolbox asks for in place in this process (the kernel)."""
    blocked, hosts = list(blocked), list(hosts)
    imports = None
    if blocked or authorized is not None:
        imports = ImportGuard(blocked, authorized, reason).install()
    network = HostGuard(hosts, reason).install() if hosts else None
    return imports, network
