"""The kernel layer: state, outputs, faults and bad input, against real IPython kernels."""

from __future__ import annotations

import asyncio
import os
import time
import tracemalloc

import nbformat
import psutil
import pytest
from traitlets import TraitError

from kernel_bridge import BlockingKernel, Kernel, KernelError
from kernel_bridge.execution.result import BACKGROUND_NOTE
from kernel_bridge.kernel import RESTARTED_NOTE, scrub_environment
from kernel_bridge.outputs import HeadTail


async def test_state_survives_between_blocks(kernel):
    await kernel.execute("numbers = [1, 2, 3]")
    await kernel.execute("def total(xs):\n    return sum(xs)")
    result = await kernel.execute("total(numbers) * 10")
    assert result.status == "ok"
    assert result.output_text == "60"
    assert result.execution_count == 3


async def test_outputs_are_notebook_outputs_in_order(kernel):
    code = (
        "import sys\n"
        "print('one')\n"
        "print('two', file=sys.stderr)\n"
        "from IPython.display import display, HTML\n"
        "display(HTML('<b>bold</b>'))\n"
        "print('three')\n"
        "41 + 1"
    )
    result = await kernel.execute(code)
    assert result.status == "ok"
    kinds = [(o.output_type, o.get("name")) for o in result.outputs]
    assert kinds == [
        ("stream", "stdout"),
        ("stream", "stderr"),
        ("display_data", None),
        ("stream", "stdout"),
        ("execute_result", None),
    ]
    assert result.stdout == "one\nthree\n"
    assert result.stderr == "two\n"
    assert result.output_text.splitlines() == [
        "one",
        "two",
        "<IPython.core.display.HTML object>",
        "three",
        "42",
    ]
    cell = nbformat.v4.new_code_cell(
        code, outputs=result.outputs, execution_count=result.execution_count
    )
    nbformat.validate(nbformat.v4.new_notebook(cells=[cell]))


async def test_outputs_arrive_while_code_still_runs(kernel):
    seen: list[tuple[float, str]] = []
    t0 = time.monotonic()
    result = await kernel.execute(
        "import time, sys\nprint('first'); sys.stdout.flush()\ntime.sleep(1.5)\nprint('second')",
        on_output=lambda out: seen.append((time.monotonic() - t0, out.text)),
    )
    assert result.status == "ok"
    assert seen[0][1] == "first\n"
    assert seen[0][0] < result.duration_s - 1.0, "the first output arrived only at the end"


async def test_error_has_name_value_and_ansi_free_traceback(kernel):
    result = await kernel.execute("def f():\n    return 1 / 0\nf()")
    assert result.status == "error"
    assert result.error_name == "ZeroDivisionError"
    assert result.error_value == "division by zero"
    assert any("return 1 / 0" in line for line in result.traceback)
    assert "\x1b[" not in "".join(result.traceback) + result.output_text
    assert result.output_text.endswith("ZeroDivisionError: division by zero")
    assert result.outputs[-1].output_type == "error"


async def test_timeout_interrupts_and_keeps_kernel_state(kernel):
    await kernel.execute("kept = 'still here'")
    result = await kernel.execute("while True:\n    pass", timeout=1)
    assert result.status == "timeout"
    assert not result.restarted
    assert "timed out after 1 s" in result.output_text
    after = await kernel.execute("kept")
    assert after.output_text == "'still here'"


async def test_loop_ignoring_sigint_gets_kernel_restarted(kernel):
    await kernel.execute("lost = 1")
    kernel.interrupt_grace = 1
    result = await kernel.execute(
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
        timeout=1,
    )
    assert result.status == "timeout"
    assert result.restarted
    assert RESTARTED_NOTE in result.output_text
    after = await kernel.execute("lost")
    assert after.error_name == "NameError"
    assert (await kernel.execute("'usable'")).output_text == "'usable'"


@pytest.mark.parametrize(
    "code",
    ["import os; os._exit(1)", "import ctypes; ctypes.string_at(0)"],
    ids=["os_exit", "segfault"],
)
async def test_kernel_death_is_detected_quickly_and_restarted(kernel, code):
    t0 = time.monotonic()
    result = await kernel.execute(code, timeout=20)
    detected = time.monotonic() - t0
    assert result.status == "died"
    assert result.restarted
    assert RESTARTED_NOTE in result.output_text
    assert detected < 10, f"death took {detected:.1f} s to report"  # generous bound: a hang guard
    assert (await kernel.execute("1 + 1")).output_text == "2"


