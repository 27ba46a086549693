"""``PidsCgroup``: a pids cgroup per local kernel, which bounds its processes for root too.

``RLIMIT_NPROC`` counts every process of the user and does nothing for root, so a fork flood in
a kernel run by root (common in containers) was unbounded. Where the system lets this process
make a pids cgroup, each kernel gets one (``pids.max`` = ``Kernel.process_limit``, threads
included), its launcher joins it before anything else runs, and shutdown kills whatever is left
in it, also processes that left the kernel's session. Where it cannot, ``PidsCgroup.create``
raises ``CgroupUnavailableError`` saying why.

A cgroup is named ``{pid}-{pidns}-{id}`` after the process that made it and the inode of its pid
namespace (``{pid}-{id}`` where that namespace is not the one ``/proc`` shows). The next cgroup
made on the system kills what a killed owner left in its cgroup, once the name proves the owner
dead: see ``PidsCgroup._remove_stale``.

Where one is looked for: the cgroup v1 pids hierarchy (``/sys/fs/cgroup/pids``, as on this
project's CI machines), then cgroup v2 when the pids controller is already enabled for the
children of this process's cgroup (a delegated cgroup). v2 is never reorganised to get one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

from kernel_bridge.errors import UserError

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP = "kernel-bridge"


def _v2_dir(root: Path) -> Path | None:
    """This process's cgroup v2 directory, if the pids controller is on for its children."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            rel = line[3:].lstrip("/")
            for mount in (root, root / "unified"):
                here = mount / rel
                with contextlib.suppress(OSError):
                    if "pids" in (here / "cgroup.subtree_control").read_text().split():
                        return here
    return None


def _pid_namespace() -> int | None:
    """The inode of this process's pid namespace, if ``/proc`` shows that namespace (so that a
    pid of it has a ``/proc`` entry exactly while it is in use); None otherwise."""
    try:
        status = Path("/proc/self/status").read_text()
        inode = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    for line in status.splitlines():
        # One pid: /proc belongs to our namespace, not to an ancestor of it.
        if line.startswith("NSpid:") and len(line.split()) == 2:
            return inode
    return None


class CgroupUnavailableError(UserError):
    """This process cannot make a pids cgroup; the message says why."""


def _pids_parent(root: Path) -> Path:
    """Where kernel cgroups are made (CgroupUnavailableError where nowhere)."""
    v1 = root / "pids"
    if (v1 / "cgroup.procs").exists() and not (v1 / "cgroup.subtree_control").exists():
        if os.access(v1, os.W_OK):
            return v1 / GROUP
        raise CgroupUnavailableError(f"{v1} is not writable by this user")
    v2 = _v2_dir(root)
    if v2 is not None and os.access(v2, os.W_OK):
        return v2 / GROUP
    raise CgroupUnavailableError(
        "no writable pids cgroup (neither a cgroup v1 pids hierarchy nor a cgroup v2 one with "
        "the pids controller delegated to this process)"
    )


class PidsCgroup:
    """One kernel's pids cgroup: made with a limit, joined by the launcher, emptied and removed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, limit: int, root: Path | None = None) -> PidsCgroup:
        """A new cgroup holding at most ``limit`` tasks (under ``root``, default
        ``CGROUP_ROOT``); CgroupUnavailableError where none can be made."""
        parent = _pids_parent(root or CGROUP_ROOT)
        try:
            parent.mkdir(exist_ok=True)
            if parent.parent.name != "pids":  # v2: the group's children need the controller too
                with contextlib.suppress(OSError):
                    (parent / "cgroup.subtree_control").write_text("+pids")
            namespace = _pid_namespace()
            cls._remove_stale(parent, namespace)
            owner = str(os.getpid()) if namespace is None else f"{os.getpid()}-{namespace}"
            path = parent / f"{owner}-{uuid.uuid4().hex[:8]}"
            path.mkdir()
        except OSError as e:
            raise CgroupUnavailableError(f"cannot make a pids cgroup in {parent}: {e}") from None
        group = cls(path)
        try:
            (path / "pids.max").write_text(str(limit))
        except OSError as e:
            group.remove()
            raise CgroupUnavailableError(f"cannot set {path / 'pids.max'}: {e}") from None
        return group

    @staticmethod
    def _remove_stale(parent: Path, namespace: int | None) -> None:
        """Clean up the cgroups of owners that no longer run.

        Named with our pid namespace and an owner pid without a ``/proc`` entry: the owner is
        dead (a reused pid looks alive and only delays this), so what it left in its cgroup is
        killed and the cgroup removed. Any other name's owner may run in another pid namespace,
        where a missing ``/proc`` entry proves nothing: its cgroup is only removed once empty and
        a minute old (the owner may still be starting its kernel). ``namespace``: ours, as
        ``_pid_namespace`` gives it."""
        for child in parent.iterdir():
            parts = child.name.split("-")
            if not (len(parts) in (2, 3) and all(part.isdigit() for part in parts[:-1])):
                continue
            with contextlib.suppress(OSError):
                if Path(f"/proc/{parts[0]}").exists():
                    continue
                if len(parts) == 3 and namespace is not None and int(parts[1]) == namespace:
                    # Also where the name's namespace ended and its inode went to ours: an inode
                    # is reused only once every process of the old namespace has ended.
                    PidsCgroup(child).remove()
                elif time.time() - child.stat().st_mtime > 60:
                    child.rmdir()  # fails while a process is in it

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    @property
    def peak(self) -> int | None:
        """The most tasks the cgroup held at once (None where the kernel does not say)."""
        with contextlib.suppress(OSError, ValueError):
            return int((self.path / "pids.peak").read_text())
        return None

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the cgroup, until none is left (or ``timeout`` s passed)."""
        kill_file = self.path / "cgroup.kill"  # cgroup v2: the kernel does it, forks included
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                if pid > 0:  # cgroup v2 lists a process of no pid in our namespace as 0
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left and remove the cgroup."""
        self.kill_all()
        for _ in range(100):  # a killed process leaves the cgroup once it is reaped
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


__all__ = ["CgroupUnavailableError", "PidsCgroup"]
