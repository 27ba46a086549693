"""The sandbox of a local kernel: bubblewrap's command line, and whether bubblewrap works here.

``Kernel(sandbox=True)`` starts its kernel inside ``bwrap`` (Debian package ``bubblewrap``):

- its own namespaces for processes, network, IPC, host name, users and cgroups: the kernel sees
  no other process (not the one that started it, not a sibling kernel), no network but
  loopback unless ``network`` is allowed, and holds no capability;
- a read-only view of the system (``/usr``, ``/etc`` without its secrets, the Python
  installation and the directories it imports from, ``python_paths``; no home directory, no
  ``/run``, no ``/sys``), plus the paths asked for read-only (the kernel-bridge cache by
  default: the finance tools answer from it);
- writable: the workspace, a private ``/tmp`` (a directory of the kernel's on the host, so it
  is on disk and removed with it) and the kernel's runtime directory (its connection file and
  the IPC sockets of its channels), each at the same path as on the host;
- the environment the launcher was given (an allow-list, ``transport.scrub_environment``),
  with ``HOME`` and ``TMPDIR`` set to ``/tmp``.

The launcher (``_launcher.py``) runs this command after joining the kernel's pids cgroup and
setting its limits, so they hold inside.
"""

from __future__ import annotations

import functools
import os
import shutil
import site
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from kernel_bridge.execution.result import KernelError

INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install "
    "bubblewrap), or run without the sandbox"
)

# The system, read-only. Top-level symlinks (/bin -> usr/bin on merged-/usr systems) are
# recreated as symlinks.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")

# Hidden inside the read-only /etc: password hashes, host keys, TLS private keys.
SECRET_SYSTEM_PATHS = (
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/sudoers",
    "/etc/sudoers.d",
)


class SandboxUnavailableError(KernelError):
    """bubblewrap is missing or cannot make its namespaces here; the message says why."""


def find_bwrap() -> str:
    """The path of ``bwrap``, or SandboxUnavailableError saying how to install it."""
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailableError(f"the sandbox needs bubblewrap (bwrap): {INSTALL_HINT}")
    return path


