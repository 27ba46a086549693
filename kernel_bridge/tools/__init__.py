"""Tools inside the kernel: live Python objects the model calls from its code.

``Toolbox`` gathers tools (ours, smolagents', plain functions) and the guards a session needs. It
installs them through the executor's ``add_setup``: into a ``Kernel`` (local, sidecar or remote)
by pickling the tool *instances*, so constructor arguments such as a finance tool's cutoff arrive
exactly as set (smolagents' remote executors rebuild tools with default arguments and lose them);
the install runs again after every kernel restart. ``Toolbox.prompt()`` describes the tools to
the model as Python signatures.

    from kernel_bridge.tools import toolset
    tools = toolset("finance", cutoff="2008-06-30")
    Reasoner(sampler, tools=tools)
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel_bridge.tools.base import FunctionTool, Tool, ToolError, as_tool, describe, tool

if TYPE_CHECKING:
    from kernel_bridge.tools.guard import HostGuard, ImportGuard

TOOLSETS = ("finance", "documents")


@dataclass
class Toolbox:
    """Tools plus the guards that go with them, ready to install into a kernel.

    ``authorized_imports`` (None: any) limits what model code may import; ``blocked_imports`` and
    ``blocked_hosts`` come from a cutoff. See ``kernel_bridge.tools.guard`` for what the guards do
    and do not stop.
    """

    tools: list[Any] = field(default_factory=list)
    blocked_imports: list[str] = field(default_factory=list)
    blocked_hosts: list[str] = field(default_factory=list)
    authorized_imports: list[str] | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    _install_code: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.tools = [as_tool(t) for t in self.tools]
        names = [t.name for t in self.tools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ToolError(f"two tools are named {', '.join(duplicates)}; names must be unique")

    @classmethod
    def of(
        cls,
        tools: Toolbox | Iterable[Any] | None,
        authorized_imports: Iterable[str] | None = None,
    ) -> Toolbox:
        """A toolbox from a toolbox, a list of tools and toolboxes, or None."""
        box = cls()
        if isinstance(tools, Toolbox):
            box = box.merge(tools)
        else:
            for item in tools or ():
                box = box.merge(item if isinstance(item, Toolbox) else cls([item]))
        if authorized_imports is not None:
            box.authorized_imports = sorted(set(authorized_imports))
        return box

    def merge(self, other: Toolbox) -> Toolbox:
        authorized = self.authorized_imports
        if other.authorized_imports is not None:
            authorized = sorted(set(authorized or []) | set(other.authorized_imports))
        return Toolbox(
            [*self.tools, *other.tools],
            sorted(set(self.blocked_imports) | set(other.blocked_imports)),
            sorted(set(self.blocked_hosts) | set(other.blocked_hosts)),
            authorized,
            "; ".join(r for r in (self.reason, other.reason) if r),
            [*self.notes, *other.notes],
        )

    def __bool__(self) -> bool:
        return bool(self.tools or self.has_guards)

    @property
    def has_guards(self) -> bool:
        return (
            bool(self.blocked_imports or self.blocked_hosts) or self.authorized_imports is not None
        )

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tools]

    def namespace(self) -> dict[str, Any]:
        """What the kernel's namespace gets: each tool under its name."""
        return {t.name: t for t in self.tools}

    # -- the prompt ---------------------------------------------------------------------------

    def prompt(self) -> str:
        """The tools as the model reads them, for the system prompt."""
        parts = []
        if self.tools:
            parts.append(
                "These tools are already defined in the kernel; call them from your code like "
                "functions (no import needed). They return Python objects you can keep in "
                "variables and use in later blocks.\n\n"
                + "\n\n".join(describe(t) for t in self.tools)
            )
        parts += self.notes
        if self.authorized_imports is not None:
            parts.append(
                "Only these imports are allowed: " + ", ".join(self.authorized_imports) + "."
            )
        return "\n\n".join(parts)

    # -- installing ---------------------------------------------------------------------------

    def install_code(self) -> str:
        """Code that, run in a kernel, defines the tools and puts the guards in place.

        Built once per toolbox, so installing it twice into one kernel is recognised."""
        if self._install_code is None:
            self._install_code = self._build_install_code()
        return self._install_code

    def _build_install_code(self) -> str:
        payload = base64.b64encode(_dumps(self.namespace())).decode("ascii")
        guards = ""
        if self.has_guards:
            guards = (
                "    from kernel_bridge.tools.guard import install_guards\n"
                f"    install_guards(blocked={self.blocked_imports!r}, "
                f"authorized={self.authorized_imports!r}, hosts={self.blocked_hosts!r}, "
                f"reason={self.reason!r})\n"
            )
        return (
            "def _kernel_bridge_install():\n"
            "    import base64, pickle\n"
            f"    globals().update(pickle.loads(base64.b64decode({payload!r})))\n"
            f"{guards}"
            "_kernel_bridge_install()\n"
            "del _kernel_bridge_install\n"
        )

    def guards(self) -> list[ImportGuard | HostGuard]:
        """The guards as objects, for an executor in this process (``install_code`` puts the same
        guards in place in a kernel)."""
        if not self.has_guards:
            return []
        from kernel_bridge.tools.guard import HostGuard, ImportGuard

        guards: list[ImportGuard | HostGuard] = []
        if self.blocked_imports or self.authorized_imports is not None:
            guards.append(ImportGuard(self.blocked_imports, self.authorized_imports, self.reason))
        if self.blocked_hosts:
            guards.append(HostGuard(self.blocked_hosts, self.reason))
        return guards

    async def install(self, executor: Any) -> None:
        """Install into ``executor`` through its ``add_setup`` (a ``SetupExecutor``), which takes
        the form it needs: a ``Kernel`` runs ``install_code()`` now and after every restart; a
        ``ShellExecutor`` takes ``namespace()`` and ``guards()`` (on for model blocks only)."""
        if not self:
            return
        from kernel_bridge.execution.result import SetupExecutor

        if not isinstance(executor, SetupExecutor):
            raise TypeError(
                f"cannot install tools into {type(executor).__name__}: it has no add_setup()"
            )
        await executor.add_setup(self)


