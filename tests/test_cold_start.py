"""The first %%reason of a kernel, while its model loads (issue 15, item 4): the cell and the
sidebar's comm say so within a second, Stop ends the load with one line and the next run loads
again, and the libraries' warnings stay out of the cell while the notebook's own show.

The quick tests use the scripted stand-in's ``=== load: SECONDS`` line (a model that takes that
long to load and reports progress as a real load does); one test loads the real embedded model.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from kernel_bridge.embedded import embedded_available
from tests.test_magic import Notebook, last_trace, magic_notebook, script, summary

pytestmark = pytest.mark.slow

SLOW = script("magic_slow_load.txt")  # a stand-in that takes 4 s to load


class TimedNotebook(Notebook):
    """A notebook that also notes when each output of the last cell arrived, and the text a
    display first showed (an update changes the recorded output in place)."""

    def __init__(self, root: Any) -> None:
        super().__init__(root)
        self.arrived: list[float] = []
        self.first_text: list[str | None] = []
        output = self.client.output

        def record(outs: Any, msg: Any, display_id: Any, cell_index: int) -> Any:
            self.arrived.append(time.monotonic())
            self.first_text.append(msg["content"].get("data", {}).get("text/plain"))
            return output(outs, msg, display_id, cell_index)

        self.client.output = record  # type: ignore[method-assign]

    def run(self, source: str) -> Any:
        self.arrived.clear()
        self.first_text.clear()
        self.started = time.monotonic()
        return super().run(source)


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    with magic_notebook(tmp_path_factory.mktemp("notebook"), TimedNotebook) as nb:
        yield nb


@pytest.fixture
def trace_file(tmp_path):
    return tmp_path / "traces.jsonl"


def loading_lines(outputs: list[Any]) -> list[str]:
    return [
        out["data"]["text/plain"]
        for out in outputs
        if out.get("metadata", {}).get("kernel_bridge", {}).get("kind") == "loading"
    ]


def test_a_model_that_loads_says_so_first_in_the_cell_and_the_sidebar(notebook, trace_file):
    cell = notebook.reason(f"--model {SLOW} --trace {trace_file}", "Go.")
    live = notebook.streamed()
    assert live[:2] == ["loading", "clear"], live  # then the run's own output, as before
    assert live.index("clear") < live.index("code")
    assert notebook.arrived[0] - notebook.started < 1.0  # the cell says so within a second
    assert loading_lines(notebook.live)  # the display, as the kernel_bridge "loading" kind
    line = notebook.first_text[0] or ""
    assert line.startswith(f"Loading model {SLOW.removeprefix('scripted:')}"[:14])
    assert "(a stand-in)…" in line
    assert summary(cell) == ["trace"]  # the finished cell: one view of the run, as today
    trace = last_trace(trace_file)
    assert trace.finish_reason == "answer" and trace.steps[0].status == "ok"
    # The sidebar: the comm opens at once with the id the trace takes, says "loading" (with
    # the share done), then "ready", before the run's first event.
    log = notebook.comm_log
    assert log[0]["open"]["trace_id"] == trace.id and log[0]["open"]["model"] == SLOW
    events = [e for e in log[1:] if "type" in e]
    loading = [e for e in events if e["type"] == "loading"]
    assert events[: len(loading)] == loading  # before anything else
    assert loading[-1]["stage"] == "ready"
    assert {e["stage"] for e in loading[:-1]} == {"loading"}
    fractions = [e["fraction"] for e in loading[:-1] if e["fraction"] is not None]
    assert fractions == sorted(fractions) and fractions[-1] > 0.5


def test_stop_during_the_load_ends_with_one_line_and_the_next_run_loads_again(notebook, trace_file):
    timer = notebook.interrupt_after(1.5)
    cell = notebook.reason(f"--model {SLOW} --trace {trace_file}", "Go.")
    timer.join()
    took = time.monotonic() - notebook.started
    assert [out.output_type for out in cell.outputs] == ["error"]  # the loading line is gone
    assert cell.outputs[0].traceback == [
        f"kernel-bridge: interrupted while loading model '{SLOW}'; "
        "nothing was kept, so the next %%reason loads it again"
    ]
    assert took < 3.5  # stopped at once, not after the 4-s load
    assert not trace_file.exists()  # no run, no trace
    finished = [e for e in notebook.comm_log if e.get("type") == "finished"]
    assert finished[0]["finish_reason"] == "interrupted" and "closed" in notebook.comm_log[-1]
    # The kernel is fine and the model loads again, in full.
    cell = notebook.reason(f"--model {SLOW} --trace {trace_file}", "Go.")
    assert summary(cell) == ["trace"]
    assert last_trace(trace_file).answer == "loaded"


def test_the_notebooks_own_warning_shows_in_the_cell_and_the_trace(notebook, trace_file):
    notebook.reason(f"--model {SLOW} --trace {trace_file}", "Go.")
    assert any(
        x.startswith("stderr:") and "the notebook's own warning" in x for x in notebook.streamed()
    )
    step = last_trace(trace_file).steps[0]
    assert "UserWarning: the notebook's own warning" in step.output_text


# -- the real embedded model --------------------------------------------------------------------

# The libraries' own warning and log code, made to run inside our load and generation: the
# FutureWarning of transformers' deprecated is_gradient_checkpointing (load), a transformers log
# line about past_key_values (load and every forward pass), a bar through transformers' tqdm.
NOISY_LIBRARIES = """
import transformers.modeling_utils as mu
from transformers.utils import logging as hf_logging

