"""What the JupyterLab extension asks the notebook's kernel to do after a run.

The sidebar calls these functions with a silent execute (its ``user_expressions``), so nothing shows
in the notebook and the execution count does not move. Each takes one JSON object and returns a
``JSONResult``, which the kernel sends back as ``application/json``; an exception goes back as the
expression's error and the sidebar shows its message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RATINGS = ("up", "down")


class JSONResult:
    """A value the kernel returns to the frontend as ``application/json``."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def _repr_json_(self) -> Any:
        return self.value

    def __repr__(self) -> str:
        return f"JSONResult({self.value!r})"


def _trace(args: Mapping[str, Any]) -> Any:
    """The trace the arguments name: the latest version in its store, else the one sent along."""
    from kernel_bridge.trace import Trace, TraceStore

    path, trace_id = args.get("trace_path"), args.get("trace_id")
    if path and trace_id:
        stored = TraceStore(path).get(trace_id)
        if stored is not None:
            return stored
    if args.get("trace"):
        return Trace.from_dict(args["trace"])
    raise LookupError(
        f"trace {trace_id} is not in {path}; open the notebook where the run's trace file is, "
        "or rerun the question"
    )


def set_labels(args: Mapping[str, Any]) -> JSONResult:
    """Save human labels (``rating``: ``up``/``down``, ``note``) in the trace's labels.

    The updated trace is appended to its JSONL store (``TraceStore.append``: the last line of an id
    wins). A label set to None or "" is removed. Returns the trace's labels as saved.
    """
    from kernel_bridge.trace import TraceStore

    path = args.get("trace_path")
    if not path:
        raise ValueError("set_labels needs trace_path, the JSONL file the trace belongs to")
    labels = args.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise ValueError(f"labels must be an object, got {labels!r}")
    rating = labels.get("rating")
    if rating not in (*RATINGS, None, ""):
        raise ValueError(f"rating must be 'up' or 'down' (or null to clear it), got {rating!r}")
    note = labels.get("note")
    if note is not None and not isinstance(note, str):
        raise ValueError(f"note must be text, got {note!r}")
    trace = _trace(args)
    if args.get("trace_id") and trace.id != args["trace_id"]:
        raise ValueError(f"the trace sent has id {trace.id}, not {args['trace_id']}")
    for key, value in labels.items():
        if value is None or value == "":
            trace.labels.pop(key, None)
        else:
            trace.labels[key] = value
    TraceStore(path).append(trace)
    return JSONResult(dict(trace.labels))


def trace_cells(args: Mapping[str, Any]) -> JSONResult:
    """The trace as nbformat cells to insert below the run (as ``%%reason --cells`` makes them):
    thinking as markdown, code cells with their outputs, the answer; the question is left out."""
    from kernel_bridge.events import run_cells

    _, cells = run_cells(_trace(args))
    return JSONResult([dict(cell) for cell in cells])


def apply_settings(args: Mapping[str, Any]) -> JSONResult:
    """Make the extension's settings the defaults of ``%%reason`` in this kernel.

    Sets ``ReasonMagics`` in IPython's config, so a later ``%load_ext kernel_bridge`` takes them,
    and on the magics if they are loaded already. An empty model leaves the model alone.
    ``live_view``: the extension is attached and draws running cells from the comm.
    """
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("apply_settings runs inside an IPython kernel")
    values: dict[str, Any] = {}
    if args.get("model"):
        values["model"] = str(args["model"])
    if "isolated" in args:
        values["isolated"] = bool(args["isolated"])
    if args.get("max_steps") is not None:
        values["max_steps"] = int(args["max_steps"])
    if "live_view" in args:
        values["live_view"] = bool(args["live_view"])
    for name, value in values.items():
        setattr(shell.config.ReasonMagics, name, value)
    magics = shell.magics_manager.registry.get("ReasonMagics")
    if magics is not None:
        for name, value in values.items():
            setattr(magics, name, value)
    return JSONResult(values)
