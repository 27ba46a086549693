"""The reasoning loop with real kernels: splicing, limits, faults, cancellation, the trace."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import nbformat
import pytest

from kernel_bridge import Kernel
from kernel_bridge.parsing import CodeEnd, TextDelta
from kernel_bridge.reasoner import (
    NO_CODE_RAN,
    Limits,
    Reasoner,
    RunFinished,
    StepFinished,
    StepOutput,
    StepStarted,
)
from kernel_bridge.samplers import make_sampler
from kernel_bridge.samplers.scripted import ScriptedSampler
from kernel_bridge.trace import TraceStore
from tests.samplers_standins import TurnsSamplerStandIn

SCRIPTS = Path(__file__).parent / "scripts"


def script_sampler(text: str, **kw) -> ScriptedSampler:
    return ScriptedSampler(text, **kw)


async def test_blocks_run_and_real_output_is_spliced(kernel):
    sampler = make_sampler(f"scripted:{SCRIPTS / 'primes.txt'}")
    trace = await Reasoner(sampler, kernel).run("Sum the primes below 50.")
    assert trace.finish_reason == "answer"
    assert trace.answer == "The primes below 50 sum to **328**."
    assert [s.output_text for s in trace.steps] == ["15", "328"]
    assert "```output\n15\n```\n" in trace.text
    assert "stale output" not in trace.text
    assert [s.kind for s in trace.segments] == ["model", "tool", "model", "tool", "model"]
    # The model's variables stay in the kernel for the user.
    assert (await kernel.execute("len(primes)")).output_text == "15"


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
async def test_any_chunking_gives_the_same_trace(kernel, chunk_size):
    script = (SCRIPTS / "primes.txt").read_text()
    trace = await Reasoner(script_sampler(script, chunk_size=chunk_size), kernel).run("q")
    assert trace.answer == "The primes below 50 sum to **328**."
    assert [s.code for s in trace.steps] == [
        "primes = [n for n in range(2, 50) if all(n % d for d in range(2, int(n**0.5) + 1))]\n"
        "print(len(primes))\n",
        "sum(primes)\n",
    ]


async def test_state_persists_across_questions(kernel):
    first = "<think>\n```python\nmemo = {'a': 1}\n```\n</think>\n<answer>saved</answer>"
    second = "<think>\n```python\nmemo['a'] + 1\n```\n</think>\n<answer>2</answer>"
    await Reasoner(script_sampler(first), kernel).run("one")
    trace = await Reasoner(script_sampler(second), kernel).run("two")
    assert trace.steps[0].output_text == "2"


async def test_stream_yields_text_code_and_step_events_in_order(kernel):
    script = "<think>\nLet me see.\n```python\nprint('hi')\n```\nok\n</think>\n<answer>hi</answer>"
    kinds = []
    async for event in Reasoner(script_sampler(script, chunk_size=2), kernel).stream("q"):
        if isinstance(event, (CodeEnd, StepStarted, StepOutput, StepFinished, RunFinished)):
            kinds.append(type(event).__name__)
        elif isinstance(event, TextDelta) and (not kinds or kinds[-1] != "Text"):
            kinds.append("Text")
    assert kinds == [
        "Text",
        "CodeEnd",
        "StepStarted",
        "StepOutput",
        "StepFinished",
        "Text",
        "RunFinished",
    ]


async def test_fake_output_after_a_block_is_cut_and_replaced(kernel):
    sampler = TurnsSamplerStandIn(
        [
            "<think>\n```python\n6 * 7\n```\n```output\n41\n```\nIt is 41.",
            "It is 42.\n</think>\n<answer>42</answer>",
        ],
        chunk_size=100,
    )
    trace = await Reasoner(sampler, kernel).run("q")
    assert "41" not in trace.text
    assert trace.text.count("```output") == 1
    assert trace.answer == "42"


async def test_output_block_without_code_is_cut(kernel):
    sampler = TurnsSamplerStandIn(
        [
            "<think>\nThe result:\n```output\n99\n```\n",
            "I should compute it.\n</think>\n<answer>unknown</answer>",
        ]
    )
    trace = await Reasoner(sampler, kernel).run("q")
    assert "99" not in trace.text
    assert NO_CODE_RAN in trace.segments[1].text
    assert trace.steps == []
    assert trace.answer == "unknown"


async def test_block_in_the_answer_does_not_run(kernel):
    script = "<think>ok</think>\n<answer>\n```python\nraise SystemExit('ran!')\n```\n</answer>"
    trace = await Reasoner(script_sampler(script), kernel).run("q")
    assert trace.steps == []
    assert "raise SystemExit" in trace.answer
    assert trace.finish_reason == "answer"


async def test_unterminated_block_is_recorded_not_run(kernel):
    script = "<think>\n```python\nprint('never')\n"
    trace = await Reasoner(script_sampler(script), kernel).run("q")
    assert trace.steps == []
    assert trace.text == script
    assert [sp.kind for sp in trace.segments[0].spans][-1] == "code"


async def test_backticks_inside_code_and_mid_line_fences_do_not_close(kernel):
    script = (
        "<think>\nA fence ``` mid-line is prose.\n```python\n"
        's = \'```\'\nt = """\n```not a close\n"""\nprint(s + \'|\' + t.strip())\n```\n'
        "</think>\n<answer>done</answer>"
    )
    trace = await Reasoner(script_sampler(script, chunk_size=1), kernel).run("q")
    assert len(trace.steps) == 1
    assert trace.steps[0].output_text == "```|```not a close"


