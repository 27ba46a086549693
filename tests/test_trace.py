"""The Trace record: JSON format, schema, notebook export, training view, crash-safe JSONL store."""

from __future__ import annotations

import json
import math
import threading
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import nbformat
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel_bridge.trace import (
    CorruptLineWarning,
    PartialLineWarning,
    Segment,
    Span,
    Step,
    Trace,
    TraceFormatError,
    TraceStore,
    Usage,
    load_traces,
)

DOCS = Path(__file__).parents[1] / "docs"
SCHEMA = json.loads((DOCS / "trace.schema.json").read_text())


class GreedyTokenizerStandIn:
    """Stands in for a BPE tokenizer: greedy longest match over a vocabulary with merged tokens.

    As with real BPE, tokenizing a concatenation can differ from concatenating the tokenizations.
    """

    MERGED = ("\n```", "```", "python", "output", "<think>", "</think>", "<answer>", "</answer>")

    def __init__(self) -> None:
        vocabulary = ["\n", *(chr(c) for c in range(32, 127)), *self.MERGED]
        self.ids = {token: i for i, token in enumerate(vocabulary)}
        self.longest = max(map(len, vocabulary))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            for length in range(min(self.longest, len(text) - i), 0, -1):
                if text[i : i + length] in self.ids:
                    ids.append(self.ids[text[i : i + length]])
                    i += length
                    break
            else:
                raise ValueError(f"no token for {text[i]!r}")
        return ids

    def apply_chat_template(
        self,
        conversation: list[dict[str, Any]],
        add_generation_prompt: bool = False,
        tokenize: bool = True,
    ) -> list[int]:
        text = "".join(f"<|{m['role']}|>{m['content']}\n" for m in conversation)
        return self.encode(text + ("<|assistant|>" if add_generation_prompt else ""))


TOKENIZER = GreedyTokenizerStandIn()


def model_segment(*pieces: tuple[Any, ...], record_ids: bool = True) -> Segment:
    """A model segment from (span kind, text[, step]) pieces, as the Reasoner builds it."""
    text, spans = "", []
    for kind, piece, *step in pieces:
        spans.append(Span(kind, len(text), len(text) + len(piece), step[0] if step else None))
        text += piece
    ids = TOKENIZER.encode(text, add_special_tokens=False) if record_ids else None
    return Segment("model", text, ids, None if ids is None else [-0.25] * len(ids), spans)


def tool_segment(output: str, record_ids: bool = True) -> Segment:
    text = f"```output\n{output}\n```\n"
    ids = TOKENIZER.encode(text, add_special_tokens=False) if record_ids else None
    return Segment("tool", text, ids)


