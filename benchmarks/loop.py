"""Reasoning-loop overhead per step: ``Reasoner`` + ``ScriptedSampler`` vs bare ``kernel.execute``.

A script of N trivial blocks with a line of prose between them runs through a ``Reasoner`` on a real
local ``Kernel``; the same N codes then run directly with ``await kernel.execute(code)`` on the same
kernel, and the same script is fed to a ``StreamParser`` alone (no kernel) for the parser's share.
Run ``python benchmarks/loop.py`` (under a minute) or ``--quick``; prints markdown, and
``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from kernel_bridge.kernel import Kernel
from kernel_bridge.parsing import CodeEnd, StreamParser
from kernel_bridge.reasoner import Limits, Reasoner
from kernel_bridge.samplers.scripted import ScriptedSampler


@dataclass
class Settings:
    """Size of the script and how often each measurement repeats (the median is reported)."""

    blocks: int
    repeats: int
    warmup: int  # runs of each kind before measuring
    chunk_size: int = 16


FULL = Settings(blocks=50, repeats=15, warmup=1)  # runs vary by ±1 ms/step on 2 cores
QUICK = Settings(blocks=20, repeats=3, warmup=1)


def codes(n: int) -> list[str]:
    return [f"x = {i}" for i in range(n)]


def script(n: int) -> str:
    """The assistant turn the sampler replays: N blocks between lines of thinking prose."""
    parts = ["<think>\n"]
    for i, code in enumerate(codes(n)):
        parts.append(f"Step {i}: let me set x and look at it before going on.\n")
        parts.append(f"```python\n{code}\n```\n")
    parts.append("That is all of them.\n</think><answer>done</answer>")
    return "".join(parts)


async def run_loop(kernel: Kernel, s: Settings, text: str) -> float:
    """Seconds for one Reasoner run over ``text``; checks the steps and the answer."""
    sampler = ScriptedSampler(text, chunk_size=s.chunk_size, delay=0.0)
    limits = Limits(max_steps=s.blocks + 1, max_tokens=len(text) + 1)
    reasoner = Reasoner(sampler, kernel, limits=limits)  # no TraceStore: nothing is written
    begin = time.perf_counter()
    trace = await reasoner.run("Set x once per step.")
    took = time.perf_counter() - begin
    if trace.finish_reason != "answer" or trace.answer != "done":
        raise RuntimeError(f"loop run ended with {trace.finish_reason!r}: {trace.error}")
    if len(trace.steps) != s.blocks or any(step.status != "ok" for step in trace.steps):
        raise RuntimeError(f"loop run made {len(trace.steps)} steps, expected {s.blocks} ok ones")
    return took


async def run_bare(kernel: Kernel, s: Settings) -> float:
    """Seconds to run the same N codes with ``kernel.execute`` one after the other."""
    blocks = codes(s.blocks)
    begin = time.perf_counter()
    for code in blocks:
        result = await kernel.execute(code)
        if not result.ok:
            raise RuntimeError(f"bare step {code!r} failed: {result.output_text}")
    return time.perf_counter() - begin


def run_parser(s: Settings, text: str) -> float:
    """Seconds to feed ``text`` to a StreamParser in sampler-sized chunks, resuming at each pause.

    Like the sampler after a splice, feeding continues right after the text the parser consumed.
    """
    parser = StreamParser()
    pos, runs = 0, 0
    begin = time.perf_counter()
    while pos < len(text):
        end = min(pos + s.chunk_size, len(text))
        for event in parser.feed(text[pos:end]):
            if isinstance(event, CodeEnd) and event.runs:
                runs += 1
        pos = end
        if parser.paused:
            pos -= len(parser.dropped)
            parser.resume()
    parser.finish()
    took = time.perf_counter() - begin
    if runs != s.blocks:
        raise RuntimeError(f"the parser found {runs} runnable blocks, expected {s.blocks}")
    return took


def quartiles(values: list[float]) -> str:
    """The middle half of the runs, in ms per step: how much one run varies."""
    if len(values) < 4:
        return f"{ms(min(values))}–{ms(max(values))} (min–max)"
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{ms(q1)}–{ms(q3)}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}" if seconds < 0.01 else f"{seconds * 1000:.2f}"


async def measure(s: Settings) -> dict[str, Any]:
    text = script(s.blocks)
    kernel = Kernel()
    try:
        await kernel.start()
        for _ in range(s.warmup):
            await run_bare(kernel, s)
            await run_loop(kernel, s, text)
            run_parser(s, text)
        loop, bare, parser = [], [], []
        for _ in range(s.repeats):  # interleaved, so drift hits both alike
            bare.append(await run_bare(kernel, s) / s.blocks)
            loop.append(await run_loop(kernel, s, text) / s.blocks)
            parser.append(run_parser(s, text) / s.blocks)
    finally:
        await kernel.shutdown()
    return {
        "settings": asdict(s),
        "script_chars": len(text),
        "per_step_s": {"loop": loop, "bare": bare, "parser": parser},
        "median_s": {
            "loop": statistics.median(loop),
            "bare": statistics.median(bare),
            "parser": statistics.median(parser),
            "paired_overhead": statistics.median(a - b for a, b in zip(loop, bare, strict=True)),
        },
    }


def table(out: dict[str, Any]) -> str:
    m = out["median_s"]
    s = out["settings"]
    overhead = m["loop"] - m["bare"]
    share = f"{m['parser'] / overhead:.1%} of the overhead" if overhead > 0 else "no overhead seen"
    runs = out["per_step_s"]
    rows = [
        "| measurement | median per step (ms) | middle half of runs (ms) | note |",
        "|---|---:|---:|---|",
        f"| Reasoner + ScriptedSampler loop | {ms(m['loop'])} | {quartiles(runs['loop'])} | "
        f"run time / {s['blocks']} blocks |",
        f"| bare `await kernel.execute(code)` | {ms(m['bare'])} | {quartiles(runs['bare'])} | "
        "same codes, same kernel |",
        f"| loop overhead (loop − bare) | {ms(overhead)} | | "
        f"ratio loop / bare {m['loop'] / m['bare']:.2f}× |",
        f"| overhead, median of paired runs | {ms(m['paired_overhead'])} | | "
        "each loop run minus the bare run just before it |",
        f"| StreamParser alone, same script | {ms(m['parser'])} | {quartiles(runs['parser'])} | "
        f"{share} |",
    ]
    return "\n".join(rows)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--quick", action="store_true", help="fewer blocks and repeats, ~10 seconds")
    cli.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    args = cli.parse_args()
    s = QUICK if args.quick else FULL
    out = asyncio.run(measure(s))
    out["machine"] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    print(table(out))
    print()
    print(
        f"- {s.blocks} blocks `x = i`, chunk_size {s.chunk_size}, delay 0, {out['script_chars']} "
        f"script characters; median of {s.repeats} runs after {s.warmup} warm-up"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
