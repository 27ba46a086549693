"""The %%reason magic in a real notebook kernel, driven through nbclient with scripted models.

One kernel serves the whole module, as one notebook would: cells run one after another, and each
test reads the outputs its cells produced.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from kernel_bridge.bundle import unpack_trace
from kernel_bridge.magic import COMM_TARGET, TRACE_MIME
from kernel_bridge.trace import Trace, load_traces

SCRIPTS = Path(__file__).parent / "scripts"

pytestmark = pytest.mark.slow


def script(name: str) -> str:
    return f"scripted:{SCRIPTS / name}"


class CommRecorder:
    """Stands in for the JupyterLab extension: records what arrives on the trace comm."""

    def __init__(self, log: list[dict[str, Any]], open_msg: dict[str, Any]) -> None:
        self.log = log
        log.append({"open": open_msg["content"]["data"]})

    def handle_msg(self, msg: dict[str, Any]) -> None:
        self.log.extend(msg["content"]["data"]["events"])


class Notebook:
    """A notebook whose cells run one at a time in a live kernel, as a user runs them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nb = new_notebook()
        self.client = NotebookClient(
            self.nb,
            kernel_name="python3",
            timeout=60,
            allow_errors=True,
            resources={"metadata": {"path": str(root)}},
        )
        self.comm_log: list[dict[str, Any]] = []
        self.client.comm_open_handlers[COMM_TARGET] = lambda msg: CommRecorder(self.comm_log, msg)
        handle_comm_msg = self.client.handle_comm_msg

        def record_close(outs: Any, msg: dict[str, Any], index: int) -> None:
            if msg["msg_type"] == "comm_close":  # nbclient passes only comm_msg to handlers
                self.comm_log.append({"closed": msg["content"]["comm_id"]})
            handle_comm_msg(outs, msg, index)

        self.client.handle_comm_msg = record_close  # type: ignore[method-assign]
        # Every output as it arrived, and the clear_output that ends a run: what the cell showed
        # while it ran (the saved cell keeps only the run's one final view).
        self.live: list[Any] = []
        output, clear = self.client.output, self.client.clear_output

        def record_output(outs: Any, msg: Any, display_id: Any, cell_index: int) -> Any:
            out = output(outs, msg, display_id, cell_index)
            if out is not None:
                self.live.append(out)
            return out

        def record_clear(outs: Any, msg: Any, cell_index: int) -> None:
            self.live.append(nbformat.NotebookNode(output_type="clear_output"))
            clear(outs, msg, cell_index)

        self.client.output = record_output  # type: ignore[method-assign]
        self.client.clear_output = record_clear  # type: ignore[method-assign]

    def run(self, source: str) -> nbformat.NotebookNode:
        cell = new_code_cell(source)
        self.nb.cells.append(cell)
        self.comm_log.clear()
        self.live.clear()
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return cell

    def streamed(self) -> list[str]:
        """``summary`` of what the last cell showed while it ran, ``clear`` where it cleared."""
        return summary({"outputs": self.live})

    def interrupt_after(self, seconds: float) -> threading.Timer:
        """Press the Stop button (the kernel manager's interrupt) after ``seconds``."""
        timer = threading.Timer(seconds, lambda: run_sync(self.client.km.interrupt_kernel)())
        timer.start()
        return timer

    def reason(self, options: str, question: str) -> nbformat.NotebookNode:
        return self.run(f"%%reason {options}\n{question}")


@contextlib.contextmanager
def magic_notebook(root: Path, kind: type[Notebook] = Notebook) -> Iterator[Notebook]:
    """A ``kind`` of notebook in ``root`` with its kernel started and the magic loaded."""
    env = {**os.environ, "KERNEL_BRIDGE_HOME": str(root / "home")}
    env.pop("KERNEL_BRIDGE_MODEL", None)
    nb = kind(root)
    with nb.client.setup_kernel(env=env, cwd=str(root)):
        assert not nb.run("%load_ext kernel_bridge").outputs
        yield nb


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    with magic_notebook(tmp_path_factory.mktemp("notebook")) as nb:
        nb.run("data = [1, 2, 3]")
        yield nb


@pytest.fixture
def trace_file(tmp_path) -> Path:
    return tmp_path / "traces.jsonl"


def last_trace(path: Path) -> Trace:
    traces = load_traces(path)
    assert traces, f"no trace in {path}"
    return traces[-1]


