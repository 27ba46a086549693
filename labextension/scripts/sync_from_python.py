"""Write the extension's files that come from the Python package, or check them (``--check``).

- ``schema/plugin.json``: the ``%%reason`` defaults of the settings (``kernel_bridge.settings``);
- ``test/scripted-run.json``: what the kernel sends the sidebar for a real run of
  ``tests/scripts/primes.txt`` (the ScriptedSampler stands in for the model; the kernel is real),
  its ids, paths and times made fixed, with the trace, its pieces (``trace_pieces``) and the
  packed bundle the finished cell holds (``kernel_bridge.bundle``).

Run it from anywhere after changing either side: ``npm run sync:python`` in labextension/.
tests/test_events.py fails while a committed file is stale.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

LAB = Path(__file__).resolve().parent.parent
ROOT = LAB.parent
SCHEMA = LAB / "schema" / "plugin.json"
FIXTURE = LAB / "test" / "scripted-run.json"
SCRIPT = ROOT / "tests" / "scripts" / "primes.txt"

QUESTION = "Sum the primes below 50"
TRACE_ID = "run1"
TRACE_PATH = "/tmp/traces.jsonl"
CREATED = "2025-01-31T12:00:00.000Z"


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def schema_text() -> str:
    """schema/plugin.json with the defaults of ``kernel_bridge.settings``."""
    from kernel_bridge.settings import lab_schema

    return _json(lab_schema(json.loads(SCHEMA.read_text(encoding="utf-8"))))


async def record() -> dict[str, Any]:
    """A real scripted run as the sidebar gets it: open data, messages, the trace, its pieces."""
    from kernel_bridge.events import record_run
    from kernel_bridge.reasoner import Reasoner
    from kernel_bridge.samplers.scripted import ScriptedSampler
    from kernel_bridge.trace import trace_pieces

    sampler = ScriptedSampler.from_file(SCRIPT, name="scripted:primes.txt")
    with tempfile.TemporaryDirectory() as tmp:
        async with Reasoner(
            sampler,
            profile="markdown",
            store=Path(tmp) / "traces.jsonl",
            # A prompt of its own, so that editing the default prompt leaves the fixture alone.
            system_prompt="Think step by step; run Python in ```python blocks.",
            examples=[],
        ) as reasoner:
            comm = await record_run(reasoner, QUESTION, trace_path=TRACE_PATH)
        trace = reasoner.trace
    assert trace is not None and comm.open is not None
    pieces = [
        {"kind": p.kind, "section": p.section, "text": p.text, "step": p.step}
        for p in trace_pieces(trace)
    ]
    recording = {"open": comm.open, "messages": comm.messages, "trace": trace.to_dict()}
    recording["pieces"] = pieces
    return json.loads(json.dumps(recording))  # plain JSON values (outputs are NotebookNodes)


def fixture_text(recording: dict[str, Any]) -> str:
    """test/scripted-run.json: the recording with what differs between runs (ids, paths, times)
    set to fixed values."""
    data = json.loads(json.dumps(recording))
    real_id = data["trace"]["id"]
    data["open"]["trace_id"] = TRACE_ID
    for message in data["messages"]:
        for event in message["events"]:
            if "duration_s" in event:
                event["duration_s"] = 0.01
            if event.get("trace_id") == real_id:
                event["trace_id"] = TRACE_ID
    trace = data["trace"]
    trace.update(id=TRACE_ID, created=CREATED)
    trace["timings"] = {key: 1.0 for key in trace.get("timings", {})}
    for step in trace["steps"]:
        step.update(started=1738324800.0 + step["index"], duration_s=0.01)
    from kernel_bridge.bundle import pack_trace
    from kernel_bridge.trace import Trace

    data["bundle"] = pack_trace(Trace.from_dict(trace))
    about = (
        "Written by labextension/scripts/sync_from_python.py from a real run of "
        "tests/scripts/primes.txt; do not edit."
    )
    return _json({"about": about, **data})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say which files are stale")
    args = parser.parse_args(argv)
    stale = []
    files = ((SCHEMA, schema_text()), (FIXTURE, fixture_text(asyncio.run(record()))))
    for path, text in files:
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"stale: {names}; run npm run sync:python in labextension/", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # kernel_bridge from this checkout
    sys.exit(main())