def output(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """A real nbformat v4 output, as the plain dict a trace stores."""
    return json.loads(json.dumps(nbformat.v4.new_output(*args, **kwargs)))


def realistic_trace(record_ids: bool = True, **changes: Any) -> Trace:
    """A finished two-step run: print a sum, inspect a type, answer."""
    segments = [
        model_segment(
            ("markup", "<think>\n"),
            ("think", "I'll compute 2 + 2 and check its type.\n"),
            ("markup", "```python\n"),
            ("code", "x = 2 + 2\nprint(x)\n", 0),
            ("markup", "```\n"),
            record_ids=record_ids,
        ),
        tool_segment("4", record_ids),
        model_segment(
            ("think", "Now the type.\n"),
            ("markup", "```python\n"),
            ("code", "type(x)\n", 1),
            ("markup", "```\n"),
            record_ids=record_ids,
        ),
        tool_segment("int", record_ids),
        model_segment(
            ("think", "It is 4, an int.\n"),
            ("markup", "</think>"),
            ("text", "\n"),
            ("markup", "<answer>"),
            ("answer", "4"),
            ("markup", "</answer>"),
            record_ids=record_ids,
        ),
    ]
    steps = [
        Step(
            index=0,
            code="x = 2 + 2\nprint(x)\n",
            status="ok",
            output_text="4",
            outputs=[output("stream", name="stdout", text="4\n")],
            execution_count=1,
            started=1_700_000_000.0,
            duration_s=0.012,
            new_files=[],
        ),
        Step(
            index=1,
            code="type(x)\n",
            status="ok",
            output_text="int",
            outputs=[output("execute_result", data={"text/plain": "int"}, execution_count=2)],
            execution_count=2,
            started=1_700_000_001.5,
            duration_s=0.004,
            new_files=["plot.png"],
        ),
    ]
    messages = [
        {"role": "system", "content": "Think with Python."},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    fields: dict[str, Any] = {
        "model": "Qwen/Qwen2.5-Coder-0.5B-Instruct",
        "sampler": {"name": "transformers", "temperature": 0.7, "max_new_tokens": 512},
        "messages": messages,
        "prompt_token_ids": TOKENIZER.apply_chat_template(messages, True) if record_ids else None,
        "segments": segments,
        "steps": steps,
        "answer": "4",
        "finish_reason": "answer",
        "usage": Usage(prompt_tokens=40, model_tokens=120, tool_tokens=16),
        "timings": {"total_s": 2.5, "model_s": 2.1, "tool_s": 0.016},
        "labels": {"rating": "up", "note": "clean"},
        "reward": 1.0,
    }
    fields.update(changes)
    return Trace(**fields)


def running_trace(**changes: Any) -> Trace:
    """A run still in progress: one thought, no step yet."""
    fields: dict[str, Any] = {
        "model": "scripted",
        "sampler": {"name": "scripted"},
        "messages": [{"role": "user", "content": "Count to three."}],
        "segments": [model_segment(("markup", "<think>"), ("think", "Let me count."))],
    }
    fields.update(changes)
    return Trace(**fields)


# -- the record -------------------------------------------------------------------------------


def test_trace_round_trips_through_json() -> None:
    trace = realistic_trace()
    line = trace.to_json()
    assert "\n" not in line
    assert Trace.from_json(line) == trace
    assert Trace.from_dict(trace.to_dict()) == trace


@given(st.text(), st.text())
def test_any_text_round_trips_on_a_single_line(thought: str, printed: str) -> None:
    segments = [model_segment(("think", thought), record_ids=False), Segment("tool", printed)]
    trace = running_trace(segments=segments)
    line = trace.to_json()
    assert "\n" not in line
    assert Trace.from_json(line) == trace


def test_defaults_give_an_id_a_utc_timestamp_and_version_1() -> None:
    a, b = running_trace(), running_trace()
    assert a.id != b.id and len(a.id) == 32
    assert a.created.endswith("Z") and a.format_version == 1
    assert a.finish_reason is None and a.usage == Usage()


@pytest.mark.parametrize("trace", [realistic_trace(), realistic_trace(False), running_trace()])
def test_trace_matches_the_json_schema(trace: Trace) -> None:
    validator = jsonschema.Draft202012Validator(
        SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(json.loads(trace.to_json()))


def test_schema_describes_every_key_the_writer_emits() -> None:
    data = realistic_trace().to_dict()
    assert set(data) == set(SCHEMA["properties"])
    defs = SCHEMA["$defs"]
    assert set(data["segments"][0]) == set(defs["segment"]["properties"])
    assert set(data["steps"][0]) == set(defs["step"]["properties"])
    assert set(data["segments"][0]["spans"][3]) == set(defs["span"]["properties"])


def test_documented_example_line_is_a_valid_trace() -> None:
    doc = (DOCS / "trace-format.md").read_text()
    line = doc.split("```json\n", 1)[1].split("\n```", 1)[0]
    jsonschema.validate(json.loads(line), SCHEMA)
    trace = Trace.from_json(line)
    assert trace.to_json() == line
    nbformat.validate(trace.to_notebook())


def test_schema_rejects_another_format_version() -> None:
    data = realistic_trace().to_dict() | {"format_version": 2}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SCHEMA)


def test_unknown_format_version_is_a_clear_error() -> None:
    data = realistic_trace().to_dict() | {"format_version": 2}
    with pytest.raises(TraceFormatError, match=r"unsupported trace format_version 2.*version 1"):
        Trace.from_dict(data)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (["model"], "trace: missing required key 'model'"),
        (["format_version"], "trace: missing required key 'format_version'"),
        (["segments", 2, "text"], r"segments\[2\]: missing required key 'text'"),
        (["steps", 1, "status"], r"steps\[1\]: missing required key 'status'"),
        (["segments", 0, "spans", 1, "end"], r"segments\[0\].spans\[1\]: .*'end'"),
        (["messages", 1, "role"], r"messages\[1\]: missing required key 'role'"),
    ],
)
def test_missing_required_key_is_named(path: list[Any], message: str) -> None:
    data = realistic_trace().to_dict()
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    with pytest.raises(TraceFormatError, match=message):
        Trace.from_dict(data)