def _dumps(namespace: dict[str, Any]) -> bytes:
    """Pickle the tools; classes and functions from modules that are not installed packages
    (a notebook, a script, a test file) travel by value, so the kernel needs only the packages."""
    import cloudpickle

    modules = {
        sys.modules[m]
        for m in _modules_of(namespace.values())
        if m in sys.modules and not _installed(sys.modules[m])
    }
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.dumps(namespace)
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)


def _modules_of(tools: Iterable[Any]) -> set[str]:
    names = set()
    for t in tools:
        for cls in type(t).__mro__:
            names.add(cls.__module__)
        if isinstance(t, FunctionTool):
            names.add(getattr(t.function, "__module__", "__main__") or "__main__")
    return names - {"builtins", "__main__"}


def _installed(module: Any) -> bool:
    """True for modules any kernel of this environment can import: kernel_bridge, site-packages,
    the standard library."""
    if module.__name__.split(".")[0] == "kernel_bridge":
        return True
    path = getattr(module, "__file__", None)
    if path is None:
        return True
    parts = Path(path).resolve().parts
    return "site-packages" in parts or "dist-packages" in parts or path.startswith(sys.base_prefix)


# -- named toolsets ---------------------------------------------------------------------------


def toolset(name: str, cutoff: str | None = None, **options: Any) -> Toolbox:
    """A ready toolbox: ``"finance"`` (prices, statements, company info, dividends on yfinance,
    with ``cutoff``) or ``"documents"`` (a Word report built over several steps)."""
    if name == "finance":
        from kernel_bridge.tools.finance import (
            BLOCKED_MODULES,
            YAHOO_HOSTS,
            finance_tools,
            parse_date,
        )

        day = None if cutoff is None else parse_date(cutoff, "cutoff")
        tools = finance_tools(day, **options)
        if day is None:
            return Toolbox(tools)
        reason = f"the data cutoff is {day}; use the finance tools, which respect it"
        note = (
            f"The data cutoff is {day}: the tools return nothing from after it, and model code "
            "cannot import yfinance or reach Yahoo Finance itself."
        )
        return Toolbox(tools, list(BLOCKED_MODULES), list(YAHOO_HOSTS), None, reason, [note])
    if name == "documents":
        if cutoff is not None or options:
            raise ToolError("the documents toolset takes no options")
        from kernel_bridge.tools.documents import document_tools

        return Toolbox(document_tools())
    raise ToolError(f"unknown toolset {name!r}; known: {', '.join(TOOLSETS)}")


