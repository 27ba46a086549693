"""Remote kernels: the same Kernel API against a real Jupyter Kernel Gateway on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from kernel_bridge import Kernel, KernelError

TOKEN = "test-token-123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gateway_url():
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kernel_gateway",
            "--KernelGatewayApp.ip=127.0.0.1",
            f"--KernelGatewayApp.port={port}",
            f"--KernelGatewayApp.auth_token={TOKEN}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("the kernel gateway exited at start")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_remote_kernel_keeps_state_and_reports_errors(gateway_url):
    async with Kernel(url=gateway_url, token=TOKEN) as k:
        await k.execute("base = 40")
        assert (await k.execute("base + 2")).output_text == "42"
        result = await k.execute("print('before'); 1 / 0")
        assert result.status == "error"
        assert result.error_name == "ZeroDivisionError"
        assert result.stdout == "before\n"
        assert [o.output_type for o in result.outputs] == ["stream", "error"]


async def test_remote_timeout_interrupts_and_keeps_state(gateway_url):
    async with Kernel(url=gateway_url, token=TOKEN) as k:
        await k.execute("kept = 7")
        result = await k.execute("while True:\n    pass", timeout=1)
        assert result.status == "timeout"
        assert not result.restarted
        assert (await k.execute("kept")).output_text == "7"


async def test_remote_kernel_death_is_reported_and_recovered(gateway_url):
    async with Kernel(url=gateway_url, token=TOKEN) as k:
        await k.execute("lost = 1")
        result = await k.execute("import os; os._exit(1)", timeout=20)
        assert result.status == "died"
        assert result.restarted
        assert (await k.execute("lost")).error_name == "NameError"


async def test_wrong_token_is_a_clear_error(gateway_url):
    with pytest.raises(KernelError, match=r"HTTP 401.*token"):
        await Kernel(url=gateway_url, token="wrong").start()


async def test_unreachable_server_is_a_clear_error():
    with pytest.raises(KernelError, match="cannot reach"):
        await Kernel(url=f"http://127.0.0.1:{_free_port()}", token="x", startup_timeout=5).start()
