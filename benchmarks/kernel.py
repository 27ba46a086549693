"""Kernel costs against stock baselines run in the same process.

Step overhead of trivial blocks (vs a plain ``jupyter_client`` loop on its own kernel), CPU-bound
blocks (vs ``exec`` here, and smolagents' ``LocalPythonExecutor`` if installed), warm ``KernelPool``
acquire (vs a cold start), memory per idle kernel, and 16 concurrent stateful sessions. Run
``python benchmarks/kernel.py`` (about 2 minutes) or ``--quick`` (under a minute); prints markdown,
and ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import jupyter_client
import psutil
from jupyter_client import AsyncKernelManager

from kernel_bridge.kernel import ExecutionResult, Kernel, KernelPool

TRIVIAL_BLOCKS = ("pass", "1+1")
CPU_BLOCKS = {
    "generator": "sum(i*i for i in range(1_000_000))",
    "for loop": "t=0\nfor i in range(1_000_000): t += i*i",
}
CHATTY_BLOCK = "for i in range(500): print(i, flush=True)"  # about 500 stream messages
CPU_ANSWER = 333332833333500000  # sum of i*i for i < 1_000_000
MB = 1 << 20


@dataclass
class Settings:
    """How many repetitions each measurement takes."""

    steps: int  # trivial executions per method, after warm-up
    warmup: int
    chatty_runs: int
    cpu_runs: int
    smolagents_runs: int
    cold_starts: int
    acquisitions: int
    pool_size: int
    sessions: int
    session_steps: int
    pool_runs: int  # runs one after another through a KernelPool(pool_size)


FULL = Settings(
    steps=200,
    warmup=20,
    chatty_runs=15,
    cpu_runs=15,
    smolagents_runs=3,
    cold_starts=5,
    acquisitions=20,
    pool_size=4,
    sessions=16,
    session_steps=20,
    pool_runs=64,
)
QUICK = Settings(
    steps=50,
    warmup=10,
    chatty_runs=5,
    cpu_runs=5,
    smolagents_runs=1,
    cold_starts=2,
    acquisitions=5,
    pool_size=4,
    sessions=16,
    session_steps=10,
    pool_runs=16,
)


@dataclass
class Row:
    """One line of the printed table; ``ratio`` is kernel_bridge's number over the baseline's."""

    benchmark: str
    ours: str
    baseline: str
    ratio: str = ""
    goal: str = ""


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fmt_s(seconds: float) -> str:
    """Seconds in the unit a reader takes in at a glance."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def verdict(value: float, limit: float) -> str:
    return "met" if value <= limit else "**not met**"


def tree_memory(pid: int | None) -> tuple[float, float]:
    """RSS and USS (bytes) of a process and its descendants."""
    if pid is None:
        return float("nan"), float("nan")
    proc = psutil.Process(pid)
    rss = uss = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            info = p.memory_full_info()
            rss += info.rss
            uss += info.uss
    return rss, uss


def tree_cpu(pid: int | None) -> float:
    """User and system CPU seconds of a process and its descendants."""
    if pid is None:
        return 0.0
    total = 0.0
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = p.cpu_times()
                total += times.user + times.system
    return total


class PlainClient:
    """The stock loop on the default ``python3`` kernel: send execute, read iopub until this
    request's idle status, then its shell reply (``timeout`` as ``Kernel.execute`` has one)."""

    def __init__(self) -> None:
        self.km = AsyncKernelManager()
        self.client: Any = None

    @property
    def pid(self) -> int | None:
        proc = getattr(self.km.provisioner, "process", None)
        return proc.pid if proc is not None else None

    async def start(self) -> None:
        await self.km.start_kernel()
        self.client = self.km.client()
        self.client.start_channels()
        await self.client.wait_for_ready(timeout=60)

    async def execute(self, code: str) -> dict[str, Any]:
        msg_id = self.client.execute(code)
        while True:
            msg = await self.client.get_iopub_msg(timeout=30)
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
            ):
                break
        while True:
            reply = await self.client.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply

    async def execute_interactive(self, code: str) -> dict[str, Any]:
        return await self.client.execute_interactive(code, timeout=30, output_hook=_ignore)

    async def shutdown(self) -> None:
        if self.client is not None:
            self.client.stop_channels()
        if self.km.has_kernel:
            await self.km.shutdown_kernel(now=True)


