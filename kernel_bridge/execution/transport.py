"""How ``Kernel`` talks to a kernel process: the ``Transport`` protocol and ``LocalTransport``.

A transport only moves messages (execute requests out; shell and iopub replies in, through one
queue); timeouts, interrupts, restarts and outputs are ``Kernel``'s. ``RemoteTransport``
(``remote.py``) is the other implementation.

``LocalTransport`` also owns how a local kernel is launched: its environment (an allow-list,
``scrub_environment``), its launcher command with limits, its pids cgroup (``cgroup.py``) and,
when asked, its sandbox (``sandbox.py``). Its channels are IPC sockets in the kernel's runtime
directory; the connection file there (with the key that signs messages) is removed as soon as
the kernel has read it, so it is on disk only while the kernel starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import re
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psutil
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

from kernel_bridge.execution.cgroup import CgroupUnavailableError, PidsCgroup
from kernel_bridge.execution.result import KernelError
from kernel_bridge.execution.sandbox import bwrap_command

T = TypeVar("T")
log = logging.getLogger(__name__)

# Names that look secret are left out even where the allow-list's patterns take them.
SECRET_NAME_RE = re.compile(
    r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|PWD|CREDENTIAL|PRIVATE|AUTH|DSN|URL|URI", re.IGNORECASE
)

# What a kernel gets from the parent's environment without being asked: locale, paths, the
# Python, library and thread settings, kernel-bridge's own settings. ``*`` is a pattern.
KERNEL_ENV_ALLOW = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TERM",
    "TMPDIR",
    "NO_COLOR",
    "COLUMNS",
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONWARNINGS",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "CONDA_DEFAULT_ENV",
    "LD_LIBRARY_PATH",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "JUPYTER_PLATFORM_DIRS",
    "MPLBACKEND",
    "MPLCONFIGDIR",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "CUDA_HOME",
    "CUDA_VISIBLE_DEVICES",
    "TORCH_HOME",
    "HF_*",
    "TRANSFORMERS_OFFLINE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "KERNEL_BRIDGE_*",
)

# Proxy settings pass only without credentials in them (``http://user:pass@host``).
PROXY_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def scrub_environment(
    parent: Mapping[str, str], allow: Iterable[str] = (), extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A kernel's environment: the parent's variables named in ``KERNEL_ENV_ALLOW`` (those whose
    names look secret left out), proxy settings without credentials, the names in ``allow``
    (names or ``*`` patterns, taken as they are), then ``extra``. Everything else of the
    parent, API keys first of all, stays out."""
    allow = list(allow)
    env = {
        k: v
        for k, v in parent.items()
        if _matches(k, allow)
        or (_matches(k, KERNEL_ENV_ALLOW) and not SECRET_NAME_RE.search(k))
        or (k.upper() in PROXY_NAMES and "@" not in v)
    }
    env.update(extra or {})
    return env


async def queue_get(queue: asyncio.Queue[T], timeout: float) -> T:
    """The next item, at once if one is waiting; TimeoutError after ``timeout`` s (0: no wait)."""
    try:
        return queue.get_nowait()
    except asyncio.QueueEmpty:
        if timeout <= 0:
            raise TimeoutError from None
    async with asyncio.timeout(timeout):
        return await queue.get()


STALE_DIR_RE = re.compile(r"kernel-bridge-(\d+)-")


