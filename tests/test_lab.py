"""What the JupyterLab sidebar asks the kernel to do (kernel_bridge.lab): labels saved in the trace
file, a trace as cells, the settings as %%reason defaults; called in-process and, as the sidebar
calls them, through a silent execute's user_expressions in a real kernel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

from kernel_bridge.lab import apply_settings, set_labels, trace_cells
from kernel_bridge.trace import Segment, Span, Step, Trace, TraceStore, load_traces


def make_trace() -> Trace:
    text = "<think>\nAdd.\n```python\n1 + 1\n```\n"
    spans = [
        Span("markup", 0, 8),
        Span("think", 8, 13),
        Span("markup", 13, 23),
        Span("code", 23, 29, step=0),
        Span("markup", 29, 33),
    ]
    answer = "</think>\n<answer>2</answer>"
    return Trace(
        model="scripted",
        sampler={"name": "scripted"},
        messages=[{"role": "user", "content": "What is 1 + 1?"}],
        segments=[
            Segment("model", text, spans=spans),
            Segment("tool", "```output\n2\n```\n"),
            Segment(
                "model",
                answer,
                spans=[Span("markup", 0, 17), Span("answer", 17, 18), Span("markup", 18, 27)],
            ),
        ],
        steps=[
            Step(
                0,
                "1 + 1\n",
                "ok",
                "2",
                [
                    {
                        "output_type": "execute_result",
                        "data": {"text/plain": "2"},
                        "metadata": {},
                        "execution_count": 1,
                    }
                ],
                1,
                0.0,
                0.01,
                [],
            )
        ],
        answer="2",
        finish_reason="answer",
    )


@pytest.fixture
def store(tmp_path) -> tuple[Path, Trace]:
    path = tmp_path / "traces.jsonl"
    trace = make_trace()
    TraceStore(path).append(trace)
    return path, trace


def test_labels_are_appended_as_an_updated_trace(store):
    path, trace = store
    result = set_labels(
        {"trace_path": str(path), "trace_id": trace.id, "labels": {"rating": "up", "note": "neat"}}
    )
    assert result._repr_json_() == {"rating": "up", "note": "neat"}
    lines = path.read_text().splitlines()
    assert len(lines) == 2, "the label is saved by appending, not by rewriting the file"
    [saved] = load_traces(path)
    assert saved.id == trace.id
    assert saved.labels == {"rating": "up", "note": "neat"}
    assert saved.steps == trace.steps


def test_a_label_set_to_null_is_removed(store):
    path, trace = store
    set_labels({"trace_path": str(path), "trace_id": trace.id, "labels": {"rating": "down"}})
    result = set_labels(
        {"trace_path": str(path), "trace_id": trace.id, "labels": {"rating": None, "note": "x"}}
    )
    assert result.value == {"note": "x"}
    assert load_traces(path)[0].labels == {"note": "x"}


def test_a_bad_rating_is_refused_and_nothing_is_written(store):
    path, trace = store
    with pytest.raises(ValueError, match="rating must be 'up' or 'down'"):
        set_labels({"trace_path": str(path), "trace_id": trace.id, "labels": {"rating": "meh"}})
    assert len(path.read_text().splitlines()) == 1


def test_a_trace_missing_from_its_file_is_taken_from_the_one_sent(tmp_path):
    path = tmp_path / "elsewhere.jsonl"
    trace = make_trace()
    with pytest.raises(LookupError, match=f"trace {trace.id} is not in"):
        set_labels({"trace_path": str(path), "trace_id": trace.id, "labels": {"rating": "up"}})
    set_labels(
        {
            "trace_path": str(path),
            "trace_id": trace.id,
            "labels": {"rating": "up"},
            "trace": trace.to_dict(),
        }
    )
    assert load_traces(path)[0].labels == {"rating": "up"}


def test_cells_are_the_notebook_export_without_the_question(store):
    path, trace = store
    cells = trace_cells({"trace_path": str(path), "trace_id": trace.id}).value
    assert [cell["cell_type"] for cell in cells] == ["markdown", "code", "markdown"]
    assert cells[0]["source"] == "> Add."
    assert cells[1]["source"] == "1 + 1"
    assert cells[1]["outputs"][0]["data"] == {"text/plain": "2"}
    assert cells[2]["source"] == "**Answer**\n\n2"
    json.dumps(cells)  # what goes back to the frontend is plain JSON
    # The same cells from the trace itself, with no file (cell ids are fresh each time).
    again = trace_cells({"trace": trace.to_dict()}).value
    assert [{**c, "id": None} for c in again] == [{**c, "id": None} for c in cells]


def test_apply_settings_outside_ipython_says_so():
    with pytest.raises(RuntimeError, match="inside an IPython kernel"):
        apply_settings({"model": "scripted:x"})


# -- through a real kernel, as the sidebar calls them --------------------------------------------


def lab_call(name: str, args: dict[str, Any]) -> str:
    """The expression kernelactions.ts builds: the args as a JSON string literal."""
    literal = json.dumps(json.dumps(args, ensure_ascii=False), ensure_ascii=False)
    return (
        f"__import__('kernel_bridge.lab', fromlist=['{name}']).{name}"
        f"(__import__('json').loads({literal}))"
    )


@pytest.fixture(scope="module")
def client():
    manager, kc = start_new_kernel(kernel_name="python3")
    try:
        yield kc
    finally:
        kc.stop_channels()
        manager.shutdown_kernel(now=True)


def call(kc, name: str, args: dict[str, Any]) -> dict[str, Any]:
    msg_id = kc.execute(
        "", silent=True, store_history=False, user_expressions={"result": lab_call(name, args)}
    )
    return shell_reply(kc, msg_id)["content"]


def shell_reply(kc, msg_id: str) -> dict[str, Any]:
    while True:
        reply = kc.get_shell_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


def execution_count(kc) -> int:
    return shell_reply(kc, kc.execute("pass", store_history=False))["content"]["execution_count"]


def printed_by(kc, code: str) -> str:
    """Run code in the kernel; what it printed."""
    msg_id = kc.execute(code, store_history=False)
    printed = ""
    while True:
        msg = kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            printed += msg["content"]["text"]
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return printed


@pytest.mark.slow
def test_the_sidebar_saves_labels_through_a_silent_execute(client, store):
    path, trace = store
    before = execution_count(client)
    labels = {"rating": "down", "note": 'wrong "units" — 👎 \\ /'}
    content = call(
        client, "set_labels", {"trace_path": str(path), "trace_id": trace.id, "labels": labels}
    )
    result = content["user_expressions"]["result"]
    assert result["status"] == "ok", result
    assert result["data"]["application/json"] == labels
    assert load_traces(path)[0].labels == labels
    assert execution_count(client) == before, "a silent call must not move the execution count"


@pytest.mark.slow
def test_a_failed_call_comes_back_as_the_error_message(client, tmp_path):
    content = call(
        client,
        "set_labels",
        {"trace_path": str(tmp_path / "none.jsonl"), "trace_id": "abc", "labels": {}},
    )
    result = content["user_expressions"]["result"]
    assert result["status"] == "error"
    assert result["ename"] == "LookupError"
    assert "trace abc is not in" in result["evalue"]


@pytest.mark.slow
def test_settings_become_the_defaults_of_reason_before_and_after_load_ext(client):
    content = call(client, "apply_settings", {"model": "scripted:/tmp/a.txt", "max_steps": 7})
    assert content["user_expressions"]["result"]["status"] == "ok"
    printed = printed_by(client, "%load_ext kernel_bridge\n%reason_config")
    assert "model = 'scripted:/tmp/a.txt'" in printed
    assert "max_steps = 7" in printed
    # Loaded already: the magics change at once.
    call(client, "apply_settings", {"isolated": True, "max_steps": 3})
    magics = "get_ipython().magics_manager.registry['ReasonMagics']"
    assert printed_by(client, f"print({magics}.max_steps, {magics}.isolated)") == "3 True\n"