def load_toolsets(
    names: str | Sequence[str] | None,
    cutoff: str | None = None,
    authorized_imports: Iterable[str] | None = None,
    **options: Any,
) -> Toolbox:
    """Toolsets by name (``"finance,documents"``), as the CLI and the magic select them.

    A name with a colon is one's own tools: ``module:attribute`` or ``path/to/file.py:attribute``,
    the attribute a ``Toolbox``, a tool, a function or a list of them (see ``import_tools``).
    ``cutoff`` goes to the toolsets that take one; naming a cutoff with no such toolset is an
    error (it would silently do nothing).
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names or [])
    if cutoff is not None and "finance" not in names:
        raise ToolError("--cutoff needs a toolset that has data, e.g. --tools finance")
    boxes = [
        import_tools(n)
        if ":" in n
        else toolset(n, cutoff=cutoff, **options)
        if n == "finance"
        else toolset(n)
        for n in names
    ]
    return Toolbox.of(boxes, authorized_imports)


def import_tools(spec: str) -> Toolbox:
    """The tools ``spec`` names: ``module:attribute`` (the module importable, or found in the
    working directory) or ``file.py:attribute``; the attribute a ``Toolbox``, a tool, a function
    with type hints and a docstring, or a list of those."""
    import importlib
    import importlib.util

    where, _, attribute = spec.rpartition(":")
    if not where or not attribute.isidentifier():
        raise ToolError(f"{spec!r}: name tools as module:attribute or file.py:attribute")
    try:
        if where.endswith(".py"):
            path = Path(where).expanduser().resolve()
            if not path.is_file():
                raise ToolError(f"{spec!r}: no file {path}")
            found = importlib.util.spec_from_file_location(f"_kernel_bridge_{path.stem}", path)
            assert found is not None and found.loader is not None
            module = importlib.util.module_from_spec(found)  # not in sys.modules: sent by value
            found.loader.exec_module(module)
        else:
            cwd = str(Path.cwd())
            added = cwd not in sys.path
            if added:
                sys.path.insert(0, cwd)
            try:
                module = importlib.import_module(where)
            finally:
                if added:
                    sys.path.remove(cwd)
            if added and Path(getattr(module, "__file__", None) or "/").is_relative_to(cwd):
                # The kernel runs elsewhere and could not import it: send its code along.
                import cloudpickle

                cloudpickle.register_pickle_by_value(module)
    except ToolError:
        raise
    except Exception as e:  # the user's module failed to import: say where and why
        raise ToolError(f"{spec!r}: importing {where} failed: {type(e).__name__}: {e}") from None
    if not hasattr(module, attribute):
        raise ToolError(f"{spec!r}: {where} has no attribute {attribute!r}")
    value = getattr(module, attribute)
    try:
        return Toolbox.of(value if isinstance(value, Toolbox | list | tuple) else [value])
    except TypeError as e:
        raise ToolError(f"{spec!r}: {e}") from None


__all__ = [
    "TOOLSETS",
    "FunctionTool",
    "Tool",
    "ToolError",
    "Toolbox",
    "as_tool",
    "describe",
    "import_tools",
    "load_toolsets",
    "tool",
    "toolset",
]
