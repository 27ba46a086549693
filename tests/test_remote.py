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


# -- issue 16, item 6: the gateway never reports ok with lost output ------------------------------

BIG_PRINT = "print('A' * 5_000_000); print('after')"


async def test_a_5_mb_print_through_the_gateway_keeps_head_and_tail(kernel_gateway):
    # It used to vanish, with everything printed after it, while the status said ok: the
    # server's IOPub data rate limit (1 MB/s) dropped it. The kernel-side guard sends head and
    # tail only, so nothing is dropped.
    async with Kernel(url=kernel_gateway.url, token=kernel_gateway.token) as k:
        result = await k.execute(BIG_PRINT)
        assert result.status == "ok"
        assert result.stdout.startswith("AAAA")
        assert result.stdout.endswith("A\nafter\n")
        assert "characters omitted" in result.stdout
        assert len(result.stdout) < k.store_cap + 100
        assert (await k.execute("print('next')")).output_text == "next"


async def test_output_the_gateway_drops_is_never_reported_ok(kernel_gateway):
    # Without the guard the server drops the print; the result must say so, not "ok".
    async with Kernel(url=kernel_gateway.url, token=kernel_gateway.token, output_guard=False) as k:
        result = await k.execute(BIG_PRINT)
        assert result.status == "error"
        assert result.error_name == "OutputLost"
        assert "IOPub data rate exceeded" in result.error_value
        assert "[OutputLost:" in result.output_text
        assert "OutputLost" in result.outputs[-1]["data"]["text/plain"]


async def test_the_first_block_after_a_restart_gets_its_output(kernel_gateway):
    async with Kernel(url=kernel_gateway.url, token=kernel_gateway.token) as k:
        for _ in range(3):
            await k.restart()
            result = await k.execute("print('hello')")
            assert (result.status, result.output_text) == ("ok", "hello")


async def test_a_background_thread_through_the_gateway_is_background_output(kernel_gateway):
    async with Kernel(url=kernel_gateway.url, token=kernel_gateway.token) as k:
        await k.execute(
            "import threading\n"
            "go, done = threading.Event(), threading.Event()\n"
            "def chatter():\n"
            "    go.wait(20); print('from the thread'); done.set()\n"
            "threading.Thread(target=chatter, daemon=True).start()"
        )
        result = await k.execute("go.set(); done.wait(20); print('mine')")
        assert result.stdout == "mine\n"
        assert "from the thread" in result.background_output