def summary(cell) -> list[str]:
    """Each output as one short label: ``stdout:<text>``, ``code``, ``step:ok``, ``trace``, ..."""
    labels = []
    outputs = cell["outputs"] if isinstance(cell, dict) else cell.outputs
    for out in outputs:
        if out.output_type == "clear_output":
            labels.append("clear")
        elif out.output_type == "stream":
            labels.append(f"{out.name}:{out.text}")
        elif out.output_type == "error":
            labels.append(f"error:{out.evalue}")
        else:
            meta = out.get("metadata", {}).get("kernel_bridge", {})
            if meta.get("kind") == "step":
                labels.append(f"step:{meta['status']}")
            elif meta:
                labels.append(meta["kind"])
            elif TRACE_MIME in out.data:
                labels.append("live" if out.data[TRACE_MIME].get("live") else "trace")
            elif 'class="kb-run"' in out.data.get("text/html", ""):
                continue  # the run as HTML, for viewers without the extension: just before "trace"
            else:
                labels.append(f"display:{sorted(out.data)}")
    return labels


def printed(cell) -> str:
    """What a plain cell printed (for checking the notebook's state)."""
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def error_line(cell) -> str:
    """The cell's one line on stderr, and nothing else in it. (A line may come as two stream
    messages when the kernel flushes between its text and its newline, so they are joined.)"""
    assert {(o.output_type, o.get("name")) for o in cell.outputs} == {("stream", "stderr")}
    text = printed(cell)
    assert text.endswith("\n") and text.count("\n") == 1, text
    return text


# -- what the cell shows ---------------------------------------------------------------------


def test_outputs_stream_in_order_then_one_view_of_the_run_remains(notebook, trace_file):
    cell = notebook.reason(f"--model {script('magic_rich.txt')} --trace {trace_file}", "Rows?")
    assert notebook.streamed() == [
        "stdout:First the squares, then a small table.\n",
        "code",
        "stdout:squares: [1, 4, 9]\n",
        "display:['text/html', 'text/plain']",
        "display:['text/plain']",  # the block's last value
        "step:ok",
        "stdout:So there are three rows.\n",
        "clear",
        "trace",  # after the run as HTML, which summary() leaves out
    ]
    code, html, value = notebook.live[1], notebook.live[3], notebook.live[4]
    assert code.data["text/markdown"].startswith("```python\nprint(")
    assert html.data["text/html"] == "<b>a bold table</b>"
    assert value.data["text/plain"] == "{'rows': 3}"
    # The saved cell holds the run once: thinking, code, real outputs and answer, as HTML too.
    view, trace_output = cell.outputs
    assert TRACE_MIME in trace_output.data
    page = view.data["text/html"]
    for shown in ("First the squares", "print(", "squares: [1, 4, 9]", "<b>a bold table</b>"):
        assert shown in page, shown
    assert "There are **3** rows." in page
    assert trace_output.data["text/plain"].startswith("kernel-bridge · answer")
    # The model read the same outputs as text; the trace keeps them as notebook outputs.
    step = last_trace(trace_file).steps[0]
    assert step.output_text == (
        "squares: [1, 4, 9]\n<IPython.core.display.HTML object>\n{'rows': 3}"
    )
    assert [o["output_type"] for o in step.outputs] == ["stream", "display_data", "execute_result"]


def test_the_saved_notebook_shows_the_run_once_without_the_extension(notebook, trace_file):
    from nbconvert import HTMLExporter

    cell = notebook.reason(f"--model {script('magic_rich.txt')} --trace {trace_file}", "Rows?")
    saved = nbformat.reads(nbformat.writes(new_notebook(cells=[cell])), as_version=4)
    page, _ = HTMLExporter().from_notebook_node(saved)
    # Thinking, code, the block's real outputs (text and HTML) and the answer, each once.
    for shown in (
        "First the squares, then a small table.",
        "So there are three rows.",
        "squares: [1, 4, 9]",
        "<b>a bold table</b>",
        "There are **3** rows.",
    ):
        assert page.count(shown) == 1, shown
    assert "print(" in page
    # One copy: the cell is the trace plus its view, not a stream and a trace besides.
    size = len(json.dumps(cell.outputs))
    assert size < 2 * len(last_trace(trace_file).to_json()), size


