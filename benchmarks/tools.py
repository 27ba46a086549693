"""What tools cost, against baselines run in the same process.

- installing the finance + documents toolbox into a running kernel vs a trivial ``pass`` step;
- a tool call (``Tool.__call__``: argument check, error wrapping) vs calling the function plainly,
  timed inside the kernel;
- an import in model code with the import guard in place vs without it;
- an offline price answer from the parquet cache vs from the bundled sample data.

Run ``python benchmarks/tools.py`` (about 30 s); prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path

from kernel_bridge.kernel import Kernel
from kernel_bridge.tools import Toolbox, load_toolsets, tool

CALLS = 20_000


@tool
def add(a: int, b: int) -> int:
    """a plus b."""
    return a + b


async def timed_step(kernel: Kernel, code: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = await kernel.execute(code)
        times.append(time.perf_counter() - t0)
        assert result.ok, result.output_text
    return statistics.median(times)


async def per_call_in_kernel(kernel: Kernel, statement: str, setup: str = "") -> float:
    """Seconds per execution of ``statement`` in the kernel (timeit, best of 5)."""
    code = (
        "import timeit\n"
        f"print(min(timeit.repeat({statement!r}, setup={setup!r}, globals=globals(), "
        f"number={CALLS}, repeat=5)) / {CALLS})"
    )
    result = await kernel.execute(code)
    assert result.ok, result.output_text
    return float(result.output_text.splitlines()[-1])


async def main(repeat: int) -> list[tuple[str, str, str, float]]:
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        os.environ["KERNEL_BRIDGE_OFFLINE"] = "1"
        os.environ["KERNEL_BRIDGE_CACHE"] = cache
        box = load_toolsets("finance,documents", cutoff="2009-12-31")
        guarded = Toolbox.of([box, add])
        async with Kernel() as plain, Kernel() as target:
            step = await timed_step(plain, "pass", repeat)
            t0 = time.perf_counter()
            await guarded.install(target)
            install = time.perf_counter() - t0
            size = len(guarded.install_code())
            rows.append(
                (
                    f"install 8 tools + guards ({size:,} bytes of code)",
                    f"{install * 1000:.1f} ms",
                    f"`pass` step {step * 1000:.2f} ms",
                    install / step,
                )
            )
            tool_call = await per_call_in_kernel(target, "add(1, 2)")
            plain_call = await per_call_in_kernel(target, "add.function(1, 2)")
            rows.append(
                (
                    "tool call `add(1, 2)`",
                    f"{tool_call * 1e6:.2f} µs",
                    f"plain function {plain_call * 1e6:.2f} µs",
                    tool_call / plain_call,
                )
            )
            guarded_import = await per_call_in_kernel(target, "import json")
            unguarded_import = await per_call_in_kernel(plain, "import json")
            rows.append(
                (
                    "`import json` in model code (already loaded)",
                    f"{guarded_import * 1e6:.2f} µs",
                    f"no guard {unguarded_import * 1e6:.2f} µs",
                    guarded_import / unguarded_import,
                )
            )
        rows.append(_cache_vs_sample(cache))
    return rows


def _cache_vs_sample(cache: str, n: int = 50) -> tuple[str, str, str, float]:
    """The same request answered from the sample CSV (empty cache) and from a parquet file."""
    from kernel_bridge.tools.market import MarketData, _write_parquet, sample_prices

    first, last = dt.date(2005, 1, 1), dt.date(2009, 12, 31)
    prices = sample_prices()
    frame = prices[prices.symbol == "AAPL"].set_index("date")[["price"]]
    path = Path(cache) / "filled" / "history" / "AAPL" / "1mo" / "2000-01-01_2010-12-31.parquet"
    _write_parquet(frame.rename(columns={"price": "Close"}), path)
    timings = {}
    for name, market in (
        ("sample", MarketData(cache_dir=Path(cache) / "empty", offline=True)),
        ("cache", MarketData(cache_dir=Path(cache) / "filled", offline=True)),
    ):
        t0 = time.perf_counter()
        for _ in range(n):
            answer = market.history("AAPL", first, last, "1mo")
        timings[name] = (time.perf_counter() - t0) / n
        assert answer.source.startswith(name), answer.source
        assert len(answer.data) == 60
    return (
        "offline price answer from the parquet cache",
        f"{timings['cache'] * 1000:.2f} ms",
        f"from the sample CSV {timings['sample'] * 1000:.2f} ms",
        timings["cache"] / timings["sample"],
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50, help="steps timed for the baseline")
    args = parser.parse_args()
    table = asyncio.run(main(args.repeat))
    print("| figure | ours | baseline | ratio |")
    print("|---|---|---|---:|")
    for name, ours, base, ratio in table:
        print(f"| {name} | {ours} | {base} | {ratio:.2f}× |")