def test_optional_keys_take_their_defaults() -> None:
    data = running_trace().to_dict()
    for key in ("prompt_token_ids", "answer", "error", "usage", "timings", "labels", "reward"):
        del data[key]
    trace = Trace.from_dict(data)
    assert trace.usage == Usage() and trace.labels == {} and trace.reward is None


def test_values_outside_the_format_are_named_with_their_place() -> None:
    data = realistic_trace().to_dict()
    data["segments"][1]["kind"] = "robot"
    with pytest.raises(TraceFormatError, match=r"segments\[1\]: segment kind .* got 'robot'"):
        Trace.from_dict(data)
    data = realistic_trace().to_dict() | {"finish_reason": "bored"}
    with pytest.raises(TraceFormatError, match="finish_reason must be one of answer"):
        Trace.from_dict(data)


def test_spans_must_cover_the_segment_text_in_order() -> None:
    with pytest.raises(TraceFormatError, match="spans end at 3 but the text has 5 characters"):
        Segment("model", "hello", spans=[Span("think", 0, 3)])
    with pytest.raises(TraceFormatError, match="starts at 4, expected 3"):
        Segment("model", "hello", spans=[Span("think", 0, 3), Span("text", 4, 5)])


def test_non_finite_numbers_are_refused_rather_than_written_as_invalid_json() -> None:
    with pytest.raises(ValueError):
        realistic_trace(reward=float("nan")).to_json()


def test_text_is_the_assistant_turn() -> None:
    trace = realistic_trace()
    assert trace.text == "".join(segment.text for segment in trace.segments)
    assert trace.text.startswith("<think>\nI'll compute")
    assert "```output\n4\n```\n" in trace.text
    assert trace.text.endswith("<answer>4</answer>")


# -- notebook export ----------------------------------------------------------------------------


def test_notebook_has_question_thinking_code_with_outputs_and_answer() -> None:
    trace = realistic_trace()
    notebook = trace.to_notebook()
    nbformat.validate(notebook)
    cells = [(cell.cell_type, cell.source) for cell in notebook.cells]
    assert cells == [
        ("markdown", "**Question:** What is 2 + 2?"),
        ("markdown", "> I'll compute 2 + 2 and check its type."),
        ("code", "x = 2 + 2\nprint(x)"),
        ("markdown", "> Now the type."),
        ("code", "type(x)"),
        ("markdown", "> It is 4, an int."),
        ("markdown", "**Answer**\n\n4"),
    ]
    first, second = notebook.cells[2], notebook.cells[4]
    assert first.outputs == trace.steps[0].outputs and first.execution_count == 1
    assert second.outputs == trace.steps[1].outputs and second.execution_count == 2
    assert first.metadata["kernel_bridge"] == {"step": 0, "status": "ok"}


def test_notebook_metadata_names_the_trace_and_kernel() -> None:
    trace = realistic_trace()
    notebook = nbformat.reads(nbformat.writes(trace.to_notebook()), as_version=4)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert notebook.metadata["kernel_bridge"] == {"trace_id": trace.id, "model": trace.model}