def _ignore(msg: dict[str, Any]) -> None:
    """An output hook that drops outputs (the default prints them)."""


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    begin = time.perf_counter()
    value = await call()
    return time.perf_counter() - begin, value


async def start_all(*starts: Awaitable[Any]) -> None:
    """Run starts concurrently and let every one finish before raising the first failure, so
    that the caller's cleanup sees each kernel that did start."""
    results = await asyncio.gather(*starts, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def ok_result(kernel: Kernel, code: str) -> ExecutionResult:
    result = await kernel.execute(code)
    if not result.ok:
        raise RuntimeError(f"benchmark block failed in the kernel: {code!r}: {result.output_text}")
    return result


# -- 1. step overhead ----------------------------------------------------------------------------


async def step_overhead(
    s: Settings, kernel: Kernel, plain: PlainClient, out: dict[str, Any], rows: list[Row]
) -> None:
    """Trivial blocks through the three loops, interleaved so that drift hits all alike."""
    methods: dict[str, Callable[[str], Awaitable[Any]]] = {
        "Kernel.execute": lambda code: ok_result(kernel, code),
        "plain loop": plain.execute,
        "execute_interactive": plain.execute_interactive,
    }
    names = list(methods)
    for code in TRIVIAL_BLOCKS:
        samples: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}  # this process, all threads
        for i in range(s.warmup + s.steps):
            for name in names[i % 3 :] + names[: i % 3]:
                cpu_begin = time.process_time()
                took, _ = await timed(partial(methods[name], code))
                if i >= s.warmup:
                    samples[name].append(took)
                    cpu[name].append(time.process_time() - cpu_begin)
        med = {name: median(v) for name, v in samples.items()}
        med_cpu = {name: median(v) for name, v in cpu.items()}
        out["step_overhead_s"][code] = {
            name: {"median": med[name], "p95": percentile(v, 0.95), "client_cpu": med_cpu[name]}
            for name, v in samples.items()
        }
        ratio = med["Kernel.execute"] / med["plain loop"]
        rows.append(
            Row(
                f"step `{code}` (median of {s.steps})",
                f"Kernel.execute {fmt_s(med['Kernel.execute'])}",
                f"plain jupyter_client loop {fmt_s(med['plain loop'])}",
                f"{ratio:.2f}×",
                f"≤ 1.1×: {verdict(ratio, 1.1)}",
            )
        )
        ratio_i = med["Kernel.execute"] / med["execute_interactive"]
        rows.append(
            Row(
                f"step `{code}`",
                "",
                f"client.execute_interactive {fmt_s(med['execute_interactive'])}",
                f"{ratio_i:.2f}×",
            )
        )
        rows.append(
            Row(
                f"step `{code}`, CPU time of this process per step",
                f"Kernel.execute {fmt_s(med_cpu['Kernel.execute'])}",
                f"plain jupyter_client loop {fmt_s(med_cpu['plain loop'])}",
                f"{med_cpu['Kernel.execute'] / med_cpu['plain loop']:.2f}×",
            )
        )


async def chatty_step(
    s: Settings, kernel: Kernel, plain: PlainClient, out: dict[str, Any], rows: list[Row]
) -> None:
    """A block that prints 500 flushed lines: the per-message cost of collecting outputs."""
    methods: dict[str, Callable[[], Awaitable[Any]]] = {
        "Kernel.execute": lambda: ok_result(kernel, CHATTY_BLOCK),
        "plain loop": lambda: plain.execute(CHATTY_BLOCK),
    }
    samples: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for i in range(1 + s.chatty_runs):  # the first round is warm-up
        for name in list(methods)[:: 1 if i % 2 else -1]:
            cpu_begin = time.process_time()
            took, _ = await timed(methods[name])
            if i:
                samples[name].append(took)
                cpu[name].append(time.process_time() - cpu_begin)
    med = {name: median(v) for name, v in samples.items()}
    med_cpu = {name: median(v) for name, v in cpu.items()}
    out["chatty_step_s"] = {
        name: {"median": med[name], "client_cpu": med_cpu[name]} for name in methods
    }
    rows.append(
        Row(
            f"step printing 500 flushed lines (median of {s.chatty_runs}); CPU of this process",
            f"Kernel.execute {fmt_s(med['Kernel.execute'])}; "
            f"CPU {fmt_s(med_cpu['Kernel.execute'])}",
            f"plain jupyter_client loop {fmt_s(med['plain loop'])}; "
            f"CPU {fmt_s(med_cpu['plain loop'])}",
            f"{med['Kernel.execute'] / med['plain loop']:.2f}×",
        )
    )


