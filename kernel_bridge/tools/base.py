"""The tool API: smolagents' shape, living inside the kernel as ordinary Python objects.

A tool has ``name``, ``description``, ``inputs`` (name → ``{"type", "description"}`` with
smolagents' JSON-schema type names), ``output_type`` and ``forward``. Our ``Tool`` has that shape,
so do smolagents ``Tool`` instances, and a plain typed function becomes a ``FunctionTool`` (its
docstring is the description). Calling a tool runs ``forward``; a failure reaches the model as one
readable ``ToolError`` line instead of a traceback through the tool's internals.
"""

from __future__ import annotations

import inspect
import re
import textwrap
import typing
from collections.abc import Callable
from typing import Any

from kernel_bridge.errors import UserError

# smolagents' type names, and the Python type each one is shown as in the prompt.
TYPE_NAMES: dict[str, str] = {
    "string": "str",
    "boolean": "bool",
    "integer": "int",
    "number": "float",
    "array": "list",
    "object": "dict",
    "any": "Any",
    "null": "None",
    "image": "PIL.Image.Image",
    "audio": "Any",
}
_PYTHON_TO_TYPE: dict[Any, str] = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    list: "array",
    tuple: "array",
    dict: "object",
    type(None): "null",
}


class ToolError(UserError):
    """A tool call failed; the message names the tool, the arguments and what went wrong."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback through the tool's internals.
        return [f"{type(self).__name__}: {self}"]


class Tool:
    """Base class of a tool: set the class attributes, write ``forward``.

    ``returns`` optionally names the Python type ``forward`` returns (``"pandas.DataFrame"``) when
    ``output_type`` is too coarse for the prompt. Constructor arguments are ordinary attributes:
    installing a tool into a kernel pickles the instance, so they arrive as they were set.
    """

    name: str = ""
    description: str = ""
    inputs: dict[str, dict[str, Any]] = {}  # noqa: RUF012 (class-level declaration, as smolagents)
    output_type: str = "any"
    returns: str | None = None

    def __init_subclass__(cls, check: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if check and "forward" in cls.__dict__:
            _check_tool_class(cls)

    def setup(self) -> None:
        """Heavy one-time initialisation, run before the first call (as in smolagents)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not getattr(self, "is_initialized", False):
            self.setup()
            self.is_initialized = True
        try:
            return self.forward(*args, **kwargs)
        except ToolError:
            raise
        except Exception as e:
            if isinstance(e, TypeError):  # arguments that do not fit say so, with the signature
                self._check_arguments(args, kwargs)
            call = f"{self.name}({_format_args(args, kwargs)})"
            raise ToolError(f"{call} failed: {type(e).__name__}: {e}") from None

    def _check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            inspect.signature(self.forward).bind(*args, **kwargs)
        except TypeError as e:
            raise ToolError(f"{self.name}{signature(self)[0]}: {e}") from None

    def __repr__(self) -> str:
        params, returns = signature(self)
        return f"<tool {self.name}{params} -> {returns}>"


