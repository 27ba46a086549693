"""Careless and hostile input that used to slip through: each test names what it once did."""

from __future__ import annotations

import json
import re
import tracemalloc
from pathlib import Path

import jsonschema
import pytest

from kernel_bridge import Kernel
from kernel_bridge.execution.shell import ShellExecutor
from kernel_bridge.trace import LINE_BYTES, STEP_BYTES, Step, Trace
from kernel_bridge.training.config import ConfigError, config_from_dict

SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "trace.schema.json").read_text())


@pytest.mark.parametrize(
    "data, message",
    [
        ({"step_timeout": float("nan")}, "step_timeout must be a finite number, got nan"),
        ({"learning_rate": float("inf")}, "learning_rate must be a finite number, got inf"),
        ({"beta": float("nan")}, "beta must be a finite number"),
        ({"top_p": float("nan")}, "top_p must be a finite number"),
        ({"rewards": {"correct": float("nan")}}, "rewards.correct must be a finite number"),
    ],
)
def test_training_config_numbers_must_be_finite(data, message):
    # TOML writes nan and inf; NaN slipped through every `<` and `<=` check of validate().
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, where="run.toml")


# -- issue 16, item 1: rich output has an upper bound ---------------------------------------------

FLOOD = (
    "from IPython.display import HTML, display\n"
    "for i in range({n}):\n"
    "    display(HTML(str(i) + 'x' * {size}))\n"
    "print('end')\n"
)


def _omitted_outputs(result) -> int:
    match = re.search(r"\[… ([\d,]+) outputs omitted", result.output_text)
    assert match, f"no omission marker in {result.output_text[-300:]!r}"
    return int(match.group(1).replace(",", ""))


async def test_a_flood_of_displays_keeps_the_limits_and_counts_every_omitted_one(kernel):
    # Used to keep all 20,000 (a 766 MB trace line for 100 KB ones), or drop some with no marker.
    result = await kernel.execute(FLOOD.format(n=3000, size=10), timeout=60)
    assert result.status == "ok"
    marker = result.outputs[-1]
    assert "outputs omitted" in marker.data["text/plain"]
    kept = len(result.outputs) - 1
    assert kept == kernel.max_outputs
    assert kept + _omitted_outputs(result) == 3000 + 1  # every display, and the print after them
    assert len(result.output_text) < kernel.output_cap + 300


async def test_display_bytes_past_the_limit_are_cut_to_their_text(kernel):
    result = await kernel.execute(FLOOD.format(n=100, size=100_000), timeout=60)  # 10 MB of HTML
    assert result.status == "ok"
    size = len(json.dumps([dict(o) for o in result.outputs]))
    assert size < kernel.max_output_bytes + 100_000
    assert "over the block's limit" in json.dumps(result.outputs[-3].data)
    assert result.stdout == "end\n"


async def test_a_flood_that_bypasses_the_kernel_side_guard_is_bounded_here():
    # The guard in the kernel is not a security boundary; the client's own limits must hold
    # whatever arrives, in count, in size, and in the memory this process holds.
    async with Kernel(output_guard=False, max_outputs=50, max_output_bytes=1 << 20) as k:
        tracemalloc.start()
        try:
            result = await k.execute(FLOOD.format(n=1500, size=50_000), timeout=120)  # 75 MB
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.status == "ok"
    assert len(result.outputs) == 51
    assert _omitted_outputs(result) > 1000
    assert len(json.dumps(result.to_dict())) < (1 << 20) + 100_000
    assert peak < 64 << 20, f"the client held {peak >> 20} MiB for 75 MB of displays"


async def test_a_huge_exception_message_is_cut_and_not_stored_four_times(kernel):
    # A 20 MB message used to be kept four times over (evalue and traceback, in the outputs
    # and in the result): 80 MB for one step.
    result = await kernel.execute("raise ValueError('E' * 20_000_000)")
    assert result.status == "error"
    assert result.error_name == "ValueError"
    assert "characters omitted" in result.error_value
    assert len(result.error_value) < 11_000
    assert len(json.dumps(result.to_dict())) < 200_000
    assert "characters omitted" in result.output_text


def _step(index: int, outputs: list[dict]) -> Step:
    return Step(
        index=index,
        code="display(big)",
        status="ok",
        output_text="[text/html output]",
        outputs=outputs,
        execution_count=index + 1,
        started=0.0,
        duration_s=0.1,
        new_files=[],
    )