async def test_nonascii_and_emoji_split_across_chunks(kernel):
    script = (
        "<think>\n思考 🤔\n```python\nprint('π≈3.14 🥧')\n```\n</think>\n<answer>🥧 ok</answer>"
    )
    trace = await Reasoner(script_sampler(script, chunk_size=1), kernel).run("q")
    assert trace.steps[0].output_text == "π≈3.14 🥧"
    assert trace.answer == "🥧 ok"


async def test_max_steps_ends_the_run(kernel):
    block = "```python\n1\n```\n"
    script = "<think>\n" + block * 5 + "</think>\n<answer>x</answer>"
    trace = await Reasoner(script_sampler(script), kernel, limits=Limits(max_steps=2)).run("q")
    assert trace.finish_reason == "max_steps"
    assert len(trace.steps) == 2


async def test_max_tokens_ends_the_run(kernel):
    script = "<think>\n" + "thinking " * 200 + "</think>\n<answer>x</answer>"
    trace = await Reasoner(script_sampler(script), kernel, limits=Limits(max_tokens=100)).run("q")
    assert trace.finish_reason == "max_tokens"
    assert trace.usage.model_tokens == 100


async def test_time_limit_ends_the_run(kernel):
    script = "<think>\n" + "slow " * 400 + "</think>\n<answer>x</answer>"
    sampler = script_sampler(script, chunk_size=1, delay=0.01)  # 20 s of text unlimited
    t0 = time.monotonic()
    trace = await Reasoner(sampler, kernel, limits=Limits(time_limit=1.0)).run("q")
    assert trace.finish_reason == "time_limit"
    assert time.monotonic() - t0 < 12


async def test_step_timeout_is_reported_to_the_model_and_the_run_goes_on(kernel):
    script = (
        "<think>\n```python\nimport time\ntime.sleep(60)\n```\nToo slow; quicker:\n"
        "```python\n2 + 2\n```\n</think>\n<answer>4</answer>"
    )
    limits = Limits(step_timeout=1.0)
    trace = await Reasoner(script_sampler(script), kernel, limits=limits).run("q")
    assert [s.status for s in trace.steps] == ["timeout", "ok"]
    assert "timed out after 1 s" in trace.segments[1].text
    assert trace.finish_reason == "answer"


async def test_kernel_death_mid_trace_is_told_to_the_model(kernel):
    script = (
        "<think>\n```python\nkept = 1\nimport os\nos._exit(3)\n```\nIt died; again:\n"
        "```python\n'kept' in globals()\n```\n</think>\n<answer>recovered</answer>"
    )
    trace = await Reasoner(script_sampler(script), kernel).run("q")
    assert [s.status for s in trace.steps] == ["died", "ok"]
    assert "variables are lost" in trace.segments[1].text
    assert trace.steps[1].output_text == "False"
    assert trace.finish_reason == "answer"


async def test_sampler_failing_mid_stream_saves_trace_with_error(kernel, tmp_path):
    sampler = TurnsSamplerStandIn(["<think>\nabcdefghij" * 10], fail_after=20)
    store = TraceStore(tmp_path / "t.jsonl")
    trace = await Reasoner(sampler, kernel, store=store).run("q")
    assert trace.finish_reason == "error"
    assert "ConnectionError" in trace.error
    assert trace.text.startswith("<think>\nabcdefghij")
    assert store.load()[0].finish_reason == "error"