class FunctionTool(Tool, check=False):
    """A plain typed function as a tool: the name is the function's, the docstring describes it."""

    def __init__(self, function: Callable[..., Any]) -> None:
        if not callable(function) or not hasattr(function, "__name__"):
            raise TypeError(f"a tool must be a Tool or a named function, got {function!r}")
        self.function = function
        self.name = function.__name__
        self.description = inspect.getdoc(function) or ""
        if not self.description:
            raise ToolError(
                f"function tool {self.name!r} has no docstring: the model reads it to know what "
                "the tool does; add one"
            )
        hints = _type_hints(function)
        self.inputs = {
            p.name: {
                "type": _PYTHON_TO_TYPE.get(hints.get(p.name), "any"),
                "description": "",
                **({"nullable": True} if p.default is not inspect.Parameter.empty else {}),
            }
            for p in inspect.signature(function).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        self.output_type = _PYTHON_TO_TYPE.get(hints.get("return"), "any")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def _check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            inspect.signature(self.function).bind(*args, **kwargs)
        except TypeError as e:
            raise ToolError(f"{self.name}{signature(self)[0]}: {e}") from None


def tool(function: Callable[..., Any]) -> FunctionTool:
    """Decorator: ``@tool`` over a typed function with a docstring makes it a tool."""
    return FunctionTool(function)


def as_tool(obj: Any) -> Any:
    """A tool for ``obj``: a ``Tool`` or anything of smolagents' shape as it is, a function wrapped.

    smolagents ``Tool`` instances are kept as they are (their own ``__call__`` runs in the kernel).
    """
    if isinstance(obj, Tool) or _has_tool_shape(obj):
        if not isinstance(obj.name, str) or not obj.name.isidentifier():
            raise ToolError(f"tool name {obj.name!r} is not a Python identifier")
        return obj
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return FunctionTool(obj)
    raise TypeError(
        f"not a tool: {obj!r}; pass a kernel_bridge Tool, a smolagents Tool or a typed function "
        "with a docstring"
    )


def _has_tool_shape(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("name", "description", "inputs", "output_type")) and (
        callable(getattr(obj, "forward", None))
    )


# -- the prompt -------------------------------------------------------------------------------


def signature(t: Any) -> tuple[str, str]:
    """The call signature and return type: ``("(ticker: str, start: str)", "pandas.DataFrame")``."""
    function = t.function if isinstance(t, FunctionTool) else getattr(t, "forward", None)
    returns = getattr(t, "returns", None) or TYPE_NAMES.get(t.output_type, "Any")
    if isinstance(t, Tool) and function is not None:
        sig = inspect.signature(function)
        hints = _type_hints(function)
        params = []
        for p in sig.parameters.values():
            text = p.name
            hint = hints.get(p.name)
            if hint is not None:
                text += f": {_type_name(hint)}"
            elif p.name in t.inputs:
                text += f": {TYPE_NAMES.get(str(t.inputs[p.name].get('type')), 'Any')}"
            if p.default is not inspect.Parameter.empty:
                text += f" = {p.default!r}"
            if p.kind is p.VAR_POSITIONAL:
                text = "*" + text
            elif p.kind is p.VAR_KEYWORD:
                text = "**" + text
            params.append(text)
        if "return" in hints and not getattr(t, "returns", None):
            returns = _type_name(hints["return"])
        return f"({', '.join(params)})", returns
    params = []
    for name, spec in t.inputs.items():
        text = f"{name}: {TYPE_NAMES.get(spec.get('type'), 'Any')}"
        if spec.get("nullable"):
            text += " = None"
        params.append(text)
    return f"({', '.join(params)})", returns


def describe(t: Any) -> str:
    """The tool as the model reads it: a Python signature with a docstring."""
    params, returns = signature(t)
    doc = t.description.strip()
    args = [
        f"    {name}: {spec['description']}"
        for name, spec in t.inputs.items()
        if spec.get("description") and not re.search(rf"\b{re.escape(name)}\b:", doc)
    ]
    if args:
        doc += "\n\nArgs:\n" + "\n".join(args)
    body = textwrap.indent(f'"""{doc}\n"""', "    ")
    return f"def {t.name}{params} -> {returns}:\n{body}"


# -- helpers ----------------------------------------------------------------------------------


def _check_tool_class(cls: type[Tool]) -> None:
    """The smolagents contract: a name and a description, and ``forward`` takes the inputs."""
    missing = [a for a in ("name", "description") if not getattr(cls, a, "")]
    if missing:
        raise ToolError(f"tool class {cls.__name__} must set {', '.join(missing)}")
    if not cls.name.isidentifier():
        raise ToolError(f"tool class {cls.__name__}: name {cls.name!r} is not a Python identifier")
    if cls.output_type not in TYPE_NAMES:
        raise ToolError(
            f"tool class {cls.__name__}: output_type {cls.output_type!r} is not one of "
            f"{', '.join(TYPE_NAMES)}"
        )
    params = [
        p
        for p in inspect.signature(cls.forward).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if {p.name for p in params} != set(cls.inputs):
        raise ToolError(
            f"tool class {cls.__name__}: forward() takes {[p.name for p in params]} but inputs "
            f"declares {list(cls.inputs)}; they must match"
        )
    for name, spec in cls.inputs.items():
        if spec.get("type") not in TYPE_NAMES:
            raise ToolError(
                f"tool class {cls.__name__}: input {name!r} has type {spec.get('type')!r}, not "
                f"one of {', '.join(TYPE_NAMES)}"
            )


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable string annotations: show what is written
        return dict(getattr(function, "__annotations__", {}))


def _type_name(hint: Any) -> str:
    if isinstance(hint, str):
        return hint
    if hint is None or hint is type(None):
        return "None"
    if isinstance(hint, type):
        module = hint.__module__
        if module in ("builtins", "typing"):
            return hint.__qualname__
        top = module.split(".")[0]
        return f"{top}.{hint.__qualname__}"
    return str(hint).replace("typing.", "")


def _format_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [_short_repr(a) for a in args] + [f"{k}={_short_repr(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
