"""Remote kernels: the same Kernel API against a real Jupyter Kernel Gateway on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from kernel_bridge import Kernel, KernelError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_remote_kernel_keeps_state_and_reports_errors(kernel_gateway):
    async with Kernel(url=kernel_gateway.url, token=kernel_gateway.token) as k:
        await k.execute("base = 40")
        assert (await k.execute("base + 2")).output_text == "42"
        result = await k.execute("print('before'); 1 / 0")
        assert result.status == "error"
        assert result.error_name == "ZeroDivisionError"
        assert result.stdout == "before\n"
        assert [o.output_type for o in result.outputs] == ["stream", "error"]


async def test_remote_timeout_interrupts_and_keeps_state(kernel_gateway):
    async with Kernel(url=kernel_gateway.url, token=kernel_gateway.token) as k:
        await k.execute("kept = 7")
        result = await k.execute("while True:\n    pass", timeout=1)
        assert result.status == "timeout"
        assert not result.restarted
        assert (await k.execute("kept")).output_text == "7"


async def test_remote_kernel_death_is_reported_and_recovered(kernel_gateway):
    async with Kernel(url=kernel_gateway.url, token=kernel_gateway.token) as k:
        await k.execute("lost = 1")
        result = await k.execute("import os; os._exit(1)", timeout=20)
        assert result.status == "died"
        assert result.restarted
        assert (await k.execute("lost")).error_name == "NameError"


async def test_wrong_token_is_a_clear_error(kernel_gateway):
    with pytest.raises(KernelError, match=r"HTTP 401.*token"):
        await Kernel(url=kernel_gateway.url, token="wrong").start()


async def test_unreachable_server_is_a_clear_error():
    with pytest.raises(KernelError, match="cannot reach"):
        await Kernel(url=f"http://127.0.0.1:{_free_port()}", token="x", startup_timeout=5).start()