async def test_cancel_stops_promptly_and_keeps_the_trace(kernel, tmp_path):
    script = "<think>\n```python\nimport time\ntime.sleep(30)\n```\n</think>\n<answer>x</answer>"
    store = TraceStore(tmp_path / "t.jsonl")
    reasoner = Reasoner(script_sampler(script), kernel, store=store)
    task = asyncio.create_task(reasoner.run("q"))
    while not reasoner.trace or not reasoner.trace.segments:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the block is running now
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 15  # the block sleeps 30 s
    assert reasoner.trace.finish_reason == "interrupted"
    assert store.load()[0].finish_reason == "interrupted"
    assert (await kernel.execute("'still usable'")).status == "ok"


async def test_a_block_stopped_midway_is_recorded_with_what_it_printed(kernel, tmp_path):
    script = (
        "<think>\n```python\nprint('quick')\n```\n"
        "```python\nimport time\nprint('started', flush=True)\ndisplay({'a': 1})\n"
        "time.sleep(30)\nprint('never')\n```\n</think>\n<answer>x</answer>"
    )
    store = TraceStore(tmp_path / "t.jsonl")
    reasoner = Reasoner(script_sampler(script), kernel, store=store)
    shown = []

    async def consume() -> None:
        async for event in reasoner.stream("q"):
            if isinstance(event, StepOutput) and event.index == 1:
                shown.append(event.output)

    task = asyncio.create_task(consume())
    while len(shown) < 2:  # the second block printed and displayed: the user saw it
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (saved,) = store.load()
    assert saved.finish_reason == "interrupted"
    stopped = saved.steps[1]
    assert stopped.status == "error"
    assert stopped.output_text == (
        "started\n{'a': 1}\n[interrupted: the run was stopped while this block ran]"
    )
    assert [o["output_type"] for o in stopped.outputs] == ["stream", "display_data"]
    assert stopped.code.endswith("print('never')\n") and stopped.duration_s > 0
    # the code span links to it, and the notebook shows the partial output under its cell
    cells = [c for c in saved.to_notebook().cells if c.cell_type == "code"]
    assert [o["output_type"] for o in cells[1].outputs] == ["stream", "display_data"]


async def test_a_stopped_block_still_ends_the_stream_as_a_run_ends(kernel):
    script = "<think>\n```python\nimport time\nprint('hi', flush=True)\ntime.sleep(30)\n```\n"
    reasoner = Reasoner(script_sampler(script), kernel)
    events = []

    async def consume() -> None:
        async for event in reasoner.stream("q"):
            events.append(event)

    task = asyncio.create_task(consume())
    while not any(isinstance(e, StepOutput) for e in events):
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Every front end sees the stopped block end, with what it printed, then the run end.
    finished, last = events[-2:]
    assert isinstance(finished, StepFinished) and isinstance(last, RunFinished)
    assert finished.step.index == 0 and finished.step.output_text.startswith("hi\n")
    assert last.trace.finish_reason == "interrupted" and len(last.trace.steps) == 1
    assert last.trace.answer is None


async def test_a_turn_that_ends_after_its_last_block_has_no_answer(kernel):
    script = "<think>\n```python\nimport time\ntime.sleep(60)\n```\n"
    limits = Limits(step_timeout=1.0)
    trace = await Reasoner(script_sampler(script), kernel, limits=limits).run("q")
    assert [s.status for s in trace.steps] == ["timeout"]
    assert trace.finish_reason == "no_answer"
    assert trace.answer is None


async def test_a_run_cut_short_keeps_no_answer(kernel):
    # Plain prose (no <think>) is what an answer would be made of; cut off, it is not one.
    sampler = script_sampler("Let me see. " * 1000, chunk_size=4, delay=0.005)
    reasoner = Reasoner(sampler, kernel, profile="markdown")
    task = asyncio.create_task(reasoner.run("q"))
    while not reasoner.trace or reasoner.trace.usage.model_tokens < 20:
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reasoner.trace.finish_reason == "interrupted"
    assert reasoner.trace.answer is None and "Let me see." in reasoner.trace.text
    cut = await Reasoner(
        script_sampler("Let me see. " * 100), kernel, limits=Limits(max_tokens=20)
    ).run("q")
    assert (cut.finish_reason, cut.answer) == ("max_tokens", None)


async def test_sampler_stream_is_closed_at_each_pause(kernel):
    sampler = TurnsSamplerStandIn(
        ["<think>\n```python\n1\n```\nmore text that is dropped", "</think>\n<answer>1</answer>"]
    )
    await Reasoner(sampler, kernel).run("q")
    assert sampler.closed == sampler.calls == 2