def test_a_saved_trace_line_is_bounded_per_step_and_per_run():
    html = {"output_type": "display_data", "data": {"text/html": "x" * 3_000_000}, "metadata": {}}
    text = {"output_type": "stream", "name": "stdout", "text": "y" * 3_000_000}
    steps = [_step(i, [html, text] * 5) for i in range(8)]  # 30 MB a step, 240 MB in all
    trace = Trace(
        model="m", sampler={"name": "s"}, messages=[], steps=steps, finish_reason="answer"
    )
    line = trace.to_json()
    assert len(line) <= LINE_BYTES
    saved = Trace.from_json(line)
    for step in saved.steps:
        assert len(json.dumps(step.to_dict())) <= STEP_BYTES
        assert "outputs cut in the saved trace" in step.outputs[-1]["data"]["text/plain"]
        assert step.output_text == "[text/html output]"
    assert len(trace.steps[0].outputs[0]["data"]["text/html"]) == 3_000_000  # not changed
    jsonschema.validate(json.loads(line), SCHEMA)


# -- issue 16, item 8: background output belongs to no block --------------------------------------


def test_shared_mode_keeps_an_earlier_threads_prints_out_of_the_block(shell):
    executor = ShellExecutor(shell=shell, echo=False)
    started = executor.run(
        "import threading\n"
        "go, done = threading.Event(), threading.Event()\n"
        "def chatter():\n"
        "    go.wait(10)\n"
        "    print('from the thread ' * 5000)\n"
        "    done.set()\n"
        "threading.Thread(target=chatter, daemon=True).start()\n"
        "print('started')"
    )
    assert started.stdout == "started\n"
    result = executor.run("go.set(); done.wait(10); print('mine')")
    assert result.status == "ok"
    assert result.stdout == "mine\n"
    assert "from the thread" in result.background_output
    assert len(result.background_output) < executor.output_limits.background_cap + 100
    assert "not from this block" in result.output_text


# -- issue 16, item 12: a shared-mode block that will not stop at the interrupt -------------------


def test_a_block_that_ignores_sigint_is_stopped_by_an_exception_raised_in_it(shell):
    import signal

    handler = signal.getsignal(signal.SIGINT)
    executor = ShellExecutor(shell=shell, echo=False, interrupt_grace=0.2)
    result = executor.run(
        "import signal\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "spins = 0\n"
        "while True:\n"
        "    spins += 1\n",
        timeout=1,
    )
    assert result.status == "timeout"
    assert "BlockTimeout: the block ignored the interrupt at its deadline" in result.output_text
    assert "----> 4 while True:" in result.output_text or "----> 5" in result.output_text
    assert signal.getsignal(signal.SIGINT) is handler  # the block's SIG_IGN did not stay
    assert executor.run("print(spins > 0)").stdout == "True\n"  # the kernel goes on


def test_a_block_that_swallows_keyboard_interrupt_is_stopped(shell):
    executor = ShellExecutor(shell=shell, echo=False, interrupt_grace=0.2)
    result = executor.run(
        "while True:\n    try:\n        while True:\n            pass\n"
        "    except KeyboardInterrupt:\n        pass\n",
        timeout=0.3,
    )
    assert result.status == "timeout"
    assert "BlockTimeout" in result.output_text


def test_when_nothing_stops_a_block_the_cell_says_so_plainly(shell, capsys):
    executor = ShellExecutor(shell=shell, echo=False, interrupt_grace=0.2)
    result = executor.run(  # refuses everything for 2 s, then ends by itself
        "import time\n"
        "end = time.monotonic() + 2\n"
        "while time.monotonic() < end:\n"
        "    try:\n"
        "        while time.monotonic() < end:\n"
        "            pass\n"
        "    except BaseException:\n"
        "        pass\n"
        "print('over')",
        timeout=0.3,
    )
    told = capsys.readouterr().err  # the cell's own stream: not part of the block's output
    assert "ignores both the interrupt and the exception raised in it" in told
    assert "restart the kernel" in told and "--isolated" in told
    assert told.count("kernel-bridge: this block has run") == 1
    assert result.stdout == "over\n"
    assert executor.run("print('next')").stdout == "next\n"  # nothing pending is left behind
