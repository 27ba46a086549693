"""Held-out evaluation: greedy runs of every task through the Reasoner, and models side by side.

``evaluate_sampler`` runs each task once (greedy), with a fresh kernel per run, and scores the
traces; ``compare`` does that for several model strings in one run (same tasks, same limits, same
kernels) and ``comparison_table`` prints them next to each other — the before/after table of a
training run is ``kernel-bridge eval --model local-base --model local``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kernel_bridge.trace import Trace, TraceStore
from kernel_bridge.training.rewards import Rewards
from kernel_bridge.training.rollout import Rollout, RolloutSettings, collect_rollouts
from kernel_bridge.training.tasks import Task

NAN = float("nan")

# The rows of the comparison table, in order; tierN_correct rows follow "correct".
TABLE_ROWS = (
    ("correct", "solved"),
    ("answered", "answered"),
    ("tool_use", "ran code"),
    ("code_steps", "blocks per run"),
    ("tool_error_rate", "blocks that failed"),
    ("errors_fixed", "fixed after a traceback"),
    ("model_tokens", "model tokens per run"),
)


def rollout_metrics(rollouts: Sequence[Rollout]) -> dict[str, float]:
    """Reward, its parts, tool use and token counts of a set of rollouts."""
    traces = [r.trace for r in rollouts]
    totals = [r.reward.total for r in rollouts if r.reward is not None]
    metrics: dict[str, float] = {
        "reward": _mean(totals),
        "reward_std": statistics.pstdev(totals) if len(totals) > 1 else 0.0,
    }
    for name in rollouts[0].reward.parts if rollouts and rollouts[0].reward else ():
        metrics[name] = _mean([r.reward.parts[name] for r in rollouts if r.reward])
    steps = [s for t in traces for s in t.steps]
    metrics["tool_use"] = _mean([1.0 if t.steps else 0.0 for t in traces])
    metrics["code_steps"] = _mean([len(t.steps) for t in traces])
    metrics["tool_error_rate"] = _mean([s.status != "ok" for s in steps]) if steps else 0.0
    # Of the runs where a block failed, the share where a later block then ran cleanly.
    failed = [t for t in traces if any(s.status != "ok" for s in t.steps)]
    metrics["errors_fixed"] = _mean([_fixed_after_error(t) for t in failed])
    metrics["answered"] = _mean([t.finish_reason == "answer" for t in traces])
    metrics["model_tokens"] = _mean([t.usage.model_tokens for t in traces])
    metrics["model_tokens_total"] = sum(t.usage.model_tokens for t in traces)
    metrics["tool_tokens"] = _mean([t.usage.tool_tokens for t in traces])
    metrics["sampling_s"] = sum(t.timings.get("sampling_s", 0.0) for t in traces)
    metrics["kernel_s"] = sum(t.timings.get("kernel_s", 0.0) for t in traces)
    groups: dict[int, list[float]] = {}
    for rollout in rollouts:
        if rollout.reward is not None:
            groups.setdefault(rollout.group, []).append(rollout.reward.total)
    metrics["groups_with_signal"] = _mean([len(set(g)) > 1 for g in groups.values()])
    return metrics


async def evaluate_sampler(
    sampler: Any,
    tasks: Sequence[Task],
    pool: Any,
    settings: RolloutSettings,
    rewards: Rewards,
) -> tuple[dict[str, Any], list[Rollout]]:
    """One run of every task with ``sampler`` (greedy for an evaluation); metrics and rollouts.

    ``correct`` is the share of tasks solved; ``tierN_correct`` the same per tier.
    """
    begin = time.perf_counter()
    rollouts = await collect_rollouts(sampler, pool, tasks, 1, settings)
    for rollout in rollouts:
        rollout.reward = rewards(rollout.trace, rollout.task)
        rollout.trace.reward = rollout.reward.total
    metrics: dict[str, Any] = {"tasks": len(tasks), **rollout_metrics(rollouts)}
    metrics["eval_s"] = time.perf_counter() - begin
    for tier in sorted({r.task.tier for r in rollouts if r.task}):
        of_tier = [r for r in rollouts if r.task and r.task.tier == tier]
        metrics[f"tier{tier}_correct"] = _mean(
            [r.reward.parts.get("correct", NAN) for r in of_tier if r.reward]
        )
    return metrics, rollouts


def greedy_sampler(model: str, max_tokens: int, batch: int = 32) -> Any:
    """The sampler of a model string, decoding greedily. The embedded model (``local``,
    ``local-base``, ``local:PATH``) runs in int8 with every run of the evaluation batched."""
    from kernel_bridge.embedded import embedded_adapter, is_embedded, load_embedded
    from kernel_bridge.samplers import make_sampler

    if is_embedded(model):
        from kernel_bridge.samplers.batched import BatchedSampler
        from kernel_bridge.samplers.transformers import GenerationConfig

        weights, tokenizer = load_embedded(adapter=embedded_adapter(model))
        greedy = GenerationConfig(temperature=0.0, max_new_tokens=max_tokens)
        return BatchedSampler(weights, tokenizer, config=greedy, name=model, max_batch=batch)
    return make_sampler(model)


async def compare(
    models: Sequence[str],
    tasks: Sequence[Task],
    settings: RolloutSettings,
    rewards: Rewards,
    *,
    pool_size: int = 4,
    out_dir: str | Path | None = None,
    batch: int = 32,
) -> dict[str, dict[str, Any]]:
    """Evaluate every model string on the same tasks, one model after the other; metrics by
    model. ``out_dir`` gets every trace (``eval_traces.jsonl``, the model in each)."""
    from kernel_bridge.embedded import is_embedded
    from kernel_bridge.execution import KernelPool

    results: dict[str, dict[str, Any]] = {}
    async with KernelPool(pool_size, **settings.kernel_options()) as pool:
        for model in models:
            sampler = greedy_sampler(model, settings.limits.max_tokens, batch)
            # A run starts when it gets a row of the batch, so waiting is not counted against
            # its time limit.
            limited = dataclasses.replace(settings, concurrency=batch if is_embedded(model) else 0)
            metrics, rollouts = await evaluate_sampler(sampler, tasks, pool, limited, rewards)
            results[model] = metrics
            if out_dir is not None:
                store = TraceStore(Path(out_dir) / "eval_traces.jsonl")
                for rollout in rollouts:
                    store.append(rollout.trace)
            del sampler
    return results


def comparison_table(results: dict[str, dict[str, Any]]) -> str:
    """A markdown table: one row per metric, one column per model (and the change, for two)."""
    models = list(results)
    first = results[models[0]]
    tiers = sorted(k for k in first if k.startswith("tier") and k.endswith("_correct"))
    rows = [TABLE_ROWS[0], *((t, f"solved, tier {t[4:-8]}") for t in tiers), *TABLE_ROWS[1:]]
    head = ["", *models] + (["change"] if len(models) == 2 else [])
    lines = [
        f"{first['tasks']} tasks, greedy",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" + "---:|" * (len(head) - 1),
    ]
    for key, label in rows:
        values = [results[m].get(key, NAN) for m in models]
        cells = [_cell(v) for v in values]
        if len(models) == 2:
            change = values[1] - values[0]
            cells.append("–" if math.isnan(change) else f"{change:+.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: float) -> str:
    return "–" if isinstance(value, float) and math.isnan(value) else f"{value:.3f}"


def _fixed_after_error(trace: Trace) -> float:
    first = next(i for i, s in enumerate(trace.steps) if s.status != "ok")
    return float(any(s.status == "ok" for s in trace.steps[first + 1 :]))


def _mean(values: Sequence[float]) -> float:
    values = [float(v) for v in values if not math.isnan(float(v))]
    return statistics.fmean(values) if values else NAN