@functools.cache
def sandbox_problem() -> str | None:
    """Why a sandboxed kernel cannot start on this machine, or None when it can.

    Runs bubblewrap once (per process) with the namespaces the sandbox uses."""
    try:
        bwrap = find_bwrap()
    except SandboxUnavailableError as e:
        return str(e)
    true = shutil.which("true") or "/bin/true"
    probe = [bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    probe += ["--unshare-all", "--cap-drop", "ALL", "--die-with-parent", "--", true]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bubblewrap ({bwrap}) did not run: {e}"
    if done.returncode != 0:
        return (
            f"bubblewrap ({bwrap}) cannot make its namespaces here: "
            f"{done.stderr.strip() or f'exit status {done.returncode}'} (unprivileged user "
            "namespaces may be off: sysctl kernel.unprivileged_userns_clone=1, or a container "
            "that allows them)"
        )
    return None


def default_read_only_paths() -> list[str]:
    """Host paths a sandbox shows read-only unless told otherwise: the kernel-bridge cache
    (``$KERNEL_BRIDGE_CACHE``, default ``~/.cache/kernel-bridge``), where the finance tools keep
    the market data they fetched."""
    cache = os.environ.get("KERNEL_BRIDGE_CACHE") or str(Path.home() / ".cache" / "kernel-bridge")
    return [cache]


def _pth_paths(site_dir: str) -> list[str]:
    """Directories the ``.pth`` files of ``site_dir`` add to ``sys.path`` (editable installs)."""
    found = []
    for pth in sorted(Path(site_dir).glob("*.pth")):
        try:
            lines = pth.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.strip()
            if line and not line.startswith(("#", "import ", "import\t")):
                found.append(os.path.join(site_dir, line))
    return found


def _editable_finder_paths() -> list[str]:
    """Package directories that setuptools' editable finders (``__editable___*_finder``) map."""
    found = []
    for finder in sys.meta_path:
        module = sys.modules.get(getattr(type(finder), "__module__", "") or "")
        mapping = getattr(module, "MAPPING", None)
        if isinstance(mapping, dict):
            found += [str(p) for p in mapping.values()]
    return found


def python_paths() -> list[str]:
    """What a kernel's Python needs to run and import: the installation, its site directories
    and what their ``.pth`` files add, ``PYTHONPATH``, editable installs and kernel-bridge
    itself; never ``/`` or the home directory as a whole. Not the working directory."""
    import kernel_bridge

    sites = [*site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        sites.append(site.getusersitepackages())
    candidates = [
        sys.prefix,
        sys.exec_prefix,
        sys.base_prefix,
        sys.base_exec_prefix,
        str(Path(os.path.realpath(sys.executable)).parent.parent),
        *sites,
        *(p for d in sites for p in _pth_paths(d)),
        *os.environ.get("PYTHONPATH", "").split(os.pathsep),
        *_editable_finder_paths(),
        str(Path(kernel_bridge.__file__).parent),
    ]
    home = Path.home().resolve()
    found = []
    for path in candidates:
        p = Path(path)
        if not p.is_absolute() or not p.exists():
            continue
        resolved = p.resolve()
        if resolved == Path("/") or resolved in (home, *home.parents):
            continue
        found.append(str(p))
    return found


def _outermost(paths: Iterable[str]) -> list[str]:
    """``paths`` without duplicates and without those inside another one, sorted."""
    kept: list[str] = []
    for path in sorted({os.path.normpath(p) for p in paths}):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def bwrap_command(
    *,
    workspace: str,
    runtime: str,
    tmp: str,
    network: bool = False,
    read_only: Iterable[str] = (),
) -> list[str]:
    """The ``bwrap`` arguments that run a command in the sandbox (the command goes after them).

    ``workspace`` and ``runtime`` are writable at their own paths, ``tmp`` is ``/tmp``;
    ``read_only`` paths (if they exist) are shown at their own paths, read-only."""
    args = [find_bwrap(), "--unshare-all"]
    if network:
        args.append("--share-net")
    args += ["--cap-drop", "ALL", "--die-with-parent", "--hostname", "sandbox"]
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in SECRET_SYSTEM_PATHS:
        if os.path.isdir(path) and not os.path.islink(path):
            args += ["--tmpfs", path, "--remount-ro", path]
        elif os.path.lexists(path):
            args += ["--ro-bind", "/dev/null", path]
    # bubblewrap leaves /proc/sys writable when it runs as root here, and /proc/sysrq-trigger
    # takes commands from any uid-0 process, capabilities or not: both read-only.
    args += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys"]
    if os.path.exists("/proc/sysrq-trigger"):  # kernels built without it have none
        args += ["--ro-bind", "/dev/null", "/proc/sysrq-trigger"]
    args += ["--dev", "/dev", "--bind", tmp, "/tmp"]
    system = tuple(p.rstrip("/") + "/" for p in SYSTEM_PATHS)
    shown = [p for p in _outermost([*python_paths(), *read_only]) if not p.startswith(system)]
    for path in shown:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    for path in (workspace, runtime):
        args += ["--bind", path, path]
    args += ["--remount-ro", "/"]  # the sandbox's own root, where the mount points were made
    args += ["--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp", "--chdir", workspace]
    # jupyter_client's JPY_PARENT_PID is a pid of the host: seen from its own pid namespace the
    # kernel would think its parent gone and exit. --die-with-parent does that job here.
    args += ["--unsetenv", "JPY_PARENT_PID"]
    return args


__all__ = [
    "SandboxUnavailableError",
    "bwrap_command",
    "default_read_only_paths",
    "find_bwrap",
    "python_paths",
    "sandbox_problem",
]
