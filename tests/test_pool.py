"""KernelPool: warm kernels, never reused, recycled in the background, bounded."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import psutil
import pytest

from kernel_bridge import Kernel, KernelPool


async def test_pool_never_hands_out_a_kernel_that_ran_other_code():
    async with KernelPool(size=2) as pool:
        pids = set()
        async with pool.acquire() as k:
            await k.execute("secret = 'from the first rollout'")
            pids.add(k.pid)
        for _ in range(3):
            async with pool.acquire() as k:
                result = await k.execute("secret")
                assert result.error_name == "NameError"
                assert k.pid not in pids
                pids.add(k.pid)
                await k.execute("secret = 'again'")


async def test_released_kernels_are_replaced_in_the_background():
    async with KernelPool(size=2) as pool:
        assert pool.warm == 2
        async with pool.acquire() as k:
            assert pool.warm == 1
            await k.execute("1")
        for _ in range(200):
            if pool.warm == 2:
                break
            await asyncio.sleep(0.05)
        assert pool.warm == 2


async def test_pool_bounds_concurrency():
    holding = 0
    most = 0

    async def rollout(pool: KernelPool, i: int) -> str:
        nonlocal holding, most
        async with pool.acquire() as k:
            holding += 1
            most = max(most, holding)
            result = await k.execute(f"import time; time.sleep(0.2); {i} * 2")
            holding -= 1
            return result.output_text

    async with KernelPool(size=2) as pool:
        results = await asyncio.gather(*(rollout(pool, i) for i in range(5)))
    assert results == [str(i * 2) for i in range(5)]
    assert most == 2


def test_pool_size_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        KernelPool(size=0)


async def test_pool_never_hands_out_a_kernel_that_died_while_warm():
    before = {p.pid for p in psutil.Process().children()}
    async with KernelPool(size=1) as pool:
        (warm,) = [p for p in psutil.Process().children() if p.pid not in before]
        warm.kill()  # e.g. the OOM killer, or a stray kill -9
        warm.wait(timeout=10)
        async with pool.acquire() as k:
            assert k.pid != warm.pid
            result = await k.execute("1 + 1")
        assert (result.status, result.output_text, result.restarted) == ("ok", "2", False)


async def test_pool_kernels_find_no_sibling_connection_file():
    # A rollout set a variable in a sibling kernel through the sibling's connection file, which
    # lay in a directory beside its own. Now the file is gone once the kernel has started.
    async with KernelPool(size=2) as pool, pool.acquire() as a, pool.acquire() as b:
        sibling = str(b.workspace_path.parent)
        found = await a.execute(
            f"import glob\nglob.glob({sibling!r} + '/**/*.json', recursive=True)"
        )
        assert found.output_text == "[]"


def test_directories_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from kernel_bridge.execution.transport import remove_stale_dirs

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = tmp_path / f"kernel-bridge-{int(gone.stdout)}-abc"
    (dead / "runtime").mkdir(parents=True)
    (dead / "runtime" / "kernel.json").write_text('{"key": "secret"}')
    live = tmp_path / f"kernel-bridge-{os.getppid()}-def"  # the test runner's parent lives
    live.mkdir()
    other = tmp_path / "kernel-bridge-notes"
    other.mkdir()
    assert remove_stale_dirs(tmp_path) == [dead]
    assert not dead.exists() and live.exists() and other.exists()


async def test_a_kernel_start_sweeps_what_a_killed_process_left(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    import kernel_bridge.execution.kernel as kernel_module

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    short = Path(tempfile.mkdtemp(prefix="kb-", dir="/tmp"))  # room for the kernel's sockets
    try:
        dead = short / f"kernel-bridge-{int(gone.stdout)}-xyz"
        dead.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(short))
        monkeypatch.setattr(kernel_module, "_swept", False)
        async with Kernel(timeout=20) as kernel:
            assert (await kernel.execute("1 + 1")).output_text == "2"
            assert not dead.exists()
    finally:
        shutil.rmtree(short, ignore_errors=True)


async def test_a_long_temporary_directory_leaves_the_kernel_room_for_its_sockets(
    tmp_path, monkeypatch
):
    import tempfile

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    async with Kernel(timeout=20) as kernel:
        assert (await kernel.execute("1 + 1")).output_text == "2"