def test_think_and_plain_prose_share_a_cell_until_code_breaks_it() -> None:
    segment = model_segment(
        ("think", "First, think.\n\nThen more.\n"),
        ("markup", "</think>"),
        ("text", "\nSome plain text.\n"),
    )
    notebook = running_trace(segments=[segment]).to_notebook()
    nbformat.validate(notebook)
    assert notebook.cells[1].source == "> First, think.\n>\n> Then more.\n\nSome plain text."


def test_code_in_the_answer_stays_in_the_answer_cell() -> None:
    segment = model_segment(
        ("markup", "<answer>"),
        ("answer", "Use this:\n"),
        ("markup", "```python\n"),
        ("code", "def double(x):\n    return 2 * x\n"),
        ("markup", "```\n"),
        ("answer", "Done."),
        ("markup", "</answer>"),
    )
    notebook = running_trace(segments=[segment]).to_notebook()
    nbformat.validate(notebook)
    assert [cell.cell_type for cell in notebook.cells] == ["markdown", "markdown"]
    assert notebook.cells[1].source == (
        "**Answer**\n\nUse this:\n\n```python\ndef double(x):\n    return 2 * x\n```\nDone."
    )


def test_code_that_has_not_run_yet_is_a_cell_without_outputs() -> None:
    segment = model_segment(("think", "Try it."), ("markup", "```python\n"), ("code", "1 / 0\n", 0))
    notebook = running_trace(segments=[segment]).to_notebook()
    nbformat.validate(notebook)
    code = notebook.cells[-1]
    assert code.source == "1 / 0" and code.outputs == [] and code.execution_count is None


def test_error_outputs_are_kept_in_the_code_cell() -> None:
    error = output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=["..."])
    step = Step(
        index=0,
        code="1 / 0\n",
        status="error",
        output_text="ZeroDivisionError: division by zero",
        outputs=[error],
        execution_count=1,
        started=0.0,
        duration_s=0.01,
        new_files=[],
    )
    segment = model_segment(("markup", "```python\n"), ("code", "1 / 0\n", 0), ("markup", "```\n"))
    notebook = running_trace(segments=[segment], steps=[step]).to_notebook()
    nbformat.validate(notebook)
    assert notebook.cells[-1].outputs[0]["ename"] == "ZeroDivisionError"


def test_segment_without_spans_becomes_one_markdown_cell() -> None:
    older = Segment("model", "<think>Just text from an older writer.</think>")
    notebook = running_trace(segments=[older, tool_segment("ignored")]).to_notebook()
    nbformat.validate(notebook)
    assert [cell.source for cell in notebook.cells] == [
        "**Question:** Count to three.",
        "<think>Just text from an older writer.</think>",
    ]


# -- training view ------------------------------------------------------------------------------


def test_training_view_uses_the_recorded_token_ids() -> None:
    trace = realistic_trace()
    view = trace.training_view(TOKENIZER)
    recorded = [token for segment in trace.segments for token in segment.token_ids or []]
    assert view.prompt_ids == trace.prompt_token_ids
    assert view.completion_ids == recorded
    assert len(view.mask) == len(view.completion_ids)


def test_training_view_never_retokenizes_the_joined_text() -> None:
    trace = realistic_trace()
    joined = TOKENIZER.encode(trace.text, add_special_tokens=False)
    # "```\n" ends a model segment and "```output" starts a tool segment: joined, "\n```" merges.
    assert TOKENIZER.ids["\n```"] in joined
    assert trace.training_view(TOKENIZER).completion_ids != joined


def test_tool_tokens_are_masked_out_of_the_loss() -> None:
    trace = realistic_trace()
    view = trace.training_view(TOKENIZER)
    expected = [
        1 if segment.kind == "model" else 0
        for segment in trace.segments
        for _ in segment.token_ids or []
    ]
    assert view.mask == expected
    tool_ids = sum(len(s.token_ids or []) for s in trace.segments if s.kind == "tool")
    assert view.mask.count(0) == tool_ids > 0