async def _peak_memory(kernel, lines: int):
    """Run a block printing ``lines`` × 501 bytes; return (result, peak bytes this client held).

    tracemalloc counts what the client allocates (message frames, decoded text, outputs), which
    RSS does not show reliably: the allocator reuses memory freed by earlier tests.
    """
    tracemalloc.start()
    try:
        result = await kernel.execute(
            f"for i in range({lines}):\n    print(f'{{i:08d}}' + 'x' * 492)", timeout=120
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.slow
async def test_flood_of_output_keeps_memory_bounded(kernel):
    result, peak_100mb = await _peak_memory(kernel, 200_000)
    assert result.status == "ok"
    assert "characters omitted" in result.output_text
    assert result.output_text.startswith("00000000x")
    assert "00199999" in result.output_text
    assert len(result.output_text) < kernel.output_cap + 100
    assert len(result.stdout) < kernel.store_cap + 100
    assert len(result.outputs[0].text) < kernel.store_cap + 100
    # Bounded: the client holds a few copies of one iopub message (ipykernel sends a flood in
    # ~20 MB pieces), not what was printed; 300 MB printed stays under 200 MiB held.
    _, peak_300mb = await _peak_memory(kernel, 600_000)
    for printed, peak in ((100, peak_100mb), (300, peak_300mb)):
        assert peak < 200 << 20, f"the client held {peak >> 20} MiB for {printed} MB printed"


async def test_input_fails_immediately(kernel):
    t0 = time.monotonic()
    result = await kernel.execute("name = input('Your name? ')")
    assert time.monotonic() - t0 < 5
    assert result.status == "error"
    assert result.error_name == "StdinNotImplementedError"


async def test_allocating_past_the_memory_limit_raises_memory_error():
    async with Kernel(memory_limit=1 << 30) as k:
        result = await k.execute("block = bytearray(8 << 30)")
        assert result.status == "error"
        assert result.error_name == "MemoryError"
        assert (await k.execute("'alive'")).output_text == "'alive'"


async def test_writing_past_the_file_size_limit_fails_and_keeps_the_kernel(tmp_path):
    async with Kernel(file_size_limit=1 << 20, workspace=str(tmp_path)) as k:
        result = await k.execute("with open('big', 'wb') as f:\n    f.write(bytes(2 << 20))")
        assert result.status == "error"
        assert result.error_name == "OSError" and "File too large" in result.output_text
        assert (await k.execute("'alive'")).output_text == "'alive'"
    assert (tmp_path / "big").stat().st_size == 1 << 20


async def test_secrets_are_not_inherited(monkeypatch):
    for name in ("OPENAI_API_KEY", "GITHUB_TOKEN", "APP_SECRET", "DB_PASSWORD", "ALLOWED_TOKEN"):
        monkeypatch.setenv(name, "s3cr3t")
    monkeypatch.setenv("LC_TIME", "C")  # on the allow-list
    monkeypatch.setenv("HARMLESS_SETTING", "not asked for")
    async with Kernel(allow_env=["ALLOWED_TOKEN"]) as k:
        result = await k.execute(
            "import os\nsorted(n for n in os.environ if n in "
            "{'OPENAI_API_KEY','GITHUB_TOKEN','APP_SECRET','DB_PASSWORD','ALLOWED_TOKEN',"
            "'HARMLESS_SETTING','LC_TIME'})"
        )
    assert result.output_text == "['ALLOWED_TOKEN', 'LC_TIME']"


def test_secret_names_are_recognized():
    env = {
        "ANTHROPIC_API_KEY": "a",
        "HF_TOKEN": "b",
        "MYSQL_PASSWORD": "c",
        "AWS_SECRET_ACCESS_KEY": "d",
        "PATH": "/bin",
        "HOME": "/root",
    }
    assert scrub_environment(env) == {"PATH": "/bin", "HOME": "/root"}


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("", "ValueError"),
        ("   \n\t", "ValueError"),
        (b"print('\xff')", "UnicodeDecodeError"),
        ("print('\udcff')", "UnicodeEncodeError"),
        ("def broken(:\n    pass", "SyntaxError"),
    ],
    ids=["empty", "blank", "bad-bytes", "lone-surrogate", "syntax-error"],
)
async def test_bad_code_gives_an_error_result(kernel, code, name):
    result = await kernel.execute(code)
    assert result.status == "error"
    assert result.error_name == name
    assert name in result.output_text
    assert (await kernel.execute("'fine'")).status == "ok"


async def test_files_created_in_the_workspace_are_listed(kernel):
    result = await kernel.execute(
        "import os\nos.makedirs('out', exist_ok=True)\n"
        "open('out/report.txt', 'w').write('hi')\nopen('data.csv', 'w').write('a,b')"
    )
    assert result.new_files == ["data.csv", os.path.join("out", "report.txt")]
    assert (kernel.workspace_path / "data.csv").read_text() == "a,b"
    again = await kernel.execute("open('data.csv', 'a').write('\\n1,2')")
    assert again.new_files == ["data.csv"]
    assert (await kernel.execute("1")).new_files == []


