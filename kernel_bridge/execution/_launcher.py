"""Start an IPython kernel under resource limits, or a sandbox that starts it.

Used as the kernel command of local kernels: ``python -m kernel_bridge._launcher [limits] -f CONN``
(that module runs ``main`` from here). Before IPython is imported the launcher joins the kernel's
pids cgroup (``--cgroup DIR``, made by ``execution/cgroup.py``) and sets its limits with
``setrlimit``, so they bind the kernel and every process it starts. With ``-- COMMAND...`` it
then runs COMMAND instead (bubblewrap, whose sandbox runs this launcher again without limits):
the sandbox is then inside the cgroup and the limits from its first process on.

``--limit-processes N`` is the pids cgroup's job where there is one. Without one it becomes
``RLIMIT_NPROC``, which counts every process of the user, so the launcher allows the ones the
user already has plus N; the kernel ignores it when it runs as root.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys

_LIMITS = {
    "memory": resource.RLIMIT_AS,
    "cpu_time": resource.RLIMIT_CPU,
    "processes": resource.RLIMIT_NPROC,
    "file_size": resource.RLIMIT_FSIZE,
}


def user_tasks(uid: int) -> int:
    """Processes and threads of ``uid`` now (what ``RLIMIT_NPROC`` counts)."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:  # gone meanwhile
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            count += int(fields.get("Threads", "1"))
    return count


def set_limit(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, hard))


def main() -> None:
    argv = sys.argv[1:]
    command: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(add_help=False)
    for name in _LIMITS:
        parser.add_argument(f"--limit-{name.replace('_', '-')}", dest=name, type=int)
    parser.add_argument("--cgroup", default=None)
    limits, rest = parser.parse_known_args(argv)
    if limits.cgroup:
        try:
            with open(os.path.join(limits.cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError as e:  # a kernel without its cgroup beats no kernel
            print(f"kernel-bridge: cannot join {limits.cgroup}: {e}", file=sys.stderr)
            limits.cgroup = None
    for name, which in _LIMITS.items():
        value = getattr(limits, name)
        if not value:
            continue
        if name == "processes":
            if limits.cgroup:
                continue  # the cgroup bounds the kernel's own processes, not the user's
            value += user_tasks(os.getuid())
        set_limit(which, value)
    if command:
        # An interrupt is SIGINT to the kernel's process group, which holds bubblewrap too:
        # bubblewrap would die of it, taking the sandbox along. Ignored here, it stays; the
        # kernel installs its own SIGINT handler while it runs code.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.execvp(command[0], command)
    sys.argv = [sys.argv[0], *rest]
    from ipykernel.kernelapp import launch_new_instance

    launch_new_instance()


if __name__ == "__main__":
    main()
