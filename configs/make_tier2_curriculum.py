"""Write configs/tier2-curriculum.jsonl: the tasks of stage two (configs/cpu-0.5b-tier2.toml).

Every built-in tier-2 task, as it is (its 4 training and 6 held-out instances per template), plus
each training instance of the five templates the first stage never solved once more, with one
sentence that names the step the model kept getting wrong (the k-th prime is not k; the largest
value, not the last; every square divisor, not the square root; ...). Those hinted questions are
training tasks only: every held-out task is a built-in one, word for word, so the evaluation asks
exactly what the first stage was evaluated on.

Also configs/tier2-guided.jsonl, the tasks of the guided run (configs/cpu-0.5b-guided.toml): the
same, but each hinted instance keeps its question word for word and carries the sentence as its
``hint``. A rollout is asked the question with the hint; the update trains its completion after the
question alone (``Task.hint``), so what is learnt is not tied to a hint that evaluation never gives.

    python configs/make_tier2_curriculum.py
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kernel_bridge.training.tasks import builtin_tasks, write_tasks

HINTS = {
    "prime_digits": "p is the k-th prime, not k: collect primes (2, 3, 5, ...) until there are k "
    "of them, take the last one as p, then add up the digits of p ** 3.",
    "divisor_fibonacci": "k = len([d for d in range(1, n + 1) if n % d == 0]); then start from "
    "a, b = 1, 1 and step forward until you reach the k-th number.",
    "square_divisors": "Keep every divisor d (n % d == 0) with math.isqrt(d) ** 2 == d (import "
    "math first) and answer with all of them.",
    "collatz_peak": "Keep the maximum of every value along the way (peak = max(peak, n) inside "
    "the loop) and print the maximum, not the final 1.",
    "weekday_after": "Import both names: from datetime import date, timedelta; then "
    "(date(y, m, d) + timedelta(days=n)).strftime('%A').",
}


def curriculum() -> list:
    tasks = builtin_tasks([2])
    hinted = [
        dataclasses.replace(
            task, id=f"{task.id}-hint", question=f"{task.question} Hint: {HINTS[template]}"
        )
        for task in tasks
        if task.split == "train" and (template := task.id.split("-")[1]) in HINTS
    ]
    return tasks + hinted


def guided() -> list:
    tasks = builtin_tasks([2])
    hinted = [
        dataclasses.replace(task, id=f"{task.id}-guided", hint=HINTS[template])
        for task in tasks
        if task.split == "train" and (template := task.id.split("-")[1]) in HINTS
    ]
    return tasks + hinted


if __name__ == "__main__":
    for name, tasks in (("tier2-curriculum.jsonl", curriculum()), ("tier2-guided.jsonl", guided())):
        out = Path(__file__).with_name(name)
        write_tasks(tasks, out)
        print(f"{out}: {len(tasks)} tasks ({sum(t.split == 'heldout' for t in tasks)} held out)")
