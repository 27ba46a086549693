"""A run assembled from a front end's options: limits, tools, trace file, profile, the Reasoner.

``kernel-bridge reason`` and ``%%reason`` take the same options and build their runs here, so both
check them alike and say what is wrong in the same words: a ``RunSpecError``, shown as one line.
The defaults are ``kernel_bridge.settings``'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernel_bridge.errors import UserError
from kernel_bridge.reasoner import Limits, Reasoner
from kernel_bridge.settings import (
    MAX_STEPS,
    MAX_TOKENS,
    PROFILE,
    STEP_TIMEOUT,
    TIME_LIMIT,
    default_trace_path,
)
from kernel_bridge.tools import Toolbox


class RunSpecError(UserError, ValueError):
    """An option of a run that the user can fix; the message says which and how."""


def check_model(model: str | None) -> None:
    """An empty model string is refused (None means the default model)."""
    if model is not None and not model.strip():
        raise RunSpecError(
            "--model is empty: give a model string such as local, hf:ID_OR_PATH or "
            "openai/gpt-4o, or leave --model out for the default"
        )


def load_tools(
    names: str | None, cutoff: str | None = None, authorized_imports: str | None = None
) -> Toolbox:
    """The toolsets and ``module:attribute`` tools of ``--tools`` (comma-separated), with the
    ``--cutoff`` and ``--authorized-imports`` options (comma-separated; None: any import)."""
    from kernel_bridge.tools import ToolError, load_toolsets

    modules = None
    if authorized_imports is not None:
        modules = [m.strip() for m in authorized_imports.split(",") if m.strip()]
    try:
        return load_toolsets(names, cutoff=cutoff, authorized_imports=modules)
    except ToolError as e:
        raise RunSpecError(str(e)) from None


@dataclass
class RunSpec:
    """What a run needs besides its model and question, checked: the trace file is writable."""

    limits: Limits
    trace_path: Path
    tools: Toolbox | None = None
    profile: str = PROFILE
    sandbox: bool = False  # the run's own kernel under bubblewrap

    @classmethod
    def build(
        cls,
        *,
        max_steps: int = MAX_STEPS,
        max_tokens: int = MAX_TOKENS,
        timeout: float = STEP_TIMEOUT,
        time_limit: float = TIME_LIMIT,
        trace: str | os.PathLike[str] | None = None,
        profile: str = PROFILE,
        tools: Toolbox | str | None = None,
        cutoff: str | None = None,
        authorized_imports: str | None = None,
        sandbox: bool = False,
    ) -> RunSpec:
        """The run of these options (a ``RunSpecError`` for the first one that is wrong).

        ``trace`` empty or None: ``default_trace_path()``. ``tools`` is a ready ``Toolbox`` or the
        names ``load_tools`` takes (with ``cutoff`` and ``authorized_imports``).
        """
        from kernel_bridge.parsing import get_profile
        from kernel_bridge.trace import TraceStore, TraceStoreError

        try:
            limits = Limits(
                max_steps=max_steps,
                max_tokens=max_tokens,
                step_timeout=timeout,
                time_limit=time_limit,
            )
            get_profile(profile)
        except ValueError as e:
            raise RunSpecError(str(e)) from None
        if not isinstance(tools, Toolbox):
            tools = load_tools(tools, cutoff, authorized_imports)
        trace_path = Path(trace).expanduser() if trace else default_trace_path()
        try:
            TraceStore(trace_path).check_writable()  # before the model loads and the run starts
        except TraceStoreError as e:
            raise RunSpecError(str(e)) from None
        if sandbox:
            from kernel_bridge.execution.sandbox import sandbox_problem

            if problem := sandbox_problem():
                raise RunSpecError(f"--sandbox: {problem}")
        return cls(
            limits=limits, trace_path=trace_path, tools=tools, profile=profile, sandbox=sandbox
        )

    def reasoner(self, sampler: Any, executor: Any = None) -> Reasoner:
        """The Reasoner of this run; ``executor`` None: a fresh local kernel (sandboxed with
        ``sandbox``), which the Reasoner shuts down when it closes."""
        try:
            return Reasoner(
                sampler,
                executor,
                profile=self.profile,
                limits=self.limits,
                store=self.trace_path,
                tools=self.tools,
                sandbox=self.sandbox,
            )
        except ValueError as e:
            raise RunSpecError(str(e)) from None


__all__ = ["RunSpec", "RunSpecError", "check_model", "load_tools"]
