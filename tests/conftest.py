"""Shared fixtures; the session ends by checking that no kernel process or file was left behind."""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Gateway:
    url: str
    token: str


@pytest.fixture(scope="module")
def kernel_gateway():
    """A real Jupyter Kernel Gateway on 127.0.0.1 (token auth), for the tests of that module."""
    pytest.importorskip("kernel_gateway")
    token = "test-token-123"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kernel_gateway",
            "--KernelGatewayApp.ip=127.0.0.1",
            f"--KernelGatewayApp.port={port}",
            f"--KernelGatewayApp.auth_token={token}",
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
        yield Gateway(f"http://127.0.0.1:{port}", token)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
