"""Embedded model: solve rate on checkable numeric tasks with and without code execution.

    python benchmarks/eval_embedded.py [--quick] [--json PATH]

A small held-out set of 20 questions with one exact answer each (big-number arithmetic, primes,
dates, divisors, base conversions, ...); every expected answer is computed here with Python. One
embedded model (``TransformersSampler.embedded()``, greedy) answers each question twice:

- **with code**: a ``Reasoner`` with the default prompt and a real local ``Kernel`` (one for the
  run, restarted between tasks so they share no state), ``Limits(max_steps=4, max_tokens=400,
  step_timeout=10)``;
- **without code**: the same model answering directly (a system message that says it cannot run
  code, no worked example), up to 400 tokens, stopping at end of turn.

Grading takes the last number inside ``<answer>…</answer>`` if there is one, else the last number
of the final text (with code: ``trace.answer``, else the last model segment), drops thousands
separators and compares exactly as an integer; the weekday task compares the day's name. All
with-code runs go first, then all without-code runs, so each mode reuses the KV cache of its own
system prompt. ``--quick`` runs 5 of the tasks. Prints markdown tables; ``--json PATH`` also
writes every answer.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from kernel_bridge.kernel import Kernel
from kernel_bridge.reasoner import Limits, Reasoner
from kernel_bridge.samplers import SampleRequest
from kernel_bridge.samplers.transformers import GenerationConfig, TransformersSampler

LIMITS = Limits(max_steps=4, max_tokens=400, step_timeout=10)
DIRECT_MAX_TOKENS = 400
DIRECT_SYSTEM = (
    "You are a careful problem solver. You cannot run code; answer directly and end with the "
    "final answer in <answer>…</answer>."
)
WEEKDAYS = list(calendar.day_name)  # Monday … Sunday


# -- expected answers, computed ----------------------------------------------------------------


def primes_below(n: int) -> list[int]:
    sieve = bytearray([1]) * n
    sieve[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(n - 1) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, n, i)))
    return [i for i, is_prime in enumerate(sieve) if is_prime]


def nth_prime(n: int) -> int:
    limit = 16
    while len(found := primes_below(limit)) < n:
        limit *= 2
    return found[n - 1]


def fibonacci(n: int) -> int:
    a, b = 0, 1  # F(0) = 0, F(1) = 1
    for _ in range(n):
        a, b = b, a + b
    return a


def digit_sum(n: int) -> int:
    return sum(map(int, str(n)))


def trailing_zeros_of_factorial(n: int) -> int:
    count, p = 0, 5
    while p <= n:
        count += n // p
        p *= 5
    return count


def divisor_count(n: int) -> int:
    return sum(2 - (d * d == n) for d in range(1, math.isqrt(n) + 1) if n % d == 0)


def to_base(n: int, base: int) -> str:
    digits = ""
    while n:
        n, r = divmod(n, base)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
    return digits or "0"


def collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


@dataclass
class Task:
    name: str
    question: str
    expected: int | str  # an int, or a weekday name
    kind: str = "int"  # "int" or "weekday"


def tasks() -> list[Task]:
    """The 20 questions; the first five are the ``--quick`` set."""
    weekday = WEEKDAYS[date(2031, 3, 14).weekday()]
    return [
        Task("product", "What is 123456789 * 987654321?", 123456789 * 987654321),
        Task(
            "primes below",
            "How many prime numbers are there below 10000?",
            len(primes_below(10_000)),
        ),
        Task(
            "date difference",
            "How many days are there from 1999-12-31 to 2026-11-21?",
            (date(2026, 11, 21) - date(1999, 12, 31)).days,
        ),
        Task("weekday", "On what day of the week does 14 March 2031 fall?", weekday, "weekday"),
        Task(
            "digit sum of power",
            "What is the sum of the decimal digits of 2**100?",
            digit_sum(2**100),
        ),
        Task("power mod", "What is 2**100 mod 97?", pow(2, 100, 97)),
        Task("nth prime", "What is the 1000th prime number (2 is the 1st)?", nth_prime(1000)),
        Task(
            "sum of primes",
            "What is the sum of all prime numbers below 1000?",
            sum(primes_below(1000)),
        ),
        Task(
            "fibonacci",
            "With F(0) = 0 and F(1) = 1, what is the Fibonacci number F(60)?",
            fibonacci(60),
        ),
        Task(
            "gcd",
            "What is the greatest common divisor of 89316100224 and 69213616128?",
            math.gcd(89316100224, 69213616128),
        ),
        Task(
            "lcm", "What is the least common multiple of 12345 and 54321?", math.lcm(12345, 54321)
        ),
        Task(
            "trailing zeros",
            "How many trailing zeros does 1000! (1000 factorial) have?",
            trailing_zeros_of_factorial(1000),
        ),
        Task(
            "divisor count", "How many positive divisors does 720720 have?", divisor_count(720720)
        ),
        Task(
            "hex to decimal",
            "What is the hexadecimal number DEADBEEF in decimal?",
            int("DEADBEEF", 16),
        ),
        Task(
            "to base 7",
            "Write 2026 in base 7; give its base-7 digits as one number.",
            int(to_base(2026, 7)),
        ),
        Task(
            "digit sum of factorial",
            "What is the sum of the decimal digits of 100!?",
            digit_sum(math.factorial(100)),
        ),
        Task("binomial", "What is the binomial coefficient C(30, 15)?", math.comb(30, 15)),
        Task(
            "sum of squares",
            "What is 1**2 + 2**2 + 3**2 + ... + 250**2?",
            sum(i * i for i in range(1, 251)),
        ),
        Task(
            "collatz",
            "How many steps does the Collatz sequence starting at 97 take to reach 1 "
            "(n -> n/2 if n is even, else 3n+1)?",
            collatz_steps(97),
        ),
        Task(
            "bits",
            "How many 1 bits are in the binary representation of 3**40?",
            bin(3**40).count("1"),
        ),
    ]


# -- grading -----------------------------------------------------------------------------------

ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S | re.I)
GROUP_SEP = re.compile(r"(?<=\d)[, \u00a0\u2009\u202f_'](?=\d{3}(?!\d))")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def answer_region(text: str) -> str:
    """The content of the last ``<answer>`` tag, else the whole text."""
    tagged = [m.group(1) for m in ANSWER_TAG.finditer(text) if m.group(1).strip()]
    return tagged[-1] if tagged else text


def extract_int(text: str) -> int | None:
    """The last number of ``text`` (thousands separators dropped), if it is a whole number."""
    region = GROUP_SEP.sub("", answer_region(text))
    numbers = NUMBER.findall(region)
    if not numbers:
        return None
    try:
        value = Decimal(numbers[-1])
    except InvalidOperation:  # pragma: no cover - the pattern only matches decimals
        return None
    return int(value) if value == value.to_integral_value() else None


def extract_weekday(text: str) -> str | None:
    region = answer_region(text).lower()
    found = [(region.rfind(day.lower()), day) for day in WEEKDAYS if day.lower() in region]
    return max(found)[1] if found else None


def grade(task: Task, text: str) -> tuple[str | None, bool]:
    """What was extracted from ``text`` (as shown in the table) and whether it is right."""
    if task.kind == "weekday":
        got: Any = extract_weekday(text)
    else:
        got = extract_int(text)
    return (None if got is None else str(got)), got == task.expected


# -- the two modes -----------------------------------------------------------------------------


@dataclass
class Result:
    task: str
    mode: str  # "code" or "direct"
    got: str | None
    correct: bool
    seconds: float
    model_tokens: int
    steps: int = 0
    finish: str = ""
    text: str = ""  # what was graded
    step_status: list[str] = field(default_factory=list)
    step_code: list[str] = field(default_factory=list)


async def with_code(sampler: TransformersSampler, kernel: Kernel, task: Task) -> Result:
    reasoner = Reasoner(sampler, kernel, limits=LIMITS)
    begin = time.perf_counter()
    trace = await reasoner.run(task.question)
    took = time.perf_counter() - begin
    text = trace.answer
    if not text:
        models = [s for s in trace.segments if s.kind == "model"]
        text = models[-1].text if models else ""
    got, ok = grade(task, text)
    return Result(
        task=task.name,
        mode="code",
        got=got,
        correct=ok,
        seconds=took,
        model_tokens=trace.usage.model_tokens,
        steps=len(trace.steps),
        finish=str(trace.finish_reason) + (f": {trace.error}" if trace.error else ""),
        text=text,
        step_status=[s.status for s in trace.steps],
        step_code=[s.code for s in trace.steps],
    )


async def without_code(sampler: TransformersSampler, task: Task) -> Result:
    messages = [
        {"role": "system", "content": DIRECT_SYSTEM},
        {"role": "user", "content": task.question},
    ]
    request = SampleRequest(messages, max_tokens=DIRECT_MAX_TOKENS)
    parts: list[str] = []
    tokens, finish = 0, "stop"
    begin = time.perf_counter()
    async for delta in sampler.stream(request):
        parts.append(delta.text)
        tokens += len(delta.token_ids) if delta.token_ids is not None else 0
        if delta.finish_reason is not None:
            finish = delta.finish_reason
    took = time.perf_counter() - begin
    text = "".join(parts)
    got, ok = grade(task, text)
    return Result(
        task=task.name,
        mode="direct",
        got=got,
        correct=ok,
        seconds=took,
        model_tokens=tokens,
        finish="max_tokens" if finish == "length" else "answer",
        text=text,
    )


async def evaluate(selected: list[Task], log: Callable[[str], None]) -> dict[str, Any]:
    t = time.perf_counter()
    sampler = TransformersSampler.embedded(GenerationConfig(temperature=0.0))
    load_s = time.perf_counter() - t
    log(f"model loaded in {load_s:.1f} s")
    kernel = Kernel(timeout=LIMITS.step_timeout)
    code: list[Result] = []
    direct: list[Result] = []
    restart_s: list[float] = []
    try:
        await kernel.start()
        for i, task in enumerate(selected):
            if i:
                t = time.perf_counter()
                await kernel.restart()  # a clean namespace for every task
                restart_s.append(time.perf_counter() - t)
            r = await with_code(sampler, kernel, task)
            code.append(r)
            log(
                f"code   {task.name:24} {'✓' if r.correct else '✗'} got {r.got} "
                f"({r.steps} steps, {r.seconds:.1f} s, {r.model_tokens} tok, {r.finish})"
            )
    finally:
        await kernel.shutdown()
    for task in selected:
        r = await without_code(sampler, task)
        direct.append(r)
        log(
            f"direct {task.name:24} {'✓' if r.correct else '✗'} got {r.got} "
            f"({r.seconds:.1f} s, {r.model_tokens} tok, {r.finish})"
        )
    return {
        "load_s": load_s,
        "kernel_restart_s": restart_s,
        "limits": asdict(LIMITS),
        "direct_max_tokens": DIRECT_MAX_TOKENS,
        "tasks": [asdict(task) for task in selected],
        "results": {"code": [asdict(r) for r in code], "direct": [asdict(r) for r in direct]},
    }


# -- tables ------------------------------------------------------------------------------------


def cell(text: str | None, width: int = 24) -> str:
    if text is None:
        return "—"
    text = text.replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def summary_table(out: dict[str, Any]) -> str:
    rows = [
        "| mode | solved | solve rate | mean s / task | mean model tokens | mean steps | "
        "hit max_tokens |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {"code": "with code (Reasoner + Kernel)", "direct": "without code (direct answer)"}
    for mode in ("code", "direct"):
        results = out["results"][mode]
        n = len(results)
        solved = sum(r["correct"] for r in results)
        steps = f"{sum(r['steps'] for r in results) / n:.1f}" if mode == "code" else "—"
        rows.append(
            f"| {labels[mode]} | {solved}/{n} | {solved / n:.0%} | "
            f"{sum(r['seconds'] for r in results) / n:.1f} | "
            f"{sum(r['model_tokens'] for r in results) / n:.0f} | {steps} | "
            f"{sum(r['finish'].startswith('max_tokens') for r in results)} |"
        )
    return "\n".join(rows)


def task_table(out: dict[str, Any]) -> str:
    rows = [
        "| # | task | expected | with code: got | ✓ | steps | s | tokens | "
        "without code: got | ✓ | s | tokens |",
        "|---:|---|---:|---:|:-:|---:|---:|---:|---:|:-:|---:|---:|",
    ]
    pairs = zip(out["tasks"], out["results"]["code"], out["results"]["direct"], strict=True)
    for i, (task, c, d) in enumerate(pairs, 1):
        rows.append(
            f"| {i} | {task['name']} | {cell(str(task['expected']))} | {cell(c['got'])} | "
            f"{'✓' if c['correct'] else '✗'} | {c['steps']} | {c['seconds']:.1f} | "
            f"{c['model_tokens']} | {cell(d['got'])} | {'✓' if d['correct'] else '✗'} | "
            f"{d['seconds']:.1f} | {d['model_tokens']} |"
        )
    return "\n".join(rows)


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--quick", action="store_true", help="5 tasks instead of 20")
    cli.add_argument("--json", metavar="PATH", help="also write every answer as JSON")
    args = cli.parse_args()
    selected = tasks()[:5] if args.quick else tasks()
    begin = time.perf_counter()
    out = asyncio.run(evaluate(selected, lambda line: print(line, file=sys.stderr, flush=True)))
    out["wall_s"] = time.perf_counter() - begin
    import torch

    out["machine"] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    print(summary_table(out))
    print()
    print(task_table(out))
    print()
    print(
        f"- {len(selected)} tasks, greedy; with code: Limits(max_steps={LIMITS.max_steps}, "
        f"max_tokens={LIMITS.max_tokens}, step_timeout={LIMITS.step_timeout:g}), default prompt, "
        f"one Kernel restarted between tasks; without code: max_tokens {DIRECT_MAX_TOKENS}. "
        f"Model load {out['load_s']:.1f} s, whole run {out['wall_s']:.0f} s."
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2, ensure_ascii=False)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