def test_training_view_keeps_each_recorded_logprob_at_its_token() -> None:
    trace = realistic_trace()
    for n, segment in enumerate(trace.segments):
        if segment.kind == "model":  # a distinct value per token: a shift would show
            segment.logprobs = [-(n + i / 1000) for i in range(len(segment.token_ids or []))]
    view = trace.training_view(TOKENIZER)
    assert len(view.logprobs) == len(view.completion_ids)
    at = 0
    for segment in trace.segments:
        ids = segment.token_ids or []
        here = view.logprobs[at : at + len(ids)]
        assert view.completion_ids[at : at + len(ids)] == ids
        if segment.kind == "model":
            assert here == segment.logprobs
        else:  # the tool wrote these: nothing was sampled, nothing recorded
            assert all(math.isnan(x) for x in here)
        at += len(ids)


def test_training_view_has_no_logprobs_where_no_ids_were_recorded() -> None:
    trace = realistic_trace(record_ids=False)
    trace.segments[0].logprobs = [-0.5]  # without its ids a value has no token to belong to
    view = trace.training_view(TOKENIZER)
    assert len(view.logprobs) == len(view.completion_ids) > 0
    assert all(math.isnan(x) for x in view.logprobs)


def test_training_view_tokenizes_each_segment_when_no_ids_were_recorded() -> None:
    trace = realistic_trace(record_ids=False)
    view = trace.training_view(TOKENIZER)
    per_segment = [TOKENIZER.encode(s.text, add_special_tokens=False) for s in trace.segments]
    assert view.prompt_ids == TOKENIZER.apply_chat_template(trace.messages, True)
    assert view.completion_ids == [token for ids in per_segment for token in ids]
    assert view.mask == [
        1 if s.kind == "model" else 0
        for s, ids in zip(trace.segments, per_segment, strict=True)
        for _ in ids
    ]


# -- the JSONL store ----------------------------------------------------------------------------