async def test_kernel_works_in_the_given_workspace(tmp_path):
    async with Kernel(workspace=str(tmp_path)) as k:
        result = await k.execute("import os; os.getcwd()")
    assert result.output_text == repr(str(tmp_path))
    assert tmp_path.exists(), "a workspace the user chose is kept"


async def test_shutdown_removes_processes_and_files():
    k = await Kernel().start()
    pid = k.pid
    result = await k.execute(
        "import subprocess\np = subprocess.Popen(['sleep', '300'], start_new_session=True)\np.pid"
    )
    child = int(result.output_text)
    runtime = k.workspace_path.parent
    assert runtime.exists()
    await k.shutdown()
    for _ in range(50):
        if not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
            break
        await asyncio.sleep(0.1)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert not runtime.exists()


async def test_execute_before_start_is_a_clear_error():
    with pytest.raises(KernelError, match="not started"):
        await Kernel().execute("1")


def test_blocking_kernel_for_synchronous_code():
    with BlockingKernel() as k:
        k.execute("x = 20")
        assert k.execute("x + 1").output_text == "21"


async def test_blocking_kernel_works_while_a_loop_is_running():
    # As inside Jupyter, where the caller's thread already runs an event loop.
    k = BlockingKernel().start()
    try:
        assert k.execute("'inside'").output_text == "'inside'"
    finally:
        k.shutdown()


def test_head_tail_keeps_both_ends_and_counts_what_it_dropped():
    buf = HeadTail(10)
    for ch in "abcdefghijklmnopqrstuvwxyz":
        buf.append(ch)
    assert buf.omitted == 16
    assert str(buf) == "abcde\n[… 16 characters omitted …]\nvwxyz"
    assert len(buf) == 26


@pytest.mark.parametrize(
    "setting",
    [
        {"timeout": float("nan")},
        {"timeout": 0},
        {"startup_timeout": float("inf")},
        {"poll_interval": -0.5},
        {"iopub_grace": float("nan")},
        {"memory_limit": -1},
    ],
)
def test_kernel_settings_must_be_finite_and_in_range(setting):
    # A NaN timeout never expires: the deadline comparison is always false.
    with pytest.raises(TraitError, match="Kernel"):
        Kernel(**setting)


def test_zero_grace_is_allowed():
    kernel = Kernel(interrupt_grace=0, iopub_grace=0)
    assert (kernel.interrupt_grace, kernel.iopub_grace) == (0.0, 0.0)


THREAD = (
    "import threading\n"
    "go, done = threading.Event(), threading.Event()\n"
    "def chatter():\n"
    "    go.wait(20)\n"
    "    print({text})\n"
    "    done.set()\n"
    "threading.Thread(target=chatter, daemon=True).start()\n"
    "print('started')"
)


async def test_an_earlier_blocks_thread_printing_is_background_output(kernel):
    # Its prints used to become the output of whatever block ran next.
    started = await kernel.execute(THREAD.format(text="'from the thread'"))
    assert started.stdout == "started\n"
    result = await kernel.execute("go.set(); done.wait(20); print('mine')")
    assert result.status == "ok"
    assert result.stdout == "mine\n"
    assert [o.get("text") for o in result.outputs] == ["mine\n"]
    assert "from the thread" in result.background_output
    assert BACKGROUND_NOTE in result.output_text
    assert result.output_text.startswith("mine\n")


async def test_output_after_a_block_ended_goes_to_the_next_result_as_background(kernel):
    await kernel.execute(THREAD.format(text="'late ' * 100_000"))  # 600 kB, printed later
    released = await kernel.execute("go.set()")  # the thread prints once this block is over
    assert released.status == "ok"
    result = await kernel.execute("done.wait(20); print('next')")
    assert result.stdout == "next\n"
    background = released.background_output + result.background_output
    assert "late late" in background
    assert "characters omitted" in background  # bounded, and says so
    assert len(result.background_output) < kernel.output_limits.background_cap + 100
    assert len(result.output_text) < kernel.output_cap + 200


async def test_background_output_is_bounded_per_result_not_for_the_kernels_life(kernel):
    await kernel.execute(THREAD.format(text="'x' * 100_000"))
    first = await kernel.execute("go.set(); done.wait(20)")
    assert "characters omitted" in first.background_output
    await kernel.execute(THREAD.format(text="'a second thread'"))
    second = await kernel.execute("go.set(); done.wait(20)")
    assert "a second thread" in second.background_output
