"""A CLI run ended by SIGKILL: nothing runs in it, so the next commands pick up what it left."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from kernel_bridge.trace import load_traces

SLOW = (
    "<think>\n```python\nprint('first')\n```\n```python\nimport subprocess, time\n"
    "subprocess.Popen(['sleep', '300'], start_new_session=True)\ntime.sleep(60)\n```\n"
)  # the second block leaves a process in a session of its own, then sleeps
QUICK = "<think>\n```python\nprint('again')\n```\n</think>\n<answer>done</answer>\n"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kernel_bridge.cli", *args],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def running(process: psutil.Process) -> bool:
    """True while ``process`` (not another that took its pid) runs; a zombie has ended."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_after_sigkill_the_run_is_recovered_and_its_kernel_directory_removed(tmp_path, request):
    (tmp_path / "slow.txt").write_text(SLOW + "</think>\n<answer>never</answer>\n")
    (tmp_path / "quick.txt").write_text(QUICK)
    temp = Path(tempfile.mkdtemp(prefix="kb-", dir="/tmp"))  # short: room for kernel sockets
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    env = {**os.environ, "KERNEL_BRIDGE_HOME": str(tmp_path), "NO_COLOR": "1",
           "TMPDIR": str(temp)}  # fmt: skip
    trace_file = tmp_path / "run.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kernel_bridge.cli", "reason", "q",
         "--model", f"scripted:{tmp_path / 'slow.txt'}", "--trace", str(trace_file)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    checkpoints = tmp_path / "run.jsonl.inprogress"
    deadline = time.monotonic() + 90
    while not any(checkpoints.glob("*.json")):  # the first block ran; the second is sleeping
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)
    left = list(temp.glob(f"kernel-bridge-{proc.pid}-*"))
    assert left  # its kernel's connection file and workspace
    (kernel,) = psutil.Process(proc.pid).children()
    deadline = time.monotonic() + 30
    while not (daemons := [p for p in kernel.children() if p.name() == "sleep"]):
        assert time.monotonic() < deadline, "the second block started no sleep process"
        time.sleep(0.1)
    (daemon,) = daemons
    request.addfinalizer(lambda: running(daemon) and daemon.kill())
    in_cgroup = "/kernel-bridge/" in Path(f"/proc/{kernel.pid}/cgroup").read_text()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not trace_file.exists()  # SIGKILL: no line was written

    # The kernel ends by itself: ipykernel polls for its parent (JPY_PARENT_PID) every second.
    deadline = time.monotonic() + 30
    while running(kernel):
        assert time.monotonic() < deadline, f"the killed CLI's kernel {kernel.pid} still runs"
        time.sleep(0.1)
    assert running(daemon)  # its own session: neither the SIGKILL nor the kernel's end reach it

    # The next command shows the run, as interrupted, with the block that ran.
    shown = cli("traces", "show", str(trace_file), env=env)
    assert shown.returncode == 0, shown.stderr
    (trace,) = load_traces(trace_file)
    assert trace.finish_reason == "interrupted"
    assert trace.steps[0].output_text == "first"
    assert "interrupted" in shown.stdout

    # The next run's kernel start removes what the killed process left in the temporary directory.
    again = cli("reason", "q", "--model", f"scripted:{tmp_path / 'quick.txt'}",
                "--trace", str(tmp_path / "other.jsonl"), env=env)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert not any(path.exists() for path in left)
    if in_cgroup:  # and its kernel's pids cgroup kills what the killed process left in its own
        deadline = time.monotonic() + 30
        while running(daemon):
            assert time.monotonic() < deadline, f"{daemon.pid} outlived the killed CLI's cgroup"
            time.sleep(0.1)
