"""What the sandbox costs: a sandboxed kernel against an unsandboxed one in the same process.

Start-up (``Kernel(sandbox=True).start()`` against ``Kernel().start()``, alternated), step time of
trivial blocks and of a CPU-bound block (the two kernels alternate block by block, so that
drift and load hit both alike), and memory per idle kernel. Run
``python benchmarks/sandbox.py`` (about a minute) or ``--quick``; prints markdown, ``--json PATH``
also writes the numbers. Needs ``bwrap`` (Debian package ``bubblewrap``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from kernel_bridge import Kernel

STEP_BLOCKS = ("pass", "1+1")
CPU_BLOCK = "sum(i*i for i in range(1_000_000))"
MB = 1 << 20


@dataclass
class Settings:
    starts: int  # cold starts of each kind
    warmup: int
    steps: int  # trivial blocks of each kind, after warm-up
    cpu_runs: int


FULL = Settings(starts=8, warmup=20, steps=200, cpu_runs=15)
QUICK = Settings(starts=3, warmup=10, steps=50, cpu_runs=5)


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def tree_rss(pid: int | None) -> float:
    """RSS of a process and its descendants (for a sandbox: bubblewrap, its init, the kernel)."""
    if pid is None:
        return float("nan")
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


async def timed_start(sandbox: bool) -> tuple[float, Kernel]:
    begin = time.perf_counter()
    kernel = await Kernel(sandbox=sandbox).start()
    return time.perf_counter() - begin, kernel


async def run(s: Settings, out: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    starts: dict[bool, list[float]] = {False: [], True: []}
    for i in range(s.starts):
        for sandbox in (i % 2 == 0, i % 2 == 1):
            took, kernel = await timed_start(sandbox)
            starts[sandbox].append(took)
            await kernel.shutdown()
    med = {k: statistics.median(v) for k, v in starts.items()}
    out["start_s"] = {"plain": starts[False], "sandbox": starts[True]}
    rows.append(
        (
            f"cold start (median of {s.starts})",
            fmt_s(med[True]),
            fmt_s(med[False]),
            f"{med[True] / med[False]:.2f}× (+{fmt_s(med[True] - med[False])})",
        )
    )

    plain = await Kernel().start()
    boxed = await Kernel(sandbox=True).start()
    try:
        kernels = {False: plain, True: boxed}
        for code in STEP_BLOCKS:
            samples: dict[bool, list[float]] = {False: [], True: []}
            for i in range(s.warmup + s.steps):
                for sandbox in (i % 2 == 0, i % 2 == 1):
                    begin = time.perf_counter()
                    result = await kernels[sandbox].execute(code)
                    took = time.perf_counter() - begin
                    if not result.ok:
                        raise RuntimeError(f"{code!r} failed: {result.output_text}")
                    if i >= s.warmup:
                        samples[sandbox].append(took)
            m = {k: statistics.median(v) for k, v in samples.items()}
            out[f"step_s {code}"] = {"plain": samples[False], "sandbox": samples[True]}
            ratio = m[True] / m[False]
            rows.append(
                (
                    f"step `{code}` (median of {s.steps})",
                    fmt_s(m[True]),
                    fmt_s(m[False]),
                    f"{ratio:.2f}× (goal ≤ 1.1×: {'met' if ratio <= 1.1 else '**not met**'})",
                )
            )
        cpu: dict[bool, list[float]] = {False: [], True: []}
        for i in range(s.cpu_runs):
            for sandbox in (i % 2 == 0, i % 2 == 1):
                begin = time.perf_counter()
                await kernels[sandbox].execute(CPU_BLOCK)
                cpu[sandbox].append(time.perf_counter() - begin)
        m = {k: statistics.median(v) for k, v in cpu.items()}
        out["cpu_s"] = {"plain": cpu[False], "sandbox": cpu[True]}
        rows.append(
            (
                f"CPU-bound block (median of {s.cpu_runs})",
                fmt_s(m[True]),
                fmt_s(m[False]),
                f"{m[True] / m[False]:.2f}×",
            )
        )
        rss = {k: tree_rss(kernel.pid) for k, kernel in kernels.items()}
        out["rss_bytes"] = {"plain": rss[False], "sandbox": rss[True]}
        rows.append(
            (
                "RSS of an idle kernel's process tree",
                f"{rss[True] / MB:.0f} MiB",
                f"{rss[False] / MB:.0f} MiB",
                f"{rss[True] / rss[False]:.2f}×",
            )
        )
    finally:
        await plain.shutdown()
        await boxed.shutdown()
    return rows


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--quick", action="store_true", help="fewer repetitions")
    cli.add_argument("--json", metavar="PATH", help="also write the numbers to PATH")
    args = cli.parse_args()
    if shutil.which("bwrap") is None:
        sys.exit("the sandbox needs bubblewrap (bwrap): apt-get install bubblewrap")
    s = QUICK if args.quick else FULL
    out: dict[str, Any] = {
        "settings": asdict(s),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
    }
    begin = time.perf_counter()
    rows = asyncio.run(run(s, out))
    out["wall_s"] = time.perf_counter() - begin
    out["leftover_processes"] = len(psutil.Process().children(recursive=True))
    print("| measurement | sandboxed kernel | unsandboxed kernel (same run) | ratio |")
    print("|---|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    load = ", ".join(f"{x:.1f}" for x in out["load_average"])
    print(
        f"\n{os.cpu_count()} cores, load average at the start {load}, Python {out['python']}; "
        f"{out['wall_s']:.0f} s in all; kernel processes left: {out['leftover_processes']}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    if out["leftover_processes"]:
        sys.exit("kernel processes outlived the benchmark")


if __name__ == "__main__":
    main()