@pytest.mark.parametrize("isolated", ["", "--isolated"])
def test_with_the_extension_attached_the_running_cell_holds_one_live_view(
    notebook, trace_file, isolated
):
    """The extension attaches with the call it makes when it connects to a kernel; the running
    cell then streams no copy of its own: one live bundle, which the extension draws from the
    comm, until the finished run's one view replaces it."""
    attach = "__import__('kernel_bridge.lab').lab.apply_settings({'live_view': %s})"
    notebook.run(attach % True)
    try:
        cell = notebook.reason(
            f"{isolated} --model {script('magic_rich.txt')} --trace {trace_file}", "Rows?"
        )
        streamed, live, events = notebook.streamed(), notebook.live[0], notebook.comm_log[1:-1]
    finally:
        notebook.run(attach % False)
    trace = last_trace(trace_file)
    assert streamed == ["live", "clear", "trace"]
    assert live.data[TRACE_MIME] == {"id": trace.id, "live": True}
    # The comm carried the whole run: thinking, the code, the block's outputs, its end.
    think = "".join(e["text"] for e in events if e["type"] == "text" and e["section"] == "think")
    assert think.strip().startswith("First the squares") and "three rows" in think
    # (The sidecar has no `data`: there the block's one output is its NameError.)
    outputs = [e["output"] for e in events if e["type"] == "output"]
    assert outputs and outputs == trace.steps[0].outputs
    assert events[-1]["type"] == "finished" and events[-1]["finish_reason"] == "answer"
    # The finished cell is what it is without the extension.
    view, bundle = cell.outputs
    assert unpack_trace(bundle.data[TRACE_MIME]).to_dict() == trace.to_dict()
    assert "First the squares" in view.data["text/html"]


def test_trace_bundle_ends_the_cell_and_matches_the_saved_trace(notebook, trace_file):
    cell = notebook.reason(f"--model {script('magic_shared.txt')} --trace {trace_file}", "Total?")
    bundle = cell.outputs[-1]
    saved = last_trace(trace_file)
    assert bundle.data[TRACE_MIME]["id"] == saved.id
    assert bundle.data[TRACE_MIME]["encoding"] == "gzip+base64"
    assert unpack_trace(bundle.data[TRACE_MIME]).to_dict() == saved.to_dict()
    assert saved.finish_reason == "answer"
    assert bundle.data["text/plain"].endswith(f"trace {saved.id} in {trace_file}")
    # Saved as a notebook, the cell keeps only plain outputs a reader without the extension sees.
    nbformat.validate(notebook.nb)


def test_traces_go_to_the_default_store_without_trace_option(notebook):
    cell = notebook.reason(f"--model {script('magic_shared.txt')}", "Total?")
    store = notebook.root / "home" / "traces.jsonl"
    assert last_trace(store).id == cell.outputs[-1].data[TRACE_MIME]["id"]


def test_a_trace_store_that_fails_mid_run_goes_to_a_fallback_file_the_cell_names(
    notebook, tmp_path
):
    # The model's own code removes the trace directory, as a full disk would fail the writes.
    store = tmp_path / "store"
    model = tmp_path / "breaks_the_store.txt"
    model.write_text(
        "<think>\n```python\nimport pathlib, shutil\n"
        f"shutil.rmtree({str(store)!r})\npathlib.Path({str(store)!r}).write_text('in the way')\n"
        "print('store gone')\n```\nStill going.\n</think>\n<answer>done</answer>\n"
    )
    store.mkdir()
    cell = notebook.reason(f"--model scripted:{model} --trace {store / 'run.jsonl'}", "q")
    assert summary(cell)[:-1] == ["trace"]  # the run's one view, then one error line
    error = cell.outputs[-1]
    prefix = f"cannot write the trace to {store / 'run.jsonl'}: "
    assert error.evalue.startswith(prefix), error.evalue
    fallback = Path(error.evalue.rsplit("; saved it to ", 1)[1].removesuffix(" instead"))
    try:
        (trace,) = load_traces(fallback)
        assert trace.finish_reason == "answer" and trace.answer == "done"
        assert trace.steps[0].output_text == "store gone"
        bundle = cell.outputs[-2]
        assert bundle.data[TRACE_MIME]["id"] == trace.id
        assert bundle.data["text/plain"].endswith(f"trace {trace.id} in {fallback}")
        assert bundle.metadata[TRACE_MIME]["trace_path"] == str(fallback)
        (finished,) = [e for e in notebook.comm_log if e.get("type") == "finished"]
        assert finished["trace_path"] == str(fallback)  # the sidebar is told the same
    finally:
        fallback.unlink()


