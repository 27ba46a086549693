"""Rewards: plain functions ``(trace, task) -> float`` and a weighted sum of them.

Each built-in function reads only the finished ``Trace`` (and the task's reference where it needs
one), so a reward can be checked by hand on any saved trace. ``Rewards({"correct": 1.0,
"format": 0.1, my_function: 0.5})`` combines names and callables with weights and reports every
part, so the training metrics show which term moved.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kernel_bridge.training.tasks import TaskError

if TYPE_CHECKING:
    from kernel_bridge.trace import Trace
    from kernel_bridge.training.tasks import Task

RewardFn = Callable[["Trace", "Task | None"], float]

_NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_WRAPPERS_RE = re.compile(r"^(?:\\boxed\{(.*)\}|\*\*(.*)\*\*|`(.*)`|\"(.*)\"|'(.*)')$", re.DOTALL)


# -- reading an answer ---------------------------------------------------------------------------


def parse_number(text: str | None) -> int | float | None:
    """The last number in ``text`` (thousands separators allowed), or None.

    An integer literal stays an ``int``, so 18-digit answers compare exactly.
    """
    if not text:
        return None
    found = _NUMBER_RE.findall(text)
    if not found:
        return None
    literal = found[-1].replace(",", "")
    try:
        return int(literal) if literal.lstrip("+-").isdigit() else float(literal)
    except ValueError:  # pragma: no cover - the pattern only matches numbers
        return None


def normalize(text: str) -> str:
    """Lower case, without surrounding blanks, a final period, or wrappers (``\\boxed{}``, ``**``,
    quotes)."""
    text = " ".join(text.split()).strip()
    while True:
        text = text.rstrip(".").strip()
        match = _WRAPPERS_RE.match(text)
        if not match:
            return text.casefold()
        text = next(g for g in match.groups() if g is not None).strip()


def parse_items(text: str) -> list[str]:
    """Items of a written list: ``[1, 2, 3]``, ``1, 2 and 3``, ``a; b`` or one per line."""
    text = text.strip().strip("[](){}")
    parts = re.split(r",|;|\n|\band\b", text)
    return [normalize(p.strip().strip("[](){}")) for p in parts if p.strip().strip("[](){}")]


def answer_matches(answer: str | None, task: Task) -> bool:
    """Whether ``answer`` (a trace's final answer text) matches the task's reference."""
    if answer is None:
        return False
    expected = task.answer
    if task.match == "numeric":
        got = parse_number(answer)
        if got is None or not math.isfinite(got):
            return False
        if isinstance(got, int) and isinstance(expected, int):
            return abs(got - expected) <= task.tolerance  # exact integer arithmetic
        # Floats: the tolerance, plus a hair for decimal-to-binary rounding of the reference.
        return abs(got - expected) <= task.tolerance + 1e-9 * max(1.0, abs(expected))
    if task.match in ("set", "list"):
        items = parse_items(answer)
        want = [normalize(str(x)) for x in expected]
        if all(_is_number(x) for x in want):  # compare numbers as numbers: "2.0" == "2"
            if not all(_is_number(x) for x in items):
                return False
            items = [_canonical_number(x) for x in items]
            want = [_canonical_number(x) for x in want]
        if task.match == "set":
            return len(items) == len(want) and set(items) == set(want)
        return items == want
    return normalize(answer) == normalize(str(expected))


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def _canonical_number(text: str) -> str:
    value = float(text.replace(",", ""))
    return str(int(value)) if value.is_integer() else repr(value)


# -- the built-in reward functions ---------------------------------------------------------------


def correct(trace: Trace, task: Task | None = None) -> float:
    """1 when the final answer matches the task's reference (exact, numeric, set or list)."""
    if task is None or task.answer is None:
        raise TaskError(
            "the 'correct' reward needs a task with a reference answer; traces loaded without "
            "one can use 'human' or 'format' instead"
        )
    return 1.0 if _given_answer(trace) and answer_matches(trace.answer, task) else 0.0


def _given_answer(trace: Trace) -> bool:
    """The model ended its turn with an answer. Traces written before ``no_answer`` existed may
    hold cut-off text as the answer of an interrupted or limited run: that is no answer."""
    return trace.finish_reason == "answer" and bool(trace.answer)


def answer_format(trace: Trace, task: Task | None = None) -> float:
    """1 when the run ended with an answer written in the answer section (``<answer>…``)."""
    if not _given_answer(trace):
        return 0.0
    for segment in trace.segments:
        if segment.spans is None:  # a trace without spans: look at the text
            if "<answer>" in segment.text:
                return 1.0
            continue
        if any(span.kind == "answer" for span in segment.spans):
            return 1.0
    return 0.0


def tool_errors(trace: Trace, task: Task | None = None) -> float:
    """Minus the share of code blocks that failed (error, timeout, died); 0 without blocks."""
    if not trace.steps:
        return 0.0
    failed = sum(step.status != "ok" for step in trace.steps)
    return -failed / len(trace.steps)


def used_code(trace: Trace, task: Task | None = None) -> float:
    """1 when at least one code block ran (a nudge toward using the kernel)."""
    return 1.0 if trace.steps else 0.0


def code_steps(trace: Trace, task: Task | None = None) -> float:
    """Minus the number of code blocks that ran: with weight w, each block costs w."""
    return -float(len(trace.steps))


def length(trace: Trace, task: Task | None = None) -> float:
    """Minus the model tokens in thousands: with weight w, every 1,000 tokens cost w."""
    return -trace.usage.model_tokens / 1000


def overlong(trace: Trace, task: Task | None = None) -> float:
    """-1 when a limit ended the run (max_tokens, max_steps, time_limit), else 0."""
    return -1.0 if trace.finish_reason in ("max_tokens", "max_steps", "time_limit") else 0.0


def human(trace: Trace, task: Task | None = None) -> float:
    """A label from the sidebar: +1 for 👍 (``rating: "up"``), -1 for 👎, 0 without one."""
    rating = trace.labels.get("rating")
    return {"up": 1.0, "down": -1.0}.get(rating, 0.0) if isinstance(rating, str) else 0.0


REWARDS: dict[str, RewardFn] = {
    "correct": correct,
    "format": answer_format,
    "tool_errors": tool_errors,
    "used_code": used_code,
    "code_steps": code_steps,
    "length": length,
    "overlong": overlong,
    "human": human,
}


# -- combining -----------------------------------------------------------------------------------


@dataclass
class RewardResult:
    """The weighted total and each unweighted part, by name."""

    total: float
    parts: dict[str, float] = field(default_factory=dict)


class Rewards:
    """A weighted sum of reward functions; keys are built-in names or ``(trace, task)`` callables.

    ``Rewards({"correct": 1.0, "format": 0.1})(trace, task).total`` is ``correct + 0.1 * format``.
    """

    def __init__(self, weights: Mapping[Any, float]) -> None:
        if not weights:
            raise ValueError("Rewards needs at least one reward function and its weight")
        self.terms: list[tuple[str, RewardFn, float]] = []
        for key, weight in weights.items():
            if isinstance(key, str):
                if key not in REWARDS:
                    raise ValueError(
                        f"no reward function named {key!r}; built-in: {', '.join(REWARDS)}"
                    )
                self.terms.append((key, REWARDS[key], float(weight)))
            elif callable(key):
                self.terms.append((getattr(key, "__name__", repr(key)), key, float(weight)))
            else:
                raise TypeError(f"a reward is a name or a callable, got {key!r}")

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.terms]

    def __call__(self, trace: Trace, task: Task | None = None) -> RewardResult:
        parts = {name: float(fn(trace, task)) for name, fn, _ in self.terms}
        total = sum(weight * parts[name] for name, _, weight in self.terms)
        return RewardResult(total, parts)

    def __repr__(self) -> str:
        return f"Rewards({ {name: weight for name, _, weight in self.terms} })"


def as_rewards(spec: Rewards | Mapping[Any, float] | RewardFn) -> Rewards:
    """A ``Rewards`` from itself, a mapping of weights, or a single function (weight 1)."""
    if isinstance(spec, Rewards):
        return spec
    if callable(spec):
        return Rewards({spec: 1.0})
    return Rewards(spec)


__all__ = [
    "REWARDS",
    "RewardResult",
    "Rewards",
    "answer_format",
    "answer_matches",
    "as_rewards",
    "code_steps",
    "correct",
    "human",
    "length",
    "normalize",
    "overlong",
    "parse_items",
    "parse_number",
    "tool_errors",
    "used_code",
]