_eval = mu.PreTrainedModel.eval

def noisy(self, *args, **kwargs):
    self.is_gradient_checkpointing
    hf_logging.get_logger("transformers.utils.generic").warning(
        "`past_key_values`/`cache_params` are deprecated. Use `cache` instead. (load)")
    for _ in hf_logging.tqdm(range(3), desc="Loading weights"):
        pass
    return _eval(self, *args, **kwargs)

_call = mu.PreTrainedModel.__call__

def noisy_call(self, *args, **kwargs):
    hf_logging.get_logger("transformers.utils.generic").warning(
        "`past_key_values`/`cache_params` are deprecated. Use `cache` instead. (generation)")
    return _call(self, *args, **kwargs)

mu.PreTrainedModel.eval = noisy
mu.PreTrainedModel.__call__ = noisy_call
"""


@pytest.mark.skipif(not embedded_available(), reason="the embedded model is not installed")
def test_the_embedded_model_loads_with_a_progress_line_and_no_library_noise(tmp_path):
    pytest.importorskip("transformers")
    trace_file = tmp_path / "traces.jsonl"
    nb = TimedNotebook(tmp_path)
    env = {**os.environ, "KERNEL_BRIDGE_HOME": str(tmp_path / "home")}
    with nb.client.setup_kernel(env=env, cwd=str(tmp_path)):
        nb.run("%load_ext kernel_bridge")
        assert not [o for o in nb.run(NOISY_LIBRARIES).outputs if o.output_type == "error"]
        nb.client.timeout = 600
        cell = nb.reason(f"--model local --max-tokens 12 --trace {trace_file}", "Say hi.")
        assert loading_lines(nb.live)
        assert nb.first_text[0] == "Loading model local…"
        assert nb.arrived[0] - nb.started < 1.0
        shown = " ".join(str(out) for out in nb.live) + " ".join(str(o) for o in cell.outputs)
        for noise in ("is_gradient_checkpointing", "past_key_values", "Loading weights", "it/s"):
            assert noise not in shown
        assert not [x for x in nb.streamed() if x.startswith("stderr:")]
        trace = last_trace(trace_file)
        assert trace.model == "local"
        assert "past_key_values" not in str(trace.to_dict())
        assert "is_gradient_checkpointing" not in str(trace.to_dict())