def test_show_answer_hides_thinking_code_and_outputs(notebook, trace_file):
    cell = notebook.reason(
        f"--show answer --model {script('magic_rich.txt')} --trace {trace_file}", "Rows?"
    )
    assert summary(cell) == ["trace"]
    assert "code" not in notebook.streamed()
    assert last_trace(trace_file).steps[0].output_text.startswith("squares: [1, 4, 9]")


# -- the namespace ---------------------------------------------------------------------------


def test_namespace_is_shared_with_the_notebook(notebook, trace_file):
    notebook.run("data = [1, 2, 3]")
    notebook.reason(f"--model {script('magic_shared.txt')} --trace {trace_file}", "Sum?")
    assert "stdout:total: 6\n" in notebook.streamed()  # the model's code used the user's `data`
    assert printed(notebook.run("print(total)")) == "6\n"  # and left `total` for the user


def test_isolated_runs_in_a_sidecar_that_persists_across_cells(notebook, trace_file):
    notebook.reason(
        f"--isolated --model {script('magic_isolated_set.txt')} --trace {trace_file}", "Set."
    )
    assert "stdout:set\n" in notebook.streamed()
    notebook.reason(
        f"--isolated --model {script('magic_isolated_get.txt')} --trace {trace_file}", "Get."
    )
    assert notebook.live[2].data["text/plain"] == "42"  # the sidecar kept secret_iso
    assert last_trace(trace_file).steps[0].output_text == "42"
    check = notebook.run("print('secret_iso' in globals())")
    assert printed(check) == "False\n"  # ... and the notebook never saw it
    status = printed(notebook.run("%reason_kernel status"))
    assert status.startswith("sidecar kernel: running, pid ")


def test_errors_in_the_models_code_are_shown_and_reach_the_model(notebook, trace_file):
    cell = notebook.reason(f"--model {script('magic_error.txt')} --trace {trace_file}", "Divide.")
    labels = notebook.streamed()
    assert labels.count("step:error") == 2 and summary(cell) == ["trace"]
    tracebacks = [o.text for o in notebook.live if o.output_type == "stream" and o.name == "stderr"]
    assert "ZeroDivisionError" in tracebacks[0]
    first, second = last_trace(trace_file).steps
    assert first.output_text.splitlines()[-1] == "ZeroDivisionError: division by zero"
    assert "StdinDisabledError: input() is not available" in second.output_text
    # Only the model's own frames: none of kernel-bridge's, in the trace or in the cell.
    for text in [first.output_text, second.output_text, *tracebacks]:
        assert "kernel_bridge" not in text and "_run_block" not in text, text
    restored = printed(notebook.run("import builtins\nprint(builtins.input.__name__)"))
    assert restored and "_no_input" not in restored  # the user's input() works again


def test_asyncio_reports_about_other_tasks_reach_neither_the_model_nor_the_cell(
    notebook, trace_file
):
    cell = notebook.reason(
        f"--model {script('magic_asyncio_noise.txt')} --trace {trace_file}", "Collect."
    )
    (step,) = last_trace(trace_file).steps
    assert step.status == "ok" and step.output_text.endswith("done")
    assert "Task was destroyed" not in step.output_text
    assert not any("Task was destroyed" in o.get("text", "") for o in cell.outputs)


# -- stopping ----------------------------------------------------------------------------------


def test_stop_button_interrupts_the_block_and_saves_the_trace(notebook, trace_file):
    notebook.run("keep_me = 'still here'")
    timer = notebook.interrupt_after(1.0)
    t0 = time.monotonic()
    cell = notebook.reason(f"--model {script('magic_sleep.txt')} --trace {trace_file}", "Sleep.")
    elapsed = time.monotonic() - t0
    timer.join()
    assert elapsed < 15, f"the run took {elapsed:.1f} s to stop"  # the block sleeps 30 s
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].traceback == [f"kernel-bridge: {errors[0].evalue}"]
    assert errors[0].evalue.startswith("interrupted; trace ")
    trace = last_trace(trace_file)
    assert trace.finish_reason == "interrupted"
    assert trace.id in errors[0].evalue
    # the stopped block is in the trace, with what it printed; the cell and the comm end it too
    assert "[interrupted: the run was stopped while this block ran]" in trace.steps[-1].output_text
    labels = [x for x in notebook.streamed() if not x.startswith(("stdout:", "stderr:"))]
    assert labels[-4:-1] == ["step:error", "clear", "trace"] and trace.answer is None, labels
    assert summary(cell)[0] == "trace"  # the one view, then the error line
    finished = [e for e in notebook.comm_log if e.get("type") == "step_finished"]
    assert [(e["index"], e["status"]) for e in finished] == [(0, "error")]
    # The kernel is fine and the notebook's variables are intact.
    assert printed(notebook.run("print(keep_me, 1 + 1)")) == "still here 2\n"