def remove_stale_dirs(parent: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the kernel directories (``kernel-bridge-<pid>-*``: connection file, workspace,
    runtime) that processes which no longer exist left in ``parent`` (the temporary directory),
    e.g. after a SIGKILL, and return them. Directories of live processes and of other users are
    left alone; a pid taken again by an unrelated process keeps its directory until that ends."""
    import shutil
    import tempfile

    removed: list[Path] = []
    root = Path(parent if parent is not None else tempfile.gettempdir())
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        found = STALE_DIR_RE.match(entry.name)
        if not found or int(found.group(1)) == os.getpid():
            continue
        try:
            if not entry.is_dir() or entry.is_symlink() or entry.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        if psutil.pid_exists(int(found.group(1))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


class Transport(Protocol):
    """How ``Kernel`` talks to one kernel process, wherever it runs."""

    async def start(self) -> None: ...
    async def send_execute(
        self, code: str, *, silent: bool = False, user_expressions: dict[str, str] | None = None
    ) -> str: ...
    async def next_message(self, timeout: float) -> tuple[str, dict[str, Any]]: ...
    async def interrupt(self) -> None: ...
    async def restart(self) -> None: ...
    async def is_alive(self) -> bool: ...
    async def shutdown(self) -> None: ...


class _BridgeKernelSpecs(KernelSpecManager):
    """Serves the one kernel spec a local ``Kernel`` launches: ipykernel under resource limits."""

    spec: KernelSpec | None = None  # set per manager

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        assert self.spec is not None
        return self.spec


@dataclass
class LaunchSettings:
    """How a local kernel is started: its environment, limits, workspace and sandbox."""

    env: dict[str, str]
    workspace: str | None = None  # None: a fresh ``workspace`` in the kernel's directory
    memory: int | None = None  # RLIMIT_AS, bytes
    cpu_time: int | None = None  # RLIMIT_CPU, seconds
    processes: int | None = None  # tasks at once: a pids cgroup, else RLIMIT_NPROC
    file_size: int | None = None  # RLIMIT_FSIZE, bytes
    sandbox: bool = False
    network: bool = False  # the sandbox's network (loopback only when False)
    read_only: list[str] = field(default_factory=list)  # host paths the sandbox shows


_warned: set[str] = set()


class LocalTransport:
    """A kernel process on this machine through ``jupyter_client``.

    ``directory`` is the kernel's own (made and removed by its owner): ``run/`` holds the
    connection file and the channels' IPC sockets, ``workspace/`` the default workspace,
    ``tmp/`` the sandbox's ``/tmp`` and ``kernel.log`` a sandboxed kernel's own output.
    """

    def __init__(self, directory: str, settings: LaunchSettings, startup_timeout: float) -> None:
        base = Path(directory)
        self.settings = settings
        self.run_dir = base / "run"
        self.run_dir.mkdir(mode=0o700)
        if settings.workspace:
            self.workspace = Path(settings.workspace).resolve()
            self.workspace.mkdir(parents=True, exist_ok=True)
        else:
            self.workspace = base / "workspace"
            self.workspace.mkdir()
        env = dict(settings.env)
        env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
        self._log: Any = None
        if settings.sandbox:
            self.tmp_dir = base / "tmp"
            self.tmp_dir.mkdir()
            env["IPYTHONDIR"] = "/tmp/.ipython"
            # The kernel's own stdout and stderr (bubblewrap's errors among them): a file, not
            # the terminal of the process that started it.
            self._log = open(base / "kernel.log", "wb")  # noqa: SIM115 (closed at shutdown)
        else:
            env["IPYTHONDIR"] = str(base / "ipython")
        self.env = env
        self.startup_timeout = startup_timeout
        self.cgroup: PidsCgroup | None = None
        self.process_bound = ""  # how the process limit holds, once started
        specs = _BridgeKernelSpecs()
        self._specs = specs
        self.km = AsyncKernelManager(
            kernel_name="kernel-bridge",
            kernel_spec_manager=specs,
            connection_file=str(self.run_dir / "kernel.json"),
            transport="ipc",
            ip=str(self.run_dir / "ipc"),
        )
        self.client: Any = None
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=10_000)
        self._pumps: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int | None:
        proc = getattr(self.km.provisioner, "process", None)
        return proc.pid if proc is not None else None

    def _bound_processes(self) -> list[str]:
        """Make the pids cgroup if there is one; the launcher's options that bound processes."""
        limit = self.settings.processes
        if not limit:
            self.process_bound = "off"
            return []
        try:
            self.cgroup = PidsCgroup.create(limit)
        except CgroupUnavailableError as e:
            why = str(e)
        else:
            self.process_bound = f"pids cgroup {self.cgroup.path}"
            return ["--limit-processes", str(limit), "--cgroup", str(self.cgroup.path)]
        if os.geteuid() == 0:
            self.process_bound = f"none: running as root, and {why}"
            if "root" not in _warned:
                _warned.add("root")
                log.warning(
                    "the kernels' process limit (%d) cannot hold: %s. A fork flood in a kernel "
                    "is bounded only by the system (a sandboxed kernel's processes still end "
                    "with it).",
                    limit,
                    self.process_bound,
                )
            return []
        self.process_bound = "RLIMIT_NPROC (the user's processes now, plus the limit)"
        return ["--limit-processes", str(limit)]

    def _command(self) -> list[str]:
        s = self.settings
        launcher = [sys.executable, "-m", "kernel_bridge._launcher"]  # execution/_launcher.py
        for name, value in (
            ("memory", s.memory),
            ("cpu-time", s.cpu_time),
            ("file-size", s.file_size),
        ):
            if value:
                launcher += [f"--limit-{name}", str(value)]
        launcher += self._bound_processes()
        kernel = ["-f", "{connection_file}", "--HistoryManager.hist_file=:memory:"]
        if not s.sandbox:
            return [*launcher, *kernel]
        sandbox = bwrap_command(
            workspace=str(self.workspace),
            runtime=str(self.run_dir),
            tmp=str(self.tmp_dir),
            network=s.network,
            read_only=s.read_only,
        )
        inner = [sys.executable, "-m", "kernel_bridge._launcher", *kernel]
        return [*launcher, "--", *sandbox, "--", *inner]

    async def start(self) -> None:
        argv = self._command()
        self._specs.spec = KernelSpec(argv=argv, display_name="kernel-bridge", language="python")
        output = {"stdout": self._log, "stderr": self._log} if self._log else {}
        await self.km.start_kernel(env=self.env, cwd=str(self.workspace), **output)
        self.client = self.km.client()
        self.client.allow_stdin = False
        self.client.start_channels()
        await self._wait_ready()

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        text = Path(self._log.name).read_bytes()[-2000:].decode(errors="replace").strip()
        return f"; its output: {text}" if text else ""

    async def _wait_ready(self) -> None:
        """Wait for the kernel's first reply, then forward both channels into one queue.

        The kernel has read its connection file by then: it is removed, so that no other
        process of the user finds the key there (jupyter_client writes it again for a restart).
        """
        await self._stop_pumps()
        try:
            await self.client.wait_for_ready(timeout=self.startup_timeout)
        except RuntimeError as e:
            raise KernelError(
                f"the kernel did not start within {self.startup_timeout} s: {e}{self._log_tail()}"
            ) from e
        with contextlib.suppress(OSError):
            os.unlink(self.km.connection_file)
        self._queue = asyncio.Queue(maxsize=10_000)
        self._pumps = [
            asyncio.create_task(self._pump("iopub", self.client.get_iopub_msg)),
            asyncio.create_task(self._pump("shell", self.client.get_shell_msg)),
        ]

    async def _stop_pumps(self) -> None:
        for task in self._pumps:
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        self._pumps = []

    async def _pump(
        self, channel: str, get: Callable[[], Coroutine[Any, Any, dict[str, Any]]]
    ) -> None:
        while True:
            msg = await get()
            await self._queue.put((channel, msg))

    async def send_execute(
        self, code: str, *, silent: bool = False, user_expressions: dict[str, str] | None = None
    ) -> str:
        return self.client.execute(
            code,
            silent=silent,
            store_history=not silent,
            allow_stdin=False,
            user_expressions=user_expressions or {},
            stop_on_error=False,
        )

    async def next_message(self, timeout: float) -> tuple[str, dict[str, Any]]:
        return await queue_get(self._queue, timeout)

    async def interrupt(self) -> None:
        await self.km.interrupt_kernel()

    async def restart(self) -> None:
        if self.cgroup is not None:  # also what left the kernel's session, still counted there
            await asyncio.to_thread(self.cgroup.kill_all)
        await self.km.restart_kernel(now=True)
        await self._wait_ready()

    async def is_alive(self) -> bool:
        return bool(await self.km.is_alive())

    async def shutdown(self) -> None:
        await self._stop_pumps()
        pid = self.pid
        children = []
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(pid).children(recursive=True)
        if self.client is not None:
            self.client.stop_channels()
        if self.km.has_kernel:
            await self.km.shutdown_kernel(now=True)
        for child in children:  # processes the model's code started in a new session
            with contextlib.suppress(psutil.Error):
                child.kill()
        if self.cgroup is not None:  # and any that left the kernel's process tree
            await asyncio.to_thread(self.cgroup.remove)
            self.cgroup = None
        if self._log is not None:
            self._log.close()


__all__ = [
    "KERNEL_ENV_ALLOW",
    "SECRET_NAME_RE",
    "LaunchSettings",
    "LocalTransport",
    "Transport",
    "queue_get",
    "scrub_environment",
]
