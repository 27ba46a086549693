"""The trace as a notebook output: the bundle a finished ``%%reason`` cell holds.

A finished cell holds the run twice by necessity: as HTML, for every viewer without the
extension (nbviewer, GitHub, VS Code, ``nbconvert``), and as the trace itself, which the
JupyterLab extension draws and reads back from a saved notebook. The second copy is packed: the
trace's JSON line (bounded, as in the trace file) compressed with gzip and written in base64,
about a third of the trace's size for a run of thinking and outputs. Its ``id`` and ``labels``
stay in the clear, since the extension finds a run's output by id and writes the user's labels
into it without unpacking the trace.

::

    {"id": "…", "encoding": "gzip+base64", "trace": "H4sI…", "labels": {…}}

Labels written beside the packed trace win over the trace's own (they are the newer). A bundle
that is the trace's plain JSON (notebooks saved before the packing) is read as it is.

While a run goes, a cell whose notebook has the extension attached holds a *live* bundle instead:
``{"id": "…", "live": true}``, no trace. The extension draws that run from the events of its comm,
which it holds already, so the cell costs no second copy of the run on the wire; the finished
bundle replaces it when the run ends.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import zlib
from collections.abc import Mapping
from typing import Any

from kernel_bridge.trace import Trace, TraceFormatError

TRACE_MIME = "application/vnd.kernel-bridge.trace+json"
ENCODING = "gzip+base64"


def pack_trace(trace: Trace) -> dict[str, Any]:
    """The bundle of ``trace`` for a cell's output (``mtime=0``: the same trace, the same bytes)."""
    packed = gzip.compress(trace.to_json().encode(), compresslevel=6, mtime=0)
    return {"id": trace.id, "encoding": ENCODING, "trace": base64.b64encode(packed).decode()}


def live_bundle(trace_id: str) -> dict[str, Any]:
    """The bundle of a running cell whose run the extension draws from its comm."""
    return {"id": trace_id, "live": True}


def unpack_trace(bundle: Mapping[str, Any]) -> Trace:
    """The trace a cell's bundle holds, packed or plain (``TraceFormatError``: what is wrong)."""
    if bundle.get("live"):
        raise TraceFormatError("trace bundle: a running cell's live bundle holds no trace yet")
    if "encoding" not in bundle:
        return Trace.from_dict(bundle)
    if bundle["encoding"] != ENCODING:
        raise TraceFormatError(f"trace bundle: unknown encoding {bundle['encoding']!r}")
    try:
        text = gzip.decompress(base64.b64decode(bundle["trace"], validate=True))
    except (KeyError, TypeError, binascii.Error, OSError, EOFError, zlib.error) as e:
        raise TraceFormatError(f"trace bundle: the packed trace cannot be read ({e})") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise TraceFormatError(f"trace bundle: the packed trace is not JSON ({e})") from None
    if bundle.get("labels") is not None:
        data["labels"] = bundle["labels"]
    return Trace.from_dict(data)


__all__ = ["ENCODING", "TRACE_MIME", "live_bundle", "pack_trace", "unpack_trace"]