def test_stop_button_interrupts_generation(notebook, trace_file):
    notebook.run(
        "from kernel_bridge.samplers.scripted import ScriptedSampler\n"
        "magics = get_ipython().magics_manager.registry['ReasonMagics']\n"
        "magics.samplers['slow'] = ScriptedSampler(\n"
        "    '<think>\\n' + 'thinking slowly. ' * 1000, chunk_size=4, delay=0.01)"
    )
    timer = notebook.interrupt_after(1.0)
    t0 = time.monotonic()
    cell = notebook.reason(f"--model slow --trace {trace_file}", "Think.")
    elapsed = time.monotonic() - t0
    timer.join()
    assert elapsed < 20, f"generation took {elapsed:.1f} s to stop"  # unstopped: 40 s
    assert notebook.streamed()[0].startswith("stdout:thinking slowly.")
    labels = summary(cell)
    assert labels[-1].startswith("error:interrupted; trace ")
    trace = last_trace(trace_file)
    assert trace.finish_reason == "interrupted"
    assert 0 < len(trace.text) < len("thinking slowly. ") * 1000
    assert trace.answer is None  # cut-off thinking is no answer


def test_stop_button_interrupts_a_sidecar_block(notebook, trace_file):
    notebook.run("%reason_kernel restart")  # a warm sidecar, as after earlier runs
    timer = notebook.interrupt_after(1.0)
    t0 = time.monotonic()
    cell = notebook.reason(
        f"--isolated --model {script('magic_sleep.txt')} --trace {trace_file}", "Sleep."
    )
    timer.join()
    assert time.monotonic() - t0 < 15  # the block sleeps 30 s
    assert summary(cell)[-1].startswith("error:interrupted; trace ")
    assert last_trace(trace_file).finish_reason == "interrupted"


def test_a_turn_that_ends_without_an_answer_says_so(notebook, trace_file):
    cell = notebook.reason(
        f"--timeout 1 --model {script('magic_no_answer.txt')} --trace {trace_file}", "Sleep."
    )
    assert [x for x in notebook.streamed() if not x.startswith(("stdout:", "stderr:"))] == [
        "code",
        "step:timeout",
        "clear",
        "trace",
    ]
    trace = last_trace(trace_file)
    assert (trace.finish_reason, trace.answer) == ("no_answer", None)
    page, view = cell.outputs
    assert view.data["text/plain"].startswith("no answer\n\nkernel-bridge · no_answer · 1 block")
    assert "no_answer · 1 block" in page.data["text/html"]


def test_a_block_that_ignores_the_interrupt_is_stopped_in_shared_mode(notebook, trace_file):
    notebook.reason(
        f"--timeout 1 --model {script('magic_ignores_sigint.txt')} --trace {trace_file}", "Spin."
    )
    trace = last_trace(trace_file)
    assert [step.status for step in trace.steps] == ["timeout", "ok"]
    assert "BlockTimeout: the block ignored the interrupt" in trace.steps[0].output_text
    assert trace.steps[1].output_text == "still here True"
    # The block's SIG_IGN did not stay: the notebook's own Stop still works afterwards.
    assert printed(notebook.run("import signal; print(signal.getsignal(signal.SIGINT))")) == (
        "<built-in function default_int_handler>\n"
    )


def test_timeout_in_shared_mode_stops_loops_and_sleeps_and_keeps_variables(notebook, trace_file):
    notebook.run("data = [1, 2, 3]")
    t0 = time.monotonic()
    notebook.reason(
        f"--timeout 1 --model {script('magic_timeout.txt')} --trace {trace_file}", "Spin."
    )
    assert time.monotonic() - t0 < 25  # the loop never ends; the sleep takes 30 s
    assert [x for x in notebook.streamed() if x.startswith("step:")] == [
        "step:timeout",
        "step:timeout",
        "step:ok",
    ]
    trace = last_trace(trace_file)
    assert trace.finish_reason == "answer"
    assert trace.steps[0].output_text.endswith("[timed out after 1 s and interrupted]")
    assert "KeyboardInterrupt" in trace.steps[1].output_text  # where the sleep was stopped
    assert trace.steps[2].output_text == "still here True"
    assert printed(notebook.run("print(data, spins > 0)")) == "[1, 2, 3] True\n"


