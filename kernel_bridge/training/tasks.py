"""Tasks with checkable answers: a built-in set in four tiers, and a JSONL loader for your own.

Tiers of the built-in set (every reference answer is computed here, in Python):

1. a single computation (big products, modular powers, prime counts, date differences, …);
2. several dependent steps (a prime, then a property of it; a list or a set as the answer);
3. data analysis of the bundled market data (monthly closes of AAPL, AMZN, GOOG, IBM, MSFT,
   2000–2010, from vega-datasets) through the finance tools, with a cutoff date;
4. multi-step research over the same data (correlations, drawdowns, portfolios).

Every template has training instances and held-out instances with other numbers (``split``).
Tiers 3 and 4 need ``vega_datasets`` for their references and the finance toolset in the kernel.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import math
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

from kernel_bridge.errors import UserError

Match = Literal["exact", "numeric", "set", "list"]
Split = Literal["train", "heldout"]
MATCHES = ("exact", "numeric", "set", "list")
TICKERS = ("AAPL", "AMZN", "GOOG", "IBM", "MSFT")


class TaskError(UserError, ValueError):
    """A task (or a line of a task file) that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Task:
    """A question with a reference answer and how to compare an answer with it.

    ``match``: ``exact`` (normalized text), ``numeric`` (the last number of the answer, within
    ``tolerance``), ``set`` or ``list`` (items, any order or in order). ``tools`` names a toolset
    (``"finance"``) the kernel gets for this task, with data only up to ``cutoff``.

    ``hint``: a guided task. Its rollouts are asked ``question`` with the hint after it (``asked``),
    so a model that never solves the task alone finds a solution; the update trains each
    rollout's completion after the plain ``question`` (``training.batch.training_example``), so
    what the policy learns does not wait for a hint. Evaluation never gives one.
    """

    id: str
    question: str
    answer: Any
    match: Match = "exact"
    tolerance: float = 0.0
    tier: int = 1
    split: Split = "train"
    tools: str | None = None
    cutoff: str | None = None
    hint: str | None = None

    @property
    def asked(self) -> str:
        """What a rollout is asked: the question, and the hint after it if there is one."""
        return f"{self.question} Hint: {self.hint}" if self.hint else self.question

    def __post_init__(self) -> None:
        if not self.id or not isinstance(self.id, str):
            raise TaskError(f"a task needs a non-empty string id, got {self.id!r}")
        if not isinstance(self.question, str) or not self.question.strip():
            raise TaskError(f"task {self.id!r}: the question must be non-empty text")
        if self.match not in MATCHES:
            raise TaskError(
                f"task {self.id!r}: match must be one of {', '.join(MATCHES)}, got {self.match!r}"
            )
        if self.match == "numeric" and not _is_number(self.answer):
            raise TaskError(
                f"task {self.id!r}: a numeric task needs a number as its answer, got "
                f"{self.answer!r}"
            )
        if self.match in ("set", "list") and not isinstance(self.answer, (list, tuple)):
            raise TaskError(
                f"task {self.id!r}: a {self.match} task needs a JSON list as its answer, got "
                f"{self.answer!r}"
            )
        if self.match == "exact" and not isinstance(self.answer, (str, int, float)):
            raise TaskError(
                f"task {self.id!r}: an exact task needs a string or number answer, got "
                f"{self.answer!r}"
            )
        if not _is_number(self.tolerance) or self.tolerance < 0:
            raise TaskError(f"task {self.id!r}: tolerance must be a number ≥ 0")
        if self.hint is not None and (not isinstance(self.hint, str) or not self.hint.strip()):
            raise TaskError(f"task {self.id!r}: a hint must be non-empty text")
        if self.hint is not None and self.split == "heldout":
            raise TaskError(f"task {self.id!r}: a held-out task takes no hint (it is evaluated)")
        if self.split not in ("train", "heldout"):
            raise TaskError(f"task {self.id!r}: split must be 'train' or 'heldout'")
        if self.cutoff is not None:
            try:
                date.fromisoformat(self.cutoff)
            except (TypeError, ValueError):
                raise TaskError(
                    f"task {self.id!r}: cutoff must be a date YYYY-MM-DD, got {self.cutoff!r}"
                ) from None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["hint"] is None:  # most tasks have none; their lines stay as they were
            del data["hint"]
        return data


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- loading -------------------------------------------------------------------------------------

