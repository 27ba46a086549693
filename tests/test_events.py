"""The live events the JupyterLab extension reads (kernel_bridge.events): a real scripted run's
events against docs/events.schema.json, batching, the lines the terminal and the cell share, the
walk over a saved trace, and the extension's files that come from Python (its test fixture, its
settings' defaults)."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from kernel_bridge import settings
from kernel_bridge.events import (
    EVENT_TYPES,
    CellsEvent,
    CodeEvent,
    FinishedEvent,
    LoadingEvent,
    OutputEvent,
    RecordedComm,
    StepFinishedEvent,
    StepStartedEvent,
    TextEvent,
    TraceComm,
    from_wire,
    run_summary,
    step_line,
    to_wire,
)
from kernel_bridge.parsing import CodeEnd, TextDelta
from kernel_bridge.reasoner import RunStarted, StepStarted
from kernel_bridge.trace import Segment, Span, Step, Trace, Usage, trace_pieces

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "docs" / "events.schema.json").read_text(encoding="utf-8"))
SYNC_PATH = ROOT / "labextension" / "scripts" / "sync_from_python.py"


def _load_sync() -> Any:
    spec = importlib.util.spec_from_file_location("sync_from_python", SYNC_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SYNC = _load_sync()


def validator(definition: str | None = None) -> jsonschema.Draft202012Validator:
    """The events schema, or one of its definitions (``open``, ``event``)."""
    schema = SCHEMA
    if definition is not None:
        schema = {"$defs": SCHEMA["$defs"], "$ref": f"#/$defs/{definition}"}
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def recording() -> dict[str, Any]:
    """A real run of tests/scripts/primes.txt (scripted model, real kernel), as its comm sent it."""
    return asyncio.run(SYNC.record())


# -- a real run ---------------------------------------------------------------------------------


def test_a_real_runs_events_match_the_schema(recording):
    validator("open").validate(recording["open"])
    for message in recording["messages"]:
        validator().validate(message)
    events = [e for m in recording["messages"] for e in m["events"]]
    types = [e["type"] for e in events]
    assert types.count("step_started") == 2 and types.count("step_finished") == 2
    assert types[-1] == "finished" and events[-1]["finish_reason"] == "answer"
    assert recording["open"]["trace_id"] == recording["trace"]["id"] == events[-1]["trace_id"]


def test_a_block_starting_ends_a_batch(recording):
    batches = [[e["type"] for e in m["events"]] for m in recording["messages"]]
    assert [b[-1] for b in batches] == ["step_started", "step_started", "finished"]


def test_the_extensions_fixture_is_this_run(recording):
    committed = SYNC.FIXTURE.read_text(encoding="utf-8")
    assert SYNC.fixture_text(recording) == committed, (
        "labextension/test/scripted-run.json is stale: run `npm run sync:python` in labextension/"
    )


def test_the_extensions_settings_schema_has_the_python_defaults():
    committed = SYNC.SCHEMA.read_text(encoding="utf-8")
    assert SYNC.schema_text() == committed, (
        "labextension/schema/plugin.json is stale: run `npm run sync:python` in labextension/"
    )
    properties = json.loads(committed)["properties"]
    assert properties["maxSteps"]["default"] == settings.MAX_STEPS
    assert properties["isolated"]["default"] is settings.ISOLATED


# -- the wire form ------------------------------------------------------------------------------

SAMPLES = [
    LoadingEvent("converting", "Converting the embedded model (first time only)…", 0.25),
    LoadingEvent("ready", "Loaded in 3.1 s", None),
    TextEvent("think", "Let me see.\n"),
    CodeEvent("think", "print(1)\n", True),
    StepStartedEvent(0),
    OutputEvent(0, {"output_type": "stream", "name": "stdout", "text": "1\n"}),
    StepFinishedEvent(0, "ok", 0.02, ["out.csv"]),
    CellsEvent([{"cell_type": "code", "source": "print(1)", "metadata": {}, "outputs": []}]),
    FinishedEvent("abc", "answer", "1", None, "/tmp/t.jsonl"),
]


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_round_trips_through_its_wire_form(event):
    wired = json.loads(json.dumps(to_wire(event)))
    validator("event").validate(wired)
    assert from_wire(wired) == event


def test_the_schema_lists_exactly_the_event_types_sent():
    listed = {
        SCHEMA["$defs"][ref["$ref"].rsplit("/", 1)[1]]["properties"]["type"]["const"]
        for ref in SCHEMA["$defs"]["event"]["oneOf"]
    }
    assert listed == set(EVENT_TYPES) == {e["type"] for e in map(to_wire, SAMPLES)}


def test_the_schemas_list_exactly_the_finish_reasons_a_trace_has():
    import typing

    from kernel_bridge.trace import FinishReason

    reasons = {*typing.get_args(FinishReason), None}
    finished = SCHEMA["$defs"]["finished"]["properties"]["finish_reason"]["enum"]
    trace_schema = json.loads((ROOT / "docs" / "trace.schema.json").read_text(encoding="utf-8"))
    assert set(finished) == reasons == set(trace_schema["properties"]["finish_reason"]["enum"])


def test_an_unknown_event_type_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown event type 'later'"):
        from_wire({"type": "later"})


# -- batching -----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def started() -> RunStarted:
    return RunStarted(Trace(model="m", sampler={"name": "s"}, messages=[]))


def test_text_of_one_section_is_joined_until_another_section_or_event():
    recorded = RecordedComm()
    comm = TraceComm(mode="shared", trace_path="t.jsonl", create_comm=recorded, clock=Clock())
    comm.handle(started())
    for event in (
        TextDelta("think", "a"),
        TextDelta("think", "b"),
        TextDelta("text", "\n"),
        CodeEnd("text", "x = 1\n", True, "```\n"),
        StepStarted(0, "x = 1\n"),
    ):
        comm.handle(event)
    assert recorded.messages == [
        {
            "events": [
                {"type": "text", "section": "think", "text": "ab"},
                {"type": "text", "section": "text", "text": "\n"},
                {"type": "code", "section": "text", "code": "x = 1\n", "runs": True},
                {"type": "step_started", "index": 0},
            ]
        }
    ]
    assert recorded.open is not None and recorded.open["mode"] == "shared"


def test_a_comm_opened_before_the_run_says_the_model_loads_then_carries_the_run():
    recorded = RecordedComm()
    comm = TraceComm(mode="shared", trace_path="t", create_comm=recorded, clock=Clock())
    comm.open("run1", "local", "Why?")
    comm.loading("loading", "Loading the embedded model…", 0.5)
    comm.loading("ready", "Loaded in 2.0 s", 1.0)
    comm.handle(started())  # the run's own start does not open a second comm
    comm.handle(TextDelta("think", "a"))
    comm.finish(None)
    assert recorded.open == {
        "version": 1,
        "trace_id": "run1",
        "model": "local",
        "question": "Why?",
        "mode": "shared",
        "trace_path": "t",
    }
    events = [e for m in recorded.messages for e in m["events"]]
    assert [e["type"] for e in events] == ["loading", "loading", "text"]
    for message in recorded.messages:
        validator().validate(message)


def test_a_run_stopped_while_its_model_loads_ends_its_comm_with_finished():
    recorded = RecordedComm()
    comm = TraceComm(mode="shared", trace_path="t", create_comm=recorded, clock=Clock())
    comm.open("run1", "local", "Why?")
    comm.abandon("run1", "interrupted", "interrupted while loading model 'local'")
    assert recorded.messages[-1]["events"][-1] == {
        "type": "finished",
        "trace_id": "run1",
        "finish_reason": "interrupted",
        "answer": None,
        "error": "interrupted while loading model 'local'",
        "trace_path": "t",
    }
    assert recorded.closed
    validator().validate(recorded.messages[-1])


def test_a_batch_goes_once_the_interval_has_passed():
    clock = Clock()
    recorded = RecordedComm()
    comm = TraceComm(mode="shared", trace_path="t", create_comm=recorded, clock=clock)
    comm.handle(started())
    comm.handle(TextDelta("think", "a"))
    assert recorded.messages == []
    clock.now = TraceComm.INTERVAL
    comm.handle(TextDelta("think", "b"))
    assert recorded.messages == [{"events": [{"type": "text", "section": "think", "text": "ab"}]}]
    comm.finish(None)
    assert recorded.closed


def test_a_comm_that_fails_stops_sending_and_never_fails_the_run():
    class Broken(RecordedComm):
        def send(self, data: dict[str, Any]) -> None:
            raise OSError("gone")

    broken = Broken()
    comm = TraceComm(mode="shared", trace_path="t", create_comm=broken, interval=0)
    comm.handle(started())
    comm.handle(TextDelta("think", "a"))
    comm.handle(StepStarted(0, ""))
    comm.finish(None)
    assert not broken.closed  # given up after the first failure


def test_without_a_frontend_the_events_go_nowhere():
    def no_comm(target_name: str, data: dict[str, Any]) -> Any:
        raise RuntimeError("no kernel")

    comm = TraceComm(mode="shared", trace_path="t", create_comm=no_comm)
    comm.handle(started())
    comm.handle(TextDelta("think", "a"))
    comm.finish(None)


# -- the lines the terminal and the cell share --------------------------------------------------


def step(status: str = "ok", outputs: list[Any] | None = None, **fields: Any) -> Step:
    values: dict[str, Any] = dict(
        index=0,
        code="x",
        status=status,
        output_text="",
        outputs=outputs or [],
        execution_count=1,
        started=0.0,
        duration_s=1.234,
        new_files=[],
    )
    values.update(fields)
    return Step(**values)


def test_the_step_line_says_how_a_block_ended():
    assert step_line(step()) == "⟵ ok in 1.23 s · no output"
    assert step_line(step(new_files=["a.csv"]), notes=False) == "⟵ ok in 1.23 s · new files: a.csv"
    stopped = step("timeout", output_text="42\n[interrupted after 1 s]")
    assert step_line(stopped) == "⟵ timeout in 1.23 s · [interrupted after 1 s]"
    printed = step(outputs=[{"output_type": "stream", "name": "stdout", "text": "1\n"}])
    assert step_line(printed) == "⟵ ok in 1.23 s"


def test_the_run_summary_counts_blocks_tokens_and_seconds():
    trace = Trace(model="m", sampler={"name": "s"}, messages=[], steps=[step()])
    trace.finish_reason, trace.error = "error", "the API\nfailed"
    trace.usage, trace.timings = Usage(model_tokens=7), {"total_s": 2.04}
    assert run_summary(trace) == "error · 1 block · 2.0 s"
    assert run_summary(trace, error=True, tokens=True) == (
        "error: the API failed · 1 block · 7 model tokens · 2.0 s"
    )


# -- the walk over a saved trace ----------------------------------------------------------------


def test_trace_pieces_walk_the_spans_in_order_without_markup():
    text = "<think>\nAdd.\n```python\n1 + 1\n```\n"
    spans = [
        Span("markup", 0, 8),
        Span("think", 8, 13),
        Span("markup", 13, 23),
        Span("code", 23, 29, step=0),
        Span("markup", 29, 33),
    ]
    trace = Trace(
        model="m",
        sampler={"name": "s"},
        messages=[],
        segments=[
            Segment("model", text, spans=spans),
            Segment("tool", "```output\n2\n```\n"),
            Segment("model", "old text"),  # written before spans existed
        ],
        steps=[step()],
    )
    pieces = [(p.kind, p.section, p.text, p.step, p.whole_segment) for p in trace_pieces(trace)]
    assert pieces == [
        ("think", "think", "Add.\n", None, False),
        ("code", "think", "1 + 1\n", 0, False),
        ("text", "text", "old text", None, True),
    ]
    assert next(p for p in trace_pieces(trace) if p.kind == "code").ran is trace.steps[0]


# -- front ends share modules, never import each other ------------------------------------------

FRONT_ENDS = {"cli", "magic", "lab", "render"}
ALLOWED = {"cli": {"render"}}  # render.py is the CLI's view


@pytest.mark.parametrize("name", sorted(FRONT_ENDS))
def test_no_front_end_imports_another(name):
    tree = ast.parse((ROOT / "kernel_bridge" / f"{name}.py").read_text(encoding="utf-8"))
    imported = {
        node.module.split(".")[1]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.startswith("kernel_bridge.")
    }
    assert imported & FRONT_ENDS <= ALLOWED.get(name, set())