# -- errors a user can make ------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ("--bogus", "UsageError: unrecognized arguments: --bogus"),
        ("--max-steps 0", "UsageError: argument --max-steps: expected a whole number, at least 1"),
        (
            f"--timeout nan --model {script('magic_shared.txt')}",
            "UsageError: argument --timeout: expected a finite number of seconds above 0, "
            "got 'nan'",
        ),
        (
            f"--time-limit inf --model {script('magic_shared.txt')}",
            "UsageError: argument --time-limit: expected a finite number of seconds above 0",
        ),
        (f"--max-tokens -1 --model {script('magic_shared.txt')}", "UsageError: argument --max-tok"),
        ("--show sideways", "UsageError: argument --show: invalid choice: 'sideways'"),
        ("--model nope:x", "UsageError: no sampler for model 'nope:x'"),
        ("--model=", "UsageError: --model is empty: give a model string"),  # was: local
        ("--model scripted:/no/such/script.txt", "UsageError: cannot read the script"),
    ],
)
def test_a_bad_option_gives_exactly_one_error_line(notebook, options, message):
    cell = notebook.reason(options, "Anything.")
    assert error_line(cell).startswith(message)


def test_interpolation_fills_names_attributes_and_items(notebook, trace_file):
    notebook.run("data = [1, 2, 3]\nlabel = 'my list'\nconfig = {'n': 5}")
    notebook.reason(
        f"--model {script('magic_shared.txt')} --trace {trace_file}",
        "Sum {label} {data} with n={config[n]} and {label.upper}? Keep {{braces}}.",
    )
    question = last_trace(trace_file).question
    assert question is not None
    assert question.startswith("Sum my list [1, 2, 3] with n=5 and <built-in method upper")
    assert question.endswith("Keep {braces}.")


def test_a_missing_variable_is_one_error_line(notebook):
    cell = notebook.reason(f"--model {script('magic_shared.txt')}", "Sum {no_such_name}.")
    assert error_line(cell) == (
        "UsageError: the question uses {no_such_name}, but the notebook has no variable "
        "'no_such_name'; write {{ and }} for literal braces (or %reason_config "
        "interpolate=False)\n"
    )


# -- configuration, continuation, cells, comm ------------------------------------------------


def test_reason_config_sets_defaults_for_later_cells(notebook, trace_file):
    notebook.run(
        f"%reason_config model={script('magic_shared.txt')} show=answer trace={trace_file}"
    )
    try:
        cell = notebook.reason("", "Total?")
        assert summary(cell) == ["trace"]
        assert last_trace(trace_file).model == script("magic_shared.txt")
        bad = notebook.run("%reason_config show=sideways")
        assert error_line(bad).startswith("UsageError: show=")
        for setting in ("timeout=nan", "time_limit=inf", "timeout=0", "max_steps=0"):
            bad = notebook.run(f"%reason_config {setting}")
            assert error_line(bad).startswith(f"UsageError: {setting}: "), setting
        listing = printed(notebook.run("%reason_config"))
        assert "show = 'answer'" in listing
    finally:
        notebook.run("%reason_config model=None show=all trace=''")


def test_traitlets_config_reaches_the_magic(notebook, trace_file):
    notebook.run("get_ipython().config.ReasonMagics.max_steps = 1\n%reload_ext kernel_bridge")
    try:
        notebook.reason(f"--model {script('magic_timeout.txt')} --trace {trace_file}", "Spin.")
        trace = last_trace(trace_file)
        assert trace.finish_reason == "max_steps" and len(trace.steps) == 1
    finally:
        notebook.run(
            "del get_ipython().config.ReasonMagics['max_steps']\n%reload_ext kernel_bridge"
        )


