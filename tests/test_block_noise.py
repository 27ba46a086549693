"""What a block's output holds is what its code printed, with its own frames only: no asyncio
reports about kernel tasks, no kernel-bridge frame heading a traceback (issue 15, item 7)."""

from __future__ import annotations

import logging
import sys

import pytest

from kernel_bridge.execution import ShellExecutor

DESTROY_A_PENDING_TASK = (
    "import asyncio, gc\n"
    "loop = asyncio.new_event_loop()\n"
    "task = loop.create_task(asyncio.sleep(10))  # not the block's code: asyncio's\n"
    "del task, loop\n"
    "gc.collect()\n"
    "print('done')\n"
)


class _LastResort(logging.Handler):
    """Writes to whatever ``sys.stderr`` is now, as logging's last resort does in a kernel."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


@pytest.fixture
def asyncio_log_to_stderr():
    logger = logging.getLogger("asyncio")
    handler = _LastResort()
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)


def test_a_traceback_starts_at_the_blocks_own_line(shell):
    result = ShellExecutor(shell, echo=False).run("def f():\n    return 1 / 0\nf()")
    assert result.status == "error"
    assert "shell.py" not in result.output_text and "_run_block" not in result.output_text
    assert result.output_text.splitlines()[1].startswith("File <%%reason block")
    (error,) = [o for o in result.outputs if o["output_type"] == "error"]
    assert "_run_block" not in "".join(error["traceback"])


def test_a_timed_out_block_shows_only_its_own_frames(shell):
    # The block's own frame heads the traceback under IPython 8 as under 9 (IPython 8 cut the
    # first frame left for the shell's default tb_offset: the block's; CI's Python has 8.12).
    result = ShellExecutor(shell, echo=False).run("import time\ntime.sleep(10)", timeout=2)
    assert result.status == "timeout"
    assert "_run_block" not in result.output_text and "shell.py" not in result.output_text
    assert "----> 2 time.sleep(10)" in result.output_text


def test_asyncio_reports_about_other_tasks_stay_out_of_the_output(shell, asyncio_log_to_stderr):
    result = ShellExecutor(shell, echo=False).run(DESTROY_A_PENDING_TASK)
    assert result.status == "ok"
    assert "Task was destroyed" not in result.output_text
    assert result.output_text.endswith("done")


def test_asyncio_reports_about_the_blocks_own_tasks_stay_in_it(shell, asyncio_log_to_stderr):
    code = DESTROY_A_PENDING_TASK.replace(
        "asyncio.sleep(10))  # not the block's code: asyncio's", "mine())"
    ).replace(
        "import asyncio, gc\n",
        "import asyncio, gc\nasync def mine():\n    await asyncio.sleep(10)\n",
    )
    result = ShellExecutor(shell, echo=False).run(code)
    assert "Task was destroyed but it is pending!" in result.output_text
    assert "<%%reason block" in result.output_text


def test_input_refused_shows_the_blocks_line_not_ours(shell):
    result = ShellExecutor(shell, echo=False).run("name = input('name? ')")
    assert "StdinDisabledError: input() is not available" in result.output_text
    assert "shell.py" not in result.output_text and "_no_input" not in result.output_text


def test_the_model_reads_its_own_frames_only(shell, asyncio_log_to_stderr):
    import asyncio

    from kernel_bridge.reasoner import Reasoner
    from kernel_bridge.samplers.scripted import ScriptedSampler

    script = (
        f"<think>\n```python\n{DESTROY_A_PENDING_TASK}```\n"
        "```python\ndef f():\n    return 1 / 0\nf()\n```\n</think>\n<answer>x</answer>"
    )
    reasoner = Reasoner(ScriptedSampler(script), ShellExecutor(shell, echo=False))
    trace = asyncio.run(reasoner.run("q"))
    tool_text = "".join(s.text for s in trace.segments if s.kind == "tool")
    assert [s.status for s in trace.steps] == ["ok", "error"]
    assert "ZeroDivisionError" in tool_text and "<%%reason block" in tool_text
    for text in (tool_text, *(s.output_text for s in trace.steps)):
        assert "Task was destroyed" not in text and "_run_block" not in text
