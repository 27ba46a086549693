"""Shared fixtures; the session ends by checking that no kernel process or file was left behind.

Under pytest-xdist (``-n 2``, with ``--dist loadgroup`` from pyproject.toml) each worker is its own
session: its own kernel pool, its own leak check. Tests that share a costly fixture are kept on
one worker by ``xdist_group`` marks (see ``pytest_collection_modifyitems``).
"""

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
import pytest_asyncio

from kernel_bridge import KernelPool

# Each xdist worker gets its share of the cores for torch's threads (and its kernels'): two
# workers on two cores then run two busy threads, not four that spin against each other.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


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


def _shares_a_costly_fixture(item: pytest.Function) -> bool:
    """True when the test uses a module-scoped fixture (a server, a model, a notebook run), or a
    wider one defined in its own module: built once per worker that runs such a test."""
    module = item.nodeid.split("::")[0]
    for defs in item._fixtureinfo.name2fixturedefs.values():
        fixture = defs[-1]
        if fixture.scope == "module" and fixture.baseid:  # a baseid: not a plugin's fixture
            return True
        if fixture.scope != "function" and fixture.baseid == module:
            return True
    return False


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        # The pool's kernels live on the session's event loop, so a test using one runs there.
        if "kernel" in item.fixturenames and pytest_asyncio.is_async_test(item):
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)
        # A module's tests that share a costly fixture run on one worker, which builds it once;
        # an explicit xdist_group (the embedded model's tests) wins.
        if item.get_closest_marker("xdist_group") is None and _shares_a_costly_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kernel_pool():
    """Kernels started ahead of the tests that take ``kernel``; each is handed out once."""
    async with KernelPool(size=2, timeout=20) as pool:
        yield pool


@pytest_asyncio.fixture(loop_scope="session")
async def kernel(kernel_pool):
    """A fresh, already started kernel that no other test has used; shut down afterwards."""
    async with kernel_pool.acquire() as k:
        yield k


@dataclass(frozen=True)
class Gateway:
    url: str
    token: str


@pytest.fixture
def shell(tmp_path):
    """An IPython shell in this process (as a notebook's kernel has), removed afterwards."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config, ipython_dir=str(tmp_path))
    yield shell
    InteractiveShell.clear_instance()


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