def test_continue_prepends_the_earlier_exchanges(notebook, trace_file):
    notebook.run("data = [1, 2, 3]")
    notebook.reason(f"--model {script('magic_shared.txt')} --trace {trace_file}", "Total, please.")
    first = last_trace(trace_file)
    notebook.reason(
        f"--continue --model {script('magic_followup.txt')} --trace {trace_file}", "Double it."
    )
    second = last_trace(trace_file)
    turns = [(m["role"], m["content"]) for m in second.messages if m["role"] != "system"]
    assert ("user", "Total, please.") in turns
    assert ("assistant", first.text) in turns
    assert turns[-1] == ("user", "Double it.")
    assert second.steps[0].output_text == "12"
    alone = notebook.reason(
        f"--model {script('magic_followup.txt')} --trace {trace_file}", "Again."
    )
    assert alone.outputs  # without --continue, only the examples and the question
    assert ("user", "Total, please.") not in [
        (m["role"], m["content"]) for m in last_trace(trace_file).messages
    ]


def test_cells_become_a_notebook_and_go_over_the_comm(notebook, trace_file):
    cell = notebook.reason(
        f"--cells --model {script('magic_shared.txt')} --trace {trace_file}", "Total?"
    )
    trace = last_trace(trace_file)
    written = notebook.root / f"reason-{trace.id[:8]}.ipynb"
    exported = nbformat.read(written, as_version=4)
    assert [c.cell_type for c in exported.cells] == [
        "markdown",
        "markdown",
        "code",
        "markdown",
        "markdown",
    ]
    assert exported.cells[2].outputs[0]["text"] == "total: 6\n"
    assert "cells" in summary(cell)
    sent = next(e for e in notebook.comm_log if e.get("type") == "cells")
    assert [c["cell_type"] for c in sent["cells"]] == [c.cell_type for c in exported.cells[1:]]


def test_comm_carries_compact_batched_events(notebook, trace_file):
    notebook.reason(f"--model {script('magic_rich.txt')} --trace {trace_file}", "Rows?")
    log = notebook.comm_log
    trace = last_trace(trace_file)
    assert log[0]["open"]["trace_id"] == trace.id and log[0]["open"]["mode"] == "shared"
    assert "closed" in log[-1]
    types = [e["type"] for e in log[1:-1]]
    assert types[-1] == "finished" and log[-2]["finish_reason"] == "answer"
    assert types.index("code") < types.index("step_started") < types.index("output")
    assert types.index("output") < types.index("step_finished")
    think = "".join(e["text"] for e in log[1:-1] if e["type"] == "text" and e["section"] == "think")
    assert think.strip().startswith("First the squares") and "three rows" in think
    # Batched: far fewer messages than the 16-character deltas the model streamed.
    assert len([e for e in log[1:-1] if e["type"] == "text"]) < 10


def test_unload_shuts_the_sidecar_down(notebook):
    notebook.run("%reason_kernel restart")
    notebook.run("%unload_ext kernel_bridge")
    gone = notebook.run("%%reason\nx")
    assert "Cell magic `%%reason` not found" in json.dumps([dict(o) for o in gone.outputs])
    notebook.run("%load_ext kernel_bridge")
    status = printed(notebook.run("%reason_kernel status"))
    assert status.startswith("sidecar kernel: not started")


def test_the_sidecar_is_shut_down_with_the_notebook_kernel(tmp_path):
    nb = Notebook(tmp_path)
    env = {**os.environ, "KERNEL_BRIDGE_HOME": str(tmp_path / "home")}
    with nb.client.setup_kernel(env=env, cwd=str(tmp_path)):
        nb.run("%load_ext kernel_bridge\n%reason_kernel restart")
        status = printed(nb.run("%reason_kernel status"))
        pid = int(status.split("pid ")[1].split(",")[0])
        assert psutil.pid_exists(pid)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the sidecar kernel outlived its notebook kernel"
        time.sleep(0.1)


# -- tools -------------------------------------------------------------------------------------


def test_finance_tools_in_the_shared_namespace_guard_only_the_models_code(notebook, trace_file):
    notebook.run("%env KERNEL_BRIDGE_OFFLINE=1")
    cell = notebook.reason(
        f"--tools finance --cutoff 2008-06-30 --model {script('magic_tools.txt')} "
        f"--trace {trace_file}",
        "AAPL in 2008?",
    )
    assert summary(cell) == ["trace"]
    tools_step, import_step = last_trace(trace_file).steps
    assert tools_step.output_text.splitlines()[-1] == "6"
    assert "from sample data: vega-datasets" in tools_step.output_text
    assert import_step.output_text == (
        "ImportRefusedError: import of 'yfinance' is blocked in this session: the data cutoff "
        "is 2008-06-30; use the finance tools, which respect it"
    )
    # The user's own cells are not guarded, and the model's objects are theirs to inspect.
    user = notebook.run("import yfinance\nprint(len(prices), stock_price.cutoff_date)")
    assert printed(user) == "6 2008-06-30\n"


