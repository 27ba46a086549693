"""The kernel says busy for as long as a ``%%reason`` cell runs (issue 15, item 5).

A control request answered mid-run (JupyterLab's debugger, the server's reconnect nudge) ends with
``status: idle``; JupyterLab shows the last status it got, so the run must say busy again.
"""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.slow

SCRIPT = "<think>\n```python\nimport time\ntime.sleep(3)\n```\n</think>\n<answer>x</answer>\n"


def statuses_while_running(tmp_path: Path, code: str) -> list[tuple[str, bool]]:
    """(state, whether its parent is the cell) of each status message until the cell's idle,
    with a control request sent one second into the cell."""
    env = {**os.environ, "KERNEL_BRIDGE_HOME": str(tmp_path / "home")}
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
    try:
        kc.execute("%load_ext kernel_bridge", reply=True, timeout=60)
        cell = kc.execute(code)
        time.sleep(1.0)
        kc.control_channel.send(
            kc.session.msg(
                "debug_request",
                {"type": "request", "seq": 1, "command": "debugInfo", "arguments": {}},
            )
        )
        seen: list[tuple[str, bool]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                msg = kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if msg["msg_type"] != "status":
                continue
            ours = msg["parent_header"].get("msg_id") == cell
            state = msg["content"]["execution_state"]
            if ours or seen:  # from the cell's busy on
                seen.append((state, ours))
            if ours and state == "idle":
                return seen
        raise AssertionError(f"the cell did not end: {seen}")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_reason_cell_stays_busy_through_a_control_request(tmp_path):
    script = tmp_path / "sleep.txt"
    script.write_text(SCRIPT)
    seen = statuses_while_running(
        tmp_path, f"%%reason --model scripted:{script} --trace {tmp_path / 't.jsonl'}\nSleep."
    )
    # The debugger's idle comes, then the cell says busy again; idle only when the cell ends.
    assert ("idle", False) in seen
    assert seen[seen.index(("idle", False)) + 1] == ("busy", True)
    assert seen[-1] == ("idle", True) and seen.count(("idle", True)) == 1
