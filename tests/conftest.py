"""Shared fixtures; the session ends by checking that no kernel process or file was left behind."""

from __future__ import annotations

import glob
import os
import tempfile

import psutil
import pytest

from kernel_bridge import Kernel


def _kernel_processes() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "kernel_bridge._launcher" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def _runtime_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), f"kernel-bridge-{os.getpid()}-*")))


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    """After the whole run: no kernel processes and no connection files or workspaces remain."""
    before = _runtime_dirs()
    yield
    leaked = _kernel_processes()
    for proc in leaked:
        proc.kill()
    left = _runtime_dirs() - before
    assert not leaked, f"kernel processes left running: {[p.pid for p in leaked]}"
    assert not left, f"kernel runtime directories left behind: {sorted(left)}"


@pytest.fixture
async def kernel():
    async with Kernel(timeout=20) as k:
        yield k