async def test_trace_keeps_the_samplers_own_token_ids(kernel):
    sampler = TurnsSamplerStandIn(
        ["<think>\n```python\n2 ** 10\n```\n", "Done.\n</think>\n<answer>1024</answer>"],
        chunk_size=3,
        token_ids=True,
    )
    trace = await Reasoner(sampler, kernel).run("q")
    model_ids = [s.token_ids for s in trace.segments if s.kind == "model"]
    assert model_ids == sampler.emitted_ids

    class CharTokenizerStandIn:
        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]

        def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
            return [0]

    view = trace.training_view(CharTokenizerStandIn())
    assert view.prompt_ids == sampler.prompt_ids(trace.messages) == trace.prompt_token_ids
    assert trace.usage.prompt_tokens == len(view.prompt_ids)
    tool_ids = [ord(c) for c in trace.segments[1].text]
    assert view.completion_ids == sampler.emitted_ids[0] + tool_ids + sampler.emitted_ids[1]
    assert view.mask == [1] * len(sampler.emitted_ids[0]) + [0] * len(tool_ids) + [1] * len(
        sampler.emitted_ids[1]
    )


async def test_trace_exports_to_a_valid_notebook_with_real_outputs(kernel):
    sampler = make_sampler(f"scripted:{SCRIPTS / 'primes.txt'}")
    trace = await Reasoner(sampler, kernel).run("Sum the primes below 50.")
    nb = trace.to_notebook()
    nbformat.validate(nb)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert [
        c.outputs[0].get("text", c.outputs[0].get("data", {}).get("text/plain")) for c in code_cells
    ] == ["15\n", "328"]


async def test_store_is_written_and_checkpointed(kernel, tmp_path):
    path = tmp_path / "traces.jsonl"
    reasoner = Reasoner(make_sampler(f"scripted:{SCRIPTS / 'primes.txt'}"), kernel, store=path)
    trace = await reasoner.run("q")
    loaded = TraceStore(path).load()
    assert [t.id for t in loaded] == [trace.id]
    assert loaded[0].to_dict() == trace.to_dict()
    assert not list((tmp_path / "traces.jsonl.inprogress").glob("*.json"))


@pytest.mark.parametrize(
    ("profile", "script", "start"),
    [
        ("retool", "<think>Compute.<code>print(6*7)</code>Good.</think><answer>42</answer>", None),
        ("plain", "Compute:\n```python\nprint(6*7)\n```\nSo 42.\n<answer>42</answer>", None),
        (
            "markdown",
            "Compute:\n```python\nprint(6*7)\n```\n</think>\n<answer>42</answer>",
            "think",
        ),
    ],
    ids=["retool", "plain", "forced-think"],
)
async def test_profiles(kernel, profile, script, start):
    reasoner = Reasoner(script_sampler(script), kernel, profile=profile, start_section=start)
    trace = await reasoner.run("q")
    assert [s.output_text for s in trace.steps] == ["42"]
    assert trace.answer == "42"
    tool = trace.segments[1].text
    assert tool == (
        "<interpreter>\n42\n</interpreter>\n" if profile == "retool" else "```output\n42\n```\n"
    )


async def test_reasoner_owns_and_closes_its_kernel():
    async with Reasoner(
        script_sampler("<think>\n```python\n1+1\n```\n</think><answer>2</answer>")
    ) as reasoner:
        trace = await reasoner.run("q")
        kernel = await reasoner.kernel()
        assert kernel.started
    assert not kernel.started
    assert trace.steps[0].output_text == "2"


@pytest.mark.parametrize(
    "limit, message",
    [
        ({"max_steps": 0}, "Limits.max_steps must be at least 1, got 0"),
        ({"max_tokens": 2.5}, "Limits.max_tokens must be a whole number, got 2.5"),
        ({"step_timeout": float("nan")}, "Limits.step_timeout must be a finite number of seconds"),
        ({"time_limit": float("inf")}, "Limits.time_limit must be a finite number of seconds"),
        ({"step_timeout": -1.0}, "above 0, got -1.0"),
        ({"time_limit": 0}, "above 0, got 0"),
    ],
)
def test_bad_limits_are_a_clear_error(limit, message):
    # NaN passed the old `<= 0` check and removed the limit: a spinning block ran on.
    with pytest.raises(ValueError, match=re.escape(message)):
        Limits(**limit)


async def test_an_empty_question_is_refused():
    reasoner = Reasoner(script_sampler("<answer>x</answer>"))
    for question in ("", "  \n"):
        with pytest.raises(ValueError, match="the question is empty"):
            await reasoner.run(question)
    assert reasoner._kernel is None  # refused before a kernel started


async def test_a_kernel_passed_in_is_left_running(kernel):
    async with Reasoner(script_sampler("<answer>x</answer>"), kernel) as reasoner:
        await reasoner.run("q")
    assert kernel.started
    assert isinstance(kernel, Kernel)