def in_process_floor(s: Settings, out: dict[str, Any], rows: list[Row]) -> None:
    """``InteractiveShell.run_cell`` here: what a cell costs with no process boundary."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    for code in TRIVIAL_BLOCKS:
        samples = []
        with contextlib.redirect_stdout(io.StringIO()):  # run_cell prints "Out[n]: ..."
            for i in range(s.warmup + s.steps):
                begin = time.perf_counter()
                shell.run_cell(code)
                if i >= s.warmup:
                    samples.append(time.perf_counter() - begin)
        floor = median(samples)
        out["in_process_floor_s"][code] = floor
        ours = out["step_overhead_s"][code]["Kernel.execute"]["median"]
        rows.append(
            Row(
                f"step `{code}`, in-process floor",
                "",
                f"InteractiveShell.run_cell {fmt_s(floor)}",
                f"{ours / floor:.0f}×",
            )
        )


# -- 2. CPU-bound blocks -------------------------------------------------------------------------


async def run_exec(code: str) -> float:
    """Seconds for ``exec`` to compile and run ``code`` in this process, in a fresh namespace."""
    namespace: dict[str, Any] = {}
    begin = time.perf_counter()
    exec(compile(code, "<benchmark>", "exec"), namespace)
    took = time.perf_counter() - begin
    if namespace.get("t", CPU_ANSWER) != CPU_ANSWER:
        raise RuntimeError(f"exec computed {namespace['t']!r} for {code!r}")
    return took


def smolagents_version() -> str | None:
    try:
        import smolagents
    except ImportError:
        return None
    return str(smolagents.__version__)


def run_smolagents(code: str) -> float:
    """Seconds for a fresh LocalPythonExecutor (smolagents' AST interpreter) to run ``code``."""
    from smolagents.local_python_executor import LocalPythonExecutor

    executor = LocalPythonExecutor(additional_authorized_imports=[])
    executor.send_tools({})
    begin = time.perf_counter()
    output = executor(code)
    took = time.perf_counter() - begin
    value = executor.state.get("t", output.output)
    if value != CPU_ANSWER:
        raise RuntimeError(f"LocalPythonExecutor computed {value!r} for {code!r}")
    return took


async def cpu_bound(
    s: Settings, kernel: Kernel, plain: PlainClient, out: dict[str, Any], rows: list[Row]
) -> None:
    """Each block through Kernel.execute, the plain loop and ``exec``, interleaved."""
    smol_version = smolagents_version()
    out["smolagents"] = smol_version
    for label, code in CPU_BLOCKS.items():
        methods: dict[str, Callable[[], Awaitable[Any]]] = {
            "Kernel.execute": partial(ok_result, kernel, code),
            "plain loop": partial(plain.execute, code),
            "exec": partial(run_exec, code),
        }
        names = list(methods)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for i in range(1 + s.cpu_runs):  # the first round is warm-up
            for name in names[i % 3 :] + names[: i % 3]:
                took, value = await timed(methods[name])
                if i:
                    samples[name].append(value if name == "exec" else took)  # exec's own timing
        med = {name: median(v) for name, v in samples.items()}
        out["cpu_bound_s"][label] = dict(med)
        ratio = med["Kernel.execute"] / med["exec"]
        rows.append(
            Row(
                f"CPU {label} (median of {s.cpu_runs})",
                f"Kernel.execute {fmt_s(med['Kernel.execute'])}",
                f"`exec` in this process {fmt_s(med['exec'])}",
                f"{ratio:.2f}×",
                f"≤ 1.2×: {verdict(ratio, 1.2)}",
            )
        )
        rows.append(
            Row(
                f"CPU {label}",
                "",
                f"plain jupyter_client loop {fmt_s(med['plain loop'])}",
                f"{med['Kernel.execute'] / med['plain loop']:.2f}×",
            )
        )
        if smol_version is None:
            rows.append(Row(f"CPU {label}", "", "smolagents LocalPythonExecutor: not installed"))
            continue
        smol = median([run_smolagents(code) for _ in range(s.smolagents_runs)])
        out["cpu_bound_s"][label]["smolagents LocalPythonExecutor"] = smol
        rows.append(
            Row(
                f"CPU {label}",
                "",
                f"smolagents {smol_version} LocalPythonExecutor {fmt_s(smol)} "
                f"(median of {s.smolagents_runs})",
                f"{med['Kernel.execute'] / smol:.3f}×",
            )
        )


# -- 3. pool -------------------------------------------------------------------------------------


async def refilled(pool: KernelPool, timeout: float = 120.0) -> None:
    """Wait until every kernel of the pool is warm again, then let the newest settle."""
    deadline = time.monotonic() + timeout
    while pool.warm < pool.size:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the pool did not refill within {timeout:g} s")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)


async def pool_latency(
    s: Settings, registry: list[Kernel], out: dict[str, Any], rows: list[Row]
) -> None:
    cold, stock = [], []
    for _ in range(s.cold_starts):
        kernel = Kernel()
        registry.append(kernel)
        took, _ = await timed(kernel.start)
        cold.append(took)
        await kernel.shutdown()
        plain = PlainClient()
        try:
            took, _ = await timed(plain.start)
            stock.append(took)
        finally:
            await plain.shutdown()
    pool = KernelPool(size=s.pool_size)
    warm, first = [], []
    try:
        await pool.start()
        for _ in range(s.acquisitions):
            await refilled(pool)
            begin = time.perf_counter()
            async with pool.acquire() as kernel:
                warm.append(time.perf_counter() - begin)
                took, _ = await timed(partial(ok_result, kernel, "1+1"))
                first.append(took)
        await refilled(pool)
    finally:
        await pool.close()
    med_warm, med_cold = median(warm), median(cold)
    med_stock = median(stock)
    out["pool_s"] = {
        "warm_acquire": med_warm,
        "warm_acquire_max": max(warm),
        "cold_start": med_cold,
        "stock_cold_start": med_stock,
        "first_execute_on_warm_kernel": median(first),
    }
    rows.append(
        Row(
            f"KernelPool(size={s.pool_size}) acquire (median of {s.acquisitions}; "
            f"cold: of {s.cold_starts})",
            f"warm acquire {fmt_s(med_warm)} (max {fmt_s(max(warm))})",
            f"cold Kernel().start() {fmt_s(med_cold)}",
            f"{med_warm / med_cold:.5f}×",
            f"warm ≤ 10 ms: {verdict(med_warm, 0.010)}",
        )
    )
    rows.append(
        Row(
            f"cold start (median of {s.cold_starts})",
            f"Kernel().start() {fmt_s(med_cold)}",
            f"stock AsyncKernelManager start + wait_for_ready {fmt_s(med_stock)}",
            f"{med_cold / med_stock:.2f}×",
        )
    )
    rows.append(Row("first `1+1` on a warm pool kernel", fmt_s(median(first)), ""))


# -- 4. memory and concurrent sessions -----------------------------------------------------------


def session_step(session: int, step: int) -> tuple[str, str]:
    """A small stateful block and the output it must print."""
    if step == 0:
        return "acc = []", ""
    total = session * step * (step + 1) // 2
    return f"acc.append({session} * {step})\nprint(len(acc))\nsum(acc)", f"{step}\n{total}"


async def concurrent_sessions(
    s: Settings, registry: list[Kernel], out: dict[str, Any], rows: list[Row]
) -> None:
    host_before = psutil.Process().memory_info().rss
    kernels = [Kernel() for _ in range(s.sessions)]
    registry.extend(kernels)
    start_s, _ = await timed(lambda: start_all(*(k.start() for k in kernels)))
    await asyncio.gather(*(ok_result(k, "1+1") for k in kernels))
    memory = [tree_memory(k.pid) for k in kernels]
    rss, uss = median([m[0] for m in memory]), median([m[1] for m in memory])
    out["memory_bytes"]["kernel_bridge"] = {"rss": rss, "uss": uss, "of": len(kernels)}

    latencies: list[float] = []
    errors: list[str] = []

    async def session(index: int, kernel: Kernel) -> None:
        for step in range(s.session_steps):
            code, expected = session_step(index + 1, step)
            took, result = await timed(partial(kernel.execute, code))
            latencies.append(took)
            if not result.ok or result.output_text != expected:
                errors.append(
                    f"session {index} step {step}: {result.status} "
                    f"{result.output_text!r} (expected {expected!r})"
                )

    kernels_cpu = -sum(tree_cpu(k.pid) for k in kernels)
    client_cpu = -time.process_time()
    steps_s, _ = await timed(
        lambda: asyncio.gather(*(session(i, k) for i, k in enumerate(kernels)))
    )
    client_cpu += time.process_time()
    kernels_cpu += sum(tree_cpu(k.pid) for k in kernels)
    stop_s, _ = await timed(lambda: asyncio.gather(*(k.shutdown() for k in kernels)))
    host_after = psutil.Process().memory_info().rss
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    out["sessions"] = {
        "sessions": s.sessions,
        "steps_each": s.session_steps,
        "start_s": start_s,
        "steps_wall_s": steps_s,
        "shutdown_s": stop_s,
        "total_s": start_s + steps_s + stop_s,
        "errors": len(errors),
        "error_examples": errors[:5],
        "step_p50_s": p50,
        "step_p95_s": p95,
        "steps_cpu_s": {"this process": client_cpu, "kernels": kernels_cpu},
        "host_rss_before": host_before,
        "host_rss_after": host_after,
    }
    stock = out["memory_bytes"]["stock ipykernel"]
    rows.append(
        Row(
            f"RSS per idle kernel (USS) after one `1+1` (median of {len(kernels)})",
            f"{rss / MB:.0f} MiB ({uss / MB:.0f} MiB)",
            f"stock ipykernel {stock['rss'] / MB:.0f} MiB ({stock['uss'] / MB:.0f} MiB)",
            f"{rss / stock['rss']:.2f}×",
        )
    )
    rows.append(
        Row(
            f"{s.sessions} concurrent sessions × {s.session_steps} stateful steps, "
            f"{os.cpu_count()} cores",
            f"total {start_s + steps_s + stop_s:.1f} s (start {start_s:.1f} s, "
            f"steps {steps_s:.1f} s, shutdown {stop_s:.1f} s); "
            f"step p50 {fmt_s(p50)}, p95 {fmt_s(p95)}; "
            f"CPU during the steps: this process {client_cpu:.2f} s, kernels {kernels_cpu:.2f} s; "
            f"RSS of this process {host_before / MB:.0f} MiB before, {host_after / MB:.0f} after",
            "",
            "",
            f"0 errors: {'met' if not errors else f'**{len(errors)} errors**'}",
        )
    )


async def runs_through_a_pool(s: Settings, out: dict[str, Any], rows: list[Row]) -> None:
    """``pool_runs`` runs one after another, each on a fresh kernel from a KernelPool: a few
    stateful steps, then the kernel goes back (and is replaced). Errors, and this process's RSS
    before and after: the host must not grow with the runs it served."""
    errors: list[str] = []
    pool = KernelPool(size=s.pool_size)
    try:
        await pool.start()
        await refilled(pool)
        before = psutil.Process().memory_info().rss
        begin = time.perf_counter()
        for run in range(s.pool_runs):
            async with pool.acquire() as kernel:
                for step in range(4):
                    code, expected = session_step(run + 1, step)
                    result = await kernel.execute(code)
                    if not result.ok or result.output_text != expected:
                        errors.append(f"run {run} step {step}: {result.status}")
        wall = time.perf_counter() - begin
        await refilled(pool)
        after = psutil.Process().memory_info().rss
    finally:
        await pool.close()
    out["pool_runs"] = {
        "runs": s.pool_runs,
        "pool_size": s.pool_size,
        "wall_s": wall,
        "errors": len(errors),
        "error_examples": errors[:5],
        "host_rss_before": before,
        "host_rss_after": after,
    }
    rows.append(
        Row(
            f"RSS of this process over {s.pool_runs} runs × 4 steps, one after another "
            f"through KernelPool({s.pool_size})",
            f"{before / MB:.0f} MiB before, {after / MB:.0f} MiB after; {wall:.1f} s "
            f"({wall / s.pool_runs * 1000:.0f} ms a run)",
            "",
            f"{after / before:.2f}×",
            f"0 errors: {'met' if not errors else f'**{len(errors)} errors**'}",
        )
    )


# -- driver --------------------------------------------------------------------------------------


async def run_kernels(s: Settings, out: dict[str, Any], rows: list[Row]) -> None:
    registry: list[Kernel] = []
    plain = PlainClient()
    try:
        kernel = Kernel()
        registry.append(kernel)
        await start_all(kernel.start(), plain.start())
        await ok_result(kernel, "1+1")
        await plain.execute("1+1")
        rss, uss = tree_memory(plain.pid)
        out["memory_bytes"]["stock ipykernel"] = {"rss": rss, "uss": uss, "of": 1}
        await step_overhead(s, kernel, plain, out, rows)
        await chatty_step(s, kernel, plain, out, rows)
        await cpu_bound(s, kernel, plain, out, rows)
        await asyncio.gather(kernel.shutdown(), plain.shutdown())
        await pool_latency(s, registry, out, rows)
        await concurrent_sessions(s, registry, out, rows)
        await runs_through_a_pool(s, out, rows)
    finally:
        await asyncio.gather(
            plain.shutdown(), *(k.shutdown() for k in registry), return_exceptions=True
        )


def row_order(row: Row) -> tuple[int, int]:
    """Sections in the order of the module; the in-process floor next to its block's rows."""
    sections = ["step", "CPU", "KernelPool", "cold", "first", "RSS"]
    section = next(
        (i for i, prefix in enumerate(sections) if row.benchmark.startswith(prefix)), len(sections)
    )
    parts = row.benchmark.split("`")
    code = parts[1] if section == 0 and len(parts) > 1 else ""
    return section, TRIVIAL_BLOCKS.index(code) if code in TRIVIAL_BLOCKS else len(TRIVIAL_BLOCKS)


def print_table(rows: list[Row]) -> None:
    print("| benchmark | kernel_bridge | baseline (same process) | ratio | goal |")
    print("|---|---|---|---:|---|")
    for row in rows:
        print(f"| {row.benchmark} | {row.ours} | {row.baseline} | {row.ratio} | {row.goal} |")


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--quick", action="store_true", help="fewer repetitions, under a minute")
    cli.add_argument("--json", metavar="PATH", help="also write the numbers to PATH")
    args = cli.parse_args()
    s = QUICK if args.quick else FULL
    out: dict[str, Any] = {
        "settings": asdict(s),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "jupyter_client": jupyter_client.__version__,
        "step_overhead_s": {},
        "in_process_floor_s": {},
        "cpu_bound_s": {},
        "memory_bytes": {},
    }
    rows: list[Row] = []
    begin = time.perf_counter()
    asyncio.run(run_kernels(s, out, rows))
    in_process_floor(s, out, rows)  # last: the shell installs hooks in this process
    out["leftover_processes"] = len(psutil.Process().children(recursive=True))
    out["wall_s"] = time.perf_counter() - begin

    rows.sort(key=row_order)
    print_table(rows)
    print()
    print(
        f"{os.cpu_count()} cores, Python {out['python']}, "
        f"jupyter_client {out['jupyter_client']}; {out['wall_s']:.0f} s in all; "
        f"kernel processes left after shutdown: {out['leftover_processes']}"
    )
    if out["sessions"]["errors"]:
        print("session errors:", *out["sessions"]["error_examples"], sep="\n- ")
    if out["pool_runs"]["errors"]:
        print("pool run errors:", *out["pool_runs"]["error_examples"], sep="\n- ")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    if out["leftover_processes"]:
        sys.exit("kernel processes outlived the benchmark")


if __name__ == "__main__":
    main()