def test_finance_tools_in_a_sidecar_keep_their_cutoff(notebook, trace_file):
    notebook.run("%env KERNEL_BRIDGE_OFFLINE=1")
    notebook.reason(
        f"--isolated --tools finance --cutoff 2008-03-31 --model {script('magic_tools.txt')} "
        f"--trace {trace_file}",
        "AAPL in 2008?",
    )
    tools_step, import_step = last_trace(trace_file).steps
    assert tools_step.output_text.splitlines()[-1] == "3"  # January to March, in the sidecar
    assert import_step.output_text.startswith("ImportRefusedError: import of 'yfinance'")


OWN_TOOLS = '''
from kernel_bridge.tools import Tool, tool

class Scale(Tool):
    name = "scale"
    description = "x times the factor this tool was built with."
    inputs = {"x": {"type": "number", "description": "The number."}}
    output_type = "number"

    def __init__(self, factor):
        self.factor = factor

    def forward(self, x):
        return x * self.factor

@tool
def shout(text: str) -> str:
    """The text in capitals."""
    return text.upper()

my_tools = [Scale(3), shout]
'''


@pytest.mark.parametrize("isolated", ["", "--isolated"])
def test_tools_can_be_notebook_variables_next_to_toolsets(notebook, trace_file, isolated):
    notebook.run(OWN_TOOLS)
    notebook.reason(
        f"{isolated} --tools documents,my_tools --model {script('magic_own_tools.txt')} "
        f"--trace {trace_file}",
        "Use them.",
    )
    trace = last_trace(trace_file)
    assert trace.steps[0].output_text == "42 HI 3"  # the constructor argument arrived
    assert "def scale(x: float) -> float:" in trace.messages[0]["content"]
    assert "def new_document(" in trace.messages[0]["content"]


@pytest.mark.parametrize("isolated", ["", "--isolated"])
def test_tools_can_be_a_file_colon_attribute(notebook, trace_file, tmp_path, isolated):
    tools_file = tmp_path / "team_tools.py"
    tools_file.write_text(OWN_TOOLS)
    notebook.reason(
        f"{isolated} --tools {tools_file}:my_tools --model {script('magic_own_tools.txt')} "
        f"--trace {trace_file}",
        "Use them.",
    )
    trace = last_trace(trace_file)
    assert trace.steps[0].output_text == "42 HI 3"
    assert "def scale(x: float) -> float:" in trace.messages[0]["content"]


@pytest.mark.parametrize(
    "tools, message",
    [
        ("finance,no_such_tools", "UsageError: --tools no_such_tools: no toolset and no notebook "),
        ("data", "UsageError: --tools data: not a tool: 1;"),
    ],
)
def test_a_tools_name_that_is_neither_a_toolset_nor_tools_is_one_error_line(
    notebook, tools, message
):
    notebook.run("data = [1, 2, 3]")
    cell = notebook.reason(f"--tools {tools} --model {script('magic_own_tools.txt')}", "Go.")
    assert error_line(cell).startswith(message)


# -- --sandbox -------------------------------------------------------------------------------------


def test_sandbox_needs_isolated(notebook, trace_file):
    cell = notebook.reason(f"--sandbox --model {script('sandbox_hostname.txt')}", "Where?")
    assert cell.outputs[0].text.startswith("UsageError: --sandbox needs --isolated")


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_isolated_sandbox_runs_the_sidecar_in_the_sandbox(notebook, trace_file):
    notebook.run("%reason_kernel shutdown")
    notebook.reason(
        f"--isolated --sandbox --model {script('sandbox_hostname.txt')} --trace {trace_file}",
        "Where?",
    )
    assert last_trace(trace_file).steps[0].output_text == "sandbox False"
    # The running sidecar is sandboxed: asking for an unsandboxed one says how to switch.
    cell = notebook.reason(
        f"--isolated --no-sandbox --model {script('sandbox_hostname.txt')}", "Where?"
    )
    (message,) = [o.text for o in cell.outputs]
    assert message.startswith("UsageError: the sidecar kernel runs sandboxed")
    assert "%reason_kernel shutdown" in message
    notebook.run("%reason_kernel shutdown")
