"""Output limits: what a flood of rich output costs with them, against the unbounded baseline.

Each case runs in a fresh child process (so its peak RSS is its own) with one local kernel, three
ways: "unbounded" (no kernel-side guard, display limits so high they never apply: how displays
were kept before; exception and stream caps still hold), "client limits" (the default limits, the
guard off) and "default" (limits and guard). Reported: the host process's peak RSS, the result's
JSON size, the saved trace line, the time, and how many outputs were kept. The gateway case prints
5 MB through a real Jupyter Kernel Gateway and says what arrived; the last table is the guard's
cost at kernel start and per step. Run ``python benchmarks/output_limits.py`` (about 4 minutes on
2 cores) or ``--quick``; prints markdown, ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kernel_bridge import Kernel
from kernel_bridge.trace import Step, Trace

CASES = {
    "HTML displays, 100 kB each": (
        "import time\nfrom IPython.display import HTML, display\nt = time.time()\n"
        "while time.time() - t < {seconds}:\n    display(HTML('x' * 100_000))"
    ),
    "20,000 small displays": (
        "from IPython.display import HTML, display\n"
        "for i in range(20_000):\n    display(HTML(f'<b>{{i}}</b>'))"
    ),
    "a 20 MB exception message": "raise ValueError('E' * 20_000_000)",
    "a 100 MB print": "print('x' * 100_000_000)",
}
MODES = {
    "unbounded": {"output_guard": False, "max_outputs": 10**9, "max_output_bytes": 10**12},
    "client limits": {"output_guard": False},
    "default": {},
}


async def one(case: str, mode: str, seconds: float) -> dict[str, Any]:
    code = CASES[case].format(seconds=seconds)
    async with Kernel(**MODES[mode]) as kernel:
        t0 = time.monotonic()
        result = await kernel.execute(code, timeout=120)
        elapsed = time.monotonic() - t0
    step = Step.from_result(0, code, result)
    trace = Trace(model="m", sampler={"name": "bench"}, messages=[], steps=[step])
    return {
        "case": case,
        "mode": mode,
        "status": result.status,
        "outputs": len(result.outputs),
        "result_mb": len(json.dumps(result.to_dict(), default=str)) / 1e6,
        "line_mb": len(trace.to_json()) / 1e6,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": elapsed,
    }


def run_child(case: str, mode: str, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", case, mode, str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


async def gateway(quick: bool) -> list[dict[str, Any]]:
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
            "--KernelGatewayApp.auth_token=bench",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        for guard in (False, True):
            url = f"http://127.0.0.1:{port}"
            async with Kernel(url=url, token="bench", output_guard=guard) as kernel:
                result = await kernel.execute("print('A' * 5_000_000); print('after')")
            rows.append(
                {
                    "guard": guard,
                    "status": result.status,
                    "error": result.error_name,
                    "stdout_chars": len(result.stdout),
                    "after_arrived": result.stdout.endswith("after\n"),
                }
            )
    finally:
        proc.terminate()
        proc.wait(10)
    return rows


async def overhead(steps: int) -> list[dict[str, Any]]:
    """The guard's cost: kernel start (median of 3) and a trivial step (median of ``steps``)."""
    rows = []
    for guard in (False, True):
        starts, times = [], []
        for _ in range(3):
            t0 = time.monotonic()
            kernel = await Kernel(output_guard=guard).start()
            starts.append(time.monotonic() - t0)
            for code in ("pass", "print(1)") * (steps // 2):
                t0 = time.monotonic()
                await kernel.execute(code)
                times.append(time.monotonic() - t0)
            await kernel.shutdown()
        rows.append(
            {
                "guard": guard,
                "start_s": statistics.median(starts),
                "step_ms": statistics.median(times) * 1000,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s floods instead of 10 s")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, mode, seconds = args.child
        print(json.dumps(asyncio.run(one(case, mode, float(seconds)))))
        return
    seconds = 3.0 if args.quick else 10.0
    rows = [run_child(case, mode, seconds) for case in CASES for mode in MODES]
    print(
        f"| case ({seconds:g} s floods) | mode | status | outputs kept | result MB | trace line MB "
        "| host peak RSS MB | s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['mode']} | {r['status']} | {r['outputs']:,} | "
            f"{r['result_mb']:.2f} | {r['line_mb']:.2f} | {r['peak_rss_mb']:.0f} | "
            f"{r['seconds']:.1f} |"
        )
    gw = asyncio.run(gateway(args.quick))
    print("\n| 5 MB print through Kernel Gateway | status | stdout kept | `after` arrived |")
    print("|---|---|---|---|")
    for r in gw:
        status = r["status"] + (f" ({r['error']})" if r["error"] else "")
        label = "guard" if r["guard"] else "no guard"
        print(f"| {label} | {status} | {r['stdout_chars']:,} | {r['after_arrived']} |")
    cost = asyncio.run(overhead(40 if args.quick else 200))
    print("\n| kernel-side guard | kernel start s | trivial step ms (median) |")
    print("|---|---|---|")
    for r in cost:
        label = "on" if r["guard"] else "off"
        print(f"| {label} | {r['start_s']:.2f} | {r['step_ms']:.2f} |")
    if args.json:
        data = {"kernel": rows, "gateway": gw, "guard_cost": cost}
        args.json.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