_FIELDS = (
    "id",
    "question",
    "answer",
    "match",
    "tolerance",
    "tier",
    "split",
    "tools",
    "cutoff",
    "hint",
)


def load_tasks(path: str | os.PathLike[str]) -> list[Task]:
    """Tasks from a JSONL file: one object per line with ``question`` and ``answer`` at least.

    Optional keys: ``id`` (default ``<file stem>-<line>``), ``match`` (default ``numeric`` for a
    number, ``list`` for a list, else ``exact``), ``tolerance``, ``tier``, ``split``
    (``train``/``heldout``), ``tools``, ``cutoff``, ``hint`` (training tasks only). Blank lines
    and lines starting with ``//`` are skipped.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise TaskError(f"cannot read the task file {path}: {e.strerror or e}") from None
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        where = f"{path}, line {number}"
        try:
            data = json.loads(line)
        except ValueError as e:
            raise TaskError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise TaskError(f"{where}: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise TaskError(
                f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; a task has "
                f"{', '.join(_FIELDS)}"
            )
        for key in ("question", "answer"):
            if key not in data:
                raise TaskError(f"{where}: missing {key!r} (each line needs question and answer)")
        data.setdefault("id", f"{path.stem}-{number}")
        if "match" not in data:
            answer = data["answer"]
            data["match"] = (
                "numeric" if _is_number(answer) else "list" if isinstance(answer, list) else "exact"
            )
        try:
            task = Task(**data)
        except TaskError as e:
            raise TaskError(f"{where}: {e}") from None
        except TypeError as e:  # pragma: no cover - unknown keys are caught above
            raise TaskError(f"{where}: {e}") from None
        if task.id in seen:
            raise TaskError(
                f"{where}: duplicate id {task.id!r} (first on line {seen[task.id]}); ids must "
                "be unique"
            )
        seen[task.id] = number
        tasks.append(task)
    if not tasks:
        raise TaskError(f"{path} holds no tasks (one JSON object per line)")
    return tasks


def hold_out(tasks: list[Task], fraction: float) -> list[Task]:
    """Mark a stable ``fraction`` of tasks as held out (by a hash of the id), when none is.

    Tasks that already say which split they are in are returned unchanged. Guided tasks (with a
    hint) are never held out.
    """
    if any(t.split == "heldout" for t in tasks) or fraction <= 0:
        return tasks
    count = min(len(tasks) - 1, math.ceil(len(tasks) * fraction))
    plain = [t for t in tasks if t.hint is None]
    order = sorted(plain, key=lambda t: hashlib.sha256(t.id.encode()).hexdigest())
    held = {t.id for t in order[:count]}
    return [Task(**{**t.to_dict(), "split": "heldout"}) if t.id in held else t for t in tasks]


def split_tasks(tasks: Iterable[Task]) -> tuple[list[Task], list[Task]]:
    """(training tasks, held-out tasks)."""
    tasks = list(tasks)
    return [t for t in tasks if t.split == "train"], [t for t in tasks if t.split == "heldout"]


# -- the built-in set ----------------------------------------------------------------------------


def builtin_tasks(tiers: Iterable[int] = (1, 2, 3, 4)) -> list[Task]:
    """The built-in tasks of the given tiers (references computed here; tiers 3–4 need pandas
    and vega_datasets)."""
    tiers = sorted(set(tiers))
    bad = [t for t in tiers if t not in _TIERS]
    if bad:
        raise TaskError(f"no built-in tier {bad}; the tiers are 1, 2, 3 and 4")
    return [task for tier in tiers for task in _TIERS[tier]()]


def _instances(
    name: str,
    tier: int,
    count: int,
    heldout: int,
    make: Callable[[random.Random], tuple[str, Any, dict[str, Any]]],
) -> list[Task]:
    """``count`` tasks of one template (the last ``heldout`` held out), numbers from a seeded RNG.

    ``make(rng)`` returns (question, answer, other Task fields); repeated questions are drawn again.
    """
    rng = random.Random(f"kernel-bridge/{name}")
    tasks: list[Task] = []
    questions: set[str] = set()
    while len(tasks) < count:
        question, answer, extra = make(rng)
        if question in questions:
            continue
        questions.add(question)
        split: Split = "heldout" if len(tasks) >= count - heldout else "train"
        tasks.append(
            Task(
                id=f"t{tier}-{name}-{len(tasks) + 1}",
                question=question,
                answer=answer,
                tier=tier,
                split=split,
                **extra,
            )
        )
    return tasks


def primes_below(n: int) -> list[int]:
    sieve = bytearray([1]) * max(n, 2)
    sieve[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(n - 1) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, n, i)))
    return [i for i in range(n) if sieve[i]]


def nth_prime(k: int) -> int:
    limit = 64
    while len(found := primes_below(limit)) < k:
        limit *= 2
    return found[k - 1]


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def fibonacci(n: int) -> int:
    a, b = 0, 1  # F(0) = 0, F(1) = 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _digit_sum(n: int) -> int:
    return sum(map(int, str(n)))


NUMERIC: dict[str, Any] = {"match": "numeric"}


def _tier1() -> list[Task]:
    def product(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        a, b = rng.randrange(10**8, 10**9), rng.randrange(10**8, 10**9)
        return f"What is {a} * {b}?", a * b, NUMERIC

    def power_mod(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        a, b, m = rng.randrange(2, 50), rng.randrange(100, 10_000), rng.randrange(97, 10_000)
        return f"What is {a}**{b} mod {m}?", pow(a, b, m), NUMERIC

    def prime_count(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        n = rng.randrange(2_000, 200_000)
        return f"How many prime numbers are there below {n}?", len(primes_below(n)), NUMERIC

    def digit_sum(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        a, b = rng.randrange(2, 10), rng.randrange(50, 400)
        question = f"What is the sum of the decimal digits of {a}**{b}?"
        return question, _digit_sum(a**b), NUMERIC

    def date_difference(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        first = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 25_000))
        second = first + timedelta(days=rng.randrange(100, 20_000))
        question = f"How many days are there from {first} to {second}?"
        return question, (second - first).days, NUMERIC

    def factorial_zeros(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        n = rng.randrange(100, 100_000)
        zeros, power = 0, 5
        while power <= n:
            zeros, power = zeros + n // power, power * 5
        return f"How many trailing zeros does {n}! have?", zeros, NUMERIC

    def square_root(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        n = rng.randrange(1_000, 1_000_000)
        if math.isqrt(n) ** 2 == n:
            n += 1
        question = f"What is the square root of {n}, rounded to 4 decimal places?"
        return question, round(math.sqrt(n), 4), {"match": "numeric", "tolerance": 1e-4}

    makers = [product, power_mod, prime_count, digit_sum, date_difference, factorial_zeros]
    makers.append(square_root)
    # 6 training instances per template; 6 held out (other numbers, same templates).
    return [t for m in makers for t in _instances(m.__name__, 1, 12, 6, m)]


def _tier2() -> list[Task]:
    def prime_digits(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        k = rng.randrange(50, 2_000)
        p = nth_prime(k)
        question = f"Let p be the {k}th prime number. What is the sum of the digits of p**3?"
        return question, _digit_sum(p**3), NUMERIC

    def divisor_fibonacci(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        n = rng.choice([360, 720, 840, 1260, 2520, 5040, 7560, 10080, 4620, 1680, 3600])
        k = len(divisors(n))
        question = (
            f"Let k be the number of positive divisors of {n}. What is the k-th Fibonacci "
            "number, with F(1) = F(2) = 1?"
        )
        return question, fibonacci(k), NUMERIC

    def primes_between(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        a = rng.randrange(100, 5_000)
        b = a + rng.randrange(30, 80)
        found = [p for p in primes_below(b) if p > a]
        question = (
            f"List all prime numbers strictly between {a} and {b}, in increasing order, as a "
            "comma-separated list."
        )
        return question, found, {"match": "list"}

    def square_divisors(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        n = rng.choice([3600, 7200, 14400, 8100, 10800, 32400, 2025, 4900, 17640, 44100, 9801])
        found = [d for d in divisors(n) if math.isqrt(d) ** 2 == d]
        question = f"Which divisors of {n} are perfect squares? Give them as a set, e.g. 1, 4, 9."
        return question, found, {"match": "set"}

    def collatz_peak(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        n = rng.randrange(100, 100_000)
        peak, x = n, n
        while x != 1:
            x = x // 2 if x % 2 == 0 else 3 * x + 1
            peak = max(peak, x)
        question = (
            f"Start from {n} and repeat: halve the number if it is even, else replace it with "
            "3n + 1, until it reaches 1. What is the largest number reached?"
        )
        return question, peak, NUMERIC

    def weekday_after(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        start = date(1900, 1, 1) + timedelta(days=rng.randrange(0, 50_000))
        days = rng.randrange(1_000, 100_000)
        weekday = calendar.day_name[(start + timedelta(days=days)).weekday()]
        question = (
            f"What day of the week is it {days} days after {start}? Answer with the day's name."
        )
        return question, weekday, {"match": "exact"}

    makers = [
        prime_digits,
        divisor_fibonacci,
        primes_between,
        square_divisors,
        collatz_peak,
        weekday_after,
    ]
    # 4 training instances per template; 6 held out (other numbers, same templates).
    return [t for m in makers for t in _instances(m.__name__, 2, 10, 6, m)]


# -- tiers 3 and 4: the bundled market data ------------------------------------------------------

FINANCE_NOTE = (
    "The kernel has a `stock_price(ticker, start, end)` tool with monthly closing prices of "
    "AAPL, AMZN, GOOG, IBM and MSFT; use it."
)


def market_closes() -> Any:
    """Monthly closes as a DataFrame: one row per month (first day), one column per ticker."""
    try:
        from vega_datasets import data
    except ImportError:
        raise TaskError(
            "the market-data tasks (tiers 3 and 4) need vega_datasets: "
            'pip install "kernel-bridge[train]"'
        ) from None
    stocks = data.stocks()
    return stocks.pivot(index="date", columns="symbol", values="price").sort_index()


def _year(closes: Any, ticker: str, year: int) -> Any:
    return closes.loc[str(year), ticker].dropna()


def _tier3() -> list[Task]:
    closes = market_closes()
    years = list(range(2001, 2010))

    def finance(year: int) -> dict[str, Any]:
        return {"tools": "finance", "cutoff": f"{year}-12-31"}

    def highest_close(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        ticker, year = rng.choice(("AAPL", "AMZN", "IBM", "MSFT")), rng.choice(years)
        value = float(_year(closes, ticker, year).max())
        question = f"{FINANCE_NOTE} What was {ticker}'s highest monthly closing price in {year}?"
        return question, value, {"match": "numeric", "tolerance": 0.005, **finance(year)}

    def average_close(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        ticker, year = rng.choice(("AAPL", "AMZN", "IBM", "MSFT")), rng.choice(years)
        value = round(float(_year(closes, ticker, year).mean()), 2)
        question = (
            f"{FINANCE_NOTE} What was {ticker}'s average monthly closing price in {year}, "
            "rounded to 2 decimals?"
        )
        return question, value, {"match": "numeric", "tolerance": 0.011, **finance(year)}

    def yearly_change(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        ticker, year = rng.choice(("AAPL", "AMZN", "IBM", "MSFT")), rng.choice(years)
        series = _year(closes, ticker, year)
        value = round(100 * (float(series.iloc[-1]) / float(series.iloc[0]) - 1), 1)
        question = (
            f"{FINANCE_NOTE} By what percentage did {ticker}'s monthly close change from "
            f"January {year} to December {year}? Answer in percent, rounded to 1 decimal "
            "(e.g. -12.3)."
        )
        return question, value, {"match": "numeric", "tolerance": 0.11, **finance(year)}

    def best_ticker(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        year = rng.choice(years[4:])  # GOOG trades from August 2004
        gains = {
            t: float(_year(closes, t, year).iloc[-1] / _year(closes, t, year).iloc[0])
            for t in TICKERS
        }
        best = max(gains, key=gains.__getitem__)
        question = (
            f"{FINANCE_NOTE} Which of the five tickers had the largest percentage gain from its "
            f"January {year} to its December {year} monthly close? Answer with the ticker."
        )
        return question, best, {"match": "exact", **finance(year)}

    def lowest_month(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        ticker, year = rng.choice(("AAPL", "AMZN", "IBM", "MSFT")), rng.choice(years)
        series = _year(closes, ticker, year)
        month = series.idxmin().strftime("%Y-%m")
        question = (
            f"{FINANCE_NOTE} In which month of {year} was {ticker}'s monthly close the lowest? "
            "Answer as YYYY-MM."
        )
        return question, month, {"match": "exact", **finance(year)}

    makers = [highest_close, average_close, yearly_change, best_ticker, lowest_month]
    return [t for m in makers for t in _instances(m.__name__, 3, 5, 1, m)]


def _tier4() -> list[Task]:
    closes = market_closes()
    four = ["AAPL", "AMZN", "IBM", "MSFT"]

    def window(rng: random.Random) -> tuple[int, int]:
        first = rng.randrange(2001, 2008)
        return first, rng.randrange(first + 1, 2010)

    def finance(last: int) -> dict[str, Any]:
        return {"tools": "finance", "cutoff": f"{last}-12-31"}

    def correlation(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        a, b = rng.sample(four, 2)
        first, last = window(rng)
        returns = closes.loc[str(first) : str(last), [a, b]].pct_change().dropna()
        value = round(float(returns[a].corr(returns[b])), 2)
        question = (
            f"{FINANCE_NOTE} Using the monthly closes from January {first} to December {last}, "
            f"compute the month-over-month returns of {a} and {b}. What is the correlation of "
            "the two return series, rounded to 2 decimals?"
        )
        return question, value, {"match": "numeric", "tolerance": 0.011, **finance(last)}

    def drawdown(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        ticker = rng.choice(four)
        first, last = window(rng)
        series = closes.loc[str(first) : str(last), ticker]
        value = round(float(100 * (1 - series / series.cummax()).max()), 1)
        question = (
            f"{FINANCE_NOTE} What was {ticker}'s maximum drawdown (the largest fall from a "
            f"previous peak, in percent) over its monthly closes from January {first} to "
            f"December {last}? Round to 1 decimal."
        )
        return question, value, {"match": "numeric", "tolerance": 0.11, **finance(last)}

    def portfolio(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        first, last = window(rng)
        start = closes.loc[f"{first}-01-01", four]
        end = closes.loc[f"{last}-12-01", four]
        value = round(float((250 * end / start).sum()))
        question = (
            f"{FINANCE_NOTE} You invest $1000 split equally among AAPL, AMZN, IBM and MSFT at "
            f"their January {first} monthly close and hold until the December {last} close. "
            "What is the portfolio worth then, rounded to the dollar?"
        )
        return question, value, {"match": "numeric", "tolerance": 1.01, **finance(last)}

    def most_volatile(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
        first, last = window(rng)
        stdev = closes.loc[str(first) : str(last), four].pct_change().dropna().std()
        question = (
            f"{FINANCE_NOTE} Of AAPL, AMZN, IBM and MSFT, which had the most volatile "
            f"month-over-month returns (largest standard deviation) from January {first} to "
            f"December {last}? Answer with the ticker."
        )
        return question, str(stdev.idxmax()), {"match": "exact", **finance(last)}

    makers = [correlation, drawdown, portfolio, most_volatile]
    return [t for m in makers for t in _instances(m.__name__, 4, 4, 1, m)]


_TIERS: dict[int, Callable[[], list[Task]]] = {1: _tier1, 2: _tier2, 3: _tier3, 4: _tier4}


def write_tasks(tasks: Iterable[Task], path: str | os.PathLike[str]) -> None:
    """Write tasks as JSONL, the format ``load_tasks`` reads."""
    with open(path, "w", encoding="utf-8") as f:
        for task in tasks:
            f.write(json.dumps(task.to_dict(), ensure_ascii=False) + "\n")