def test_appended_traces_load_back_in_order(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.jsonl")
    traces = [realistic_trace(), running_trace(finish_reason="max_steps"), realistic_trace()]
    for trace in traces:
        store.append(trace)
    assert store.load() == traces
    assert list(store) == traces
    assert load_traces(store.path) == traces
    assert store.path.read_bytes().count(b"\n") == 3


def test_missing_file_holds_no_traces(tmp_path: Path) -> None:
    assert load_traces(tmp_path / "nothing.jsonl") == []


def test_get_finds_a_trace_by_id(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.jsonl")
    wanted = realistic_trace()
    store.append(running_trace(finish_reason="answer"))
    store.append(wanted)
    assert store.get(wanted.id) == wanted
    assert store.get("no-such-trace") is None


def test_appending_a_trace_again_updates_it(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.jsonl")
    first, second = realistic_trace(labels={}), realistic_trace()
    store.append(first)
    store.append(second)
    first.labels = {"rating": "down", "note": "guessed"}
    store.append(first)
    assert store.load() == [first, second]


def test_partial_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.jsonl")
    kept = realistic_trace()
    store.append(kept)
    with store.path.open("ab") as file:  # a crash halfway through writing the next line
        file.write(realistic_trace().to_json().encode()[:300])
    with pytest.warns(PartialLineWarning, match="line 2: skipped a partial last line"):
        assert store.load() == [kept]


def test_next_append_repairs_a_partial_last_line(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.jsonl")
    first, second = realistic_trace(), realistic_trace()
    store.append(first)
    with store.path.open("ab") as file:
        file.write(b'{"format_version":1,"id":"cut-sh')
    with pytest.warns(PartialLineWarning, match="removed a partial last line"):
        store.append(second)
    lines = store.path.read_bytes().splitlines(keepends=True)
    assert all(line.endswith(b"\n") for line in lines) and len(lines) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.load() == [first, second]


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.jsonl")
    edited, later = realistic_trace(), realistic_trace()
    store.path.write_text(edited.to_json())  # e.g. saved by an editor without a final newline
    assert store.load() == [edited]
    store.append(later)
    assert store.load() == [edited, later]


def test_a_malformed_line_in_the_middle_is_skipped_with_a_warning_naming_file_and_line(
    tmp_path: Path,
) -> None:
    store = TraceStore(tmp_path / "traces.jsonl")
    first, last = realistic_trace(), realistic_trace()
    store.append(first)
    with store.path.open("ab") as file:
        file.write(b"{not json}\n")
    store.append(last)
    with pytest.warns(CorruptLineWarning, match=r"traces\.jsonl, line 2: skipped, not valid JSON"):
        assert store.load() == [first, last]


def test_an_invalid_trace_in_a_line_is_skipped_naming_file_line_and_key(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.jsonl")
    data = realistic_trace().to_dict()
    del data["steps"][0]["code"]
    kept = realistic_trace()
    store.path.write_text(json.dumps(data) + "\n" + kept.to_json() + "\n")
    with pytest.warns(
        CorruptLineWarning, match=r"line 1: skipped, steps\[0\]: missing required key 'code'"
    ):
        assert store.load() == [kept]


def test_a_corrupt_checkpoint_is_skipped_with_a_warning(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.jsonl")
    kept = running_trace()
    store.checkpoint(kept)
    (store.checkpoint_dir / "broken.json").write_text('{"format_version": 1, "id"')
    with pytest.warns(CorruptLineWarning, match=r"broken\.json: skipped, not valid JSON"):
        assert [trace.id for trace in store.load()] == [kept.id]


def test_interrupted_run_is_recovered_from_checkpoint(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.jsonl")
    finished = realistic_trace()
    store.append(finished)
    running = running_trace()
    store.checkpoint(running)
    running.segments.append(tool_segment("1 2 3"))
    store.checkpoint(running)  # the latest state replaces the earlier one
    # ...the process dies here, before append().
    recovered = TraceStore(store.path).load()
    assert [trace.id for trace in recovered] == [finished.id, running.id]
    assert recovered[1].finish_reason == "interrupted"
    assert recovered[1].segments == running.segments


def test_checkpoint_keeps_a_finish_reason_it_already_had(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.jsonl")
    store.checkpoint(running_trace(finish_reason="time_limit"))
    assert [trace.finish_reason for trace in store] == ["time_limit"]


def test_append_removes_the_checkpoint(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.jsonl")
    trace = running_trace()
    store.checkpoint(trace)
    assert (store.checkpoint_dir / f"{trace.id}.json").exists()
    trace.finish_reason = "answer"
    store.append(trace)
    assert list(store.checkpoint_dir.iterdir()) == []
    assert store.load() == [trace]


def test_checkpoint_left_behind_after_append_is_not_duplicated(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.jsonl")
    trace = realistic_trace()
    store.append(trace)
    store.checkpoint(running_trace(id=trace.id))  # as if the crash came between write and unlink
    assert store.load() == [trace]


def test_trace_ids_must_be_safe_file_names() -> None:
    with pytest.raises(TraceFormatError, match=r"trace id '\.\./escape'"):
        running_trace(id="../escape")


def test_concurrent_appends_write_only_whole_lines(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.jsonl")
    big = "x" * 200_000  # far larger than a pipe buffer or a page

    def writer(n: int) -> list[str]:
        ids = []
        for i in range(8):
            trace = running_trace(id=f"w{n}-{i}", finish_reason="answer")
            trace.segments.append(Segment("tool", big))
            store.append(trace)
            ids.append(trace.id)
        return ids

    results: dict[int, list[str]] = {}
    threads = [
        threading.Thread(target=lambda n=n: results.update({n: writer(n)})) for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = store.path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert all(json.loads(line)["id"] for line in lines[:-1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = store.load()
    assert sorted(t.id for t in loaded) == sorted(i for ids in results.values() for i in ids)
    assert len(loaded) == 64
