"""StreamParser throughput on trace-like model text fed one character at a time.

Compares against the naive detector (grow one buffer, test its end after every delta) in the same
process. Run ``python benchmarks/parser.py`` (about 2 minutes) or ``--quick``; prints markdown.
"""

from __future__ import annotations

import argparse
import random
import time

from kernel_bridge.parsing import CodeEnd, StreamParser

MB = 1_000_000  # characters; the text is almost all ASCII

PROSE = (
    "so the sum is we need to check whether each term divides n and then count the cases "
    "let me verify this with code because the pattern might break for large values note "
    "that `x` is an int <b> and a < b while f(x) = x**2 🙂 étude"
)
WORDS = PROSE.split()
CODE_LINES = [
    "import math",
    "total = 0",
    "for i in range(1, 100):",
    "    if i % 3 == 0 or i % 5 == 0:",
    "        total += i",
    "print(total)",
    's = "```"  # backticks in a string',
    "data = {k: math.sqrt(k) for k in range(10)}",
    "print(sorted(data.items())[:3])",
]


def trace_text(size: int, seed: int = 0) -> str:
    """Model text as a reasoner writes it: thinking prose with python blocks, then an answer.

    Only model text: the spliced output blocks never reach the parser.
    """
    rng = random.Random(seed)
    parts = ["<think>\n"]
    length = len(parts[0])
    while length < size:
        sentences = [" ".join(rng.choices(WORDS, k=rng.randint(6, 20))) + "." for _ in range(4)]
        part = " ".join(sentences) + "\n\n"
        roll = rng.random()
        if roll < 0.5:
            lines = rng.choices(CODE_LINES, k=rng.randint(2, 8))
            part += "```python\n" + "\n".join(lines) + "\n```\n"
        elif roll < 0.55:
            part += "```text\n```python\nnot run\n```\n"
        length += len(part)
        parts.append(part)
    ending = "</think>\n<answer>42</answer>"
    return ("".join(parts))[: size - len(ending)] + ending


class EndswithDetector:
    """The naive detector: append each delta to one buffer, test its end, search back for the fence.

    State lives on the object between deltas, as in a streaming callback; CPython cannot grow an
    attribute string in place, so every delta copies the buffer.
    """

    def __init__(self) -> None:
        self.buffer = ""
        self.done_upto = 0
        self.blocks = 0

    def feed(self, delta: str) -> None:
        self.buffer += delta
        start = self.buffer.rfind("```python")
        if start >= self.done_upto and self.buffer.endswith("```\n"):
            _code = self.buffer[start + len("```python\n") : -4]
            self.done_upto = len(self.buffer)
            self.blocks += 1


def run_parser(text: str) -> tuple[float, int]:
    """Seconds to feed ``text`` char by char (resuming at each pause), and blocks that ran."""
    parser = StreamParser(start_section=None)
    runs = 0
    begin = time.perf_counter()
    for ch in text:
        for event in parser.feed(ch):
            if isinstance(event, CodeEnd) and event.runs:
                runs += 1
        if parser.paused:
            parser.resume()
    parser.finish()
    return time.perf_counter() - begin, runs


def run_baseline(text: str) -> tuple[float, int]:
    """Seconds to feed ``text`` char by char to the naive detector, and blocks it found."""
    detector = EndswithDetector()
    begin = time.perf_counter()
    for ch in text:
        detector.feed(ch)
    return time.perf_counter() - begin, detector.blocks


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    quick = cli.parse_args().quick
    parser_sizes = [MB // 10, MB] if quick else [MB // 10, MB, 10 * MB]
    baseline_sizes = [MB // 20, MB // 10] if quick else [MB // 10, MB]
    runs = {
        "StreamParser": (run_parser, parser_sizes),
        "endswith on whole buffer": (run_baseline, baseline_sizes),
    }

    print("| detector | size (MB) | seconds | MB/s | blocks it would run |")
    print("|---|---:|---:|---:|---:|")
    seconds: dict[tuple[str, int], float] = {}
    for name, (run, sizes) in runs.items():
        for size in sizes:
            took, blocks = run(trace_text(size))
            seconds[name, size] = took
            print(f"| {name} | {size / MB:g} | {took:.2f} | {size / MB / took:.2f} | {blocks} |")

    print()
    for name, (_, sizes) in runs.items():
        small, big = sizes[-2], sizes[-1]
        print(
            f"- {name}: time ratio {big / MB:g} MB / {small / MB:g} MB = "
            f"{seconds[name, big] / seconds[name, small]:.1f} (size ratio {big / small:g})"
        )
    for size in sorted(set(parser_sizes) & set(baseline_sizes)):
        ratio = seconds["endswith on whole buffer", size] / seconds["StreamParser", size]
        print(f"- at {size / MB:g} MB the baseline takes {ratio:.1f}× the StreamParser's time")
    print("- the baseline's extra blocks are ```python lines inside ```text examples (not code)")


if __name__ == "__main__":
    main()
