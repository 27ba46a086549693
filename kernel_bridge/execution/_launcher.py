"""Start an IPython kernel under resource limits.

Used as the kernel command of local kernels: ``python -m kernel_bridge._launcher [limits] -f CONN``
(that module runs ``main`` from here). Limits are set with ``setrlimit`` before IPython is
imported, so they bind the kernel and every process it starts.
"""

from __future__ import annotations

import argparse
import resource
import sys

_LIMITS = {
    "memory": resource.RLIMIT_AS,
    "cpu_time": resource.RLIMIT_CPU,
    "processes": resource.RLIMIT_NPROC,
    "file_size": resource.RLIMIT_FSIZE,
}


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    for name in _LIMITS:
        parser.add_argument(f"--limit-{name.replace('_', '-')}", dest=name, type=int)
    limits, rest = parser.parse_known_args()
    for name, which in _LIMITS.items():
        value = getattr(limits, name)
        if value:
            _soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, hard))
    sys.argv = [sys.argv[0], *rest]
    from ipykernel.kernelapp import launch_new_instance

    launch_new_instance()


if __name__ == "__main__":
    main()
