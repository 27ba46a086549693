"""What a training run reports: each step's metrics, the reporters that write them, a progress bar.

A step's metrics are one line of ``out_dir/metrics.jsonl`` (NaN and infinities written as null),
and go to TensorBoard or W&B when ``report_to`` names them.
"""

from __future__ import annotations

import json
import math
import resource
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from kernel_bridge.training.config import ConfigError, TrainConfig
from kernel_bridge.training.evaluate import rollout_metrics
from kernel_bridge.training.rollout import Rollout


def step_metrics(
    step: int,
    rollouts: Sequence[Rollout],
    update: Mapping[str, float],
    *,
    rollout_s: float,
    update_s: float,
    step_s: float,
    device: torch.device,
    generated: bool,
) -> dict[str, Any]:
    """One step's metrics: its rollouts' (reward, its parts, tool use, tokens), the update's
    (loss, logprob check, …), times, throughput and peak memory. ``generated``: the rollouts
    were sampled this step (not recorded traces), so generation throughput means something."""
    metrics = {
        "step": step,
        **rollout_metrics(rollouts),
        **update,
        "rollout_s": rollout_s,
        "update_s": update_s,
        "step_s": step_s,
        "update_tokens_per_s": update["update_tokens"] / update_s if update_s else 0.0,
        "peak_memory_mb": peak_memory_mb(device),
    }
    if generated:
        metrics["generation_tokens_per_s"] = metrics["model_tokens_total"] / rollout_s
    return metrics


def reset_peak_memory(device: torch.device) -> None:
    """Start this step's GPU peak (a CPU process's peak resident set cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory: allocated on the GPU this step, else the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def jsonable(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """NaN and infinities become null: strict JSON for any reader."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in metrics.items()
    }


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append ``record`` to ``path`` as one line of strict JSON."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(jsonable(record)) + "\n")


class Reporters:
    """Metrics to ``out_dir/metrics.jsonl``, and to TensorBoard or W&B when asked for."""

    def __init__(self, config: TrainConfig, out_dir: Path) -> None:
        self.jsonl = out_dir / "metrics.jsonl" if "jsonl" in config.report_to else None
        self.tensorboard: Any = None
        self.wandb: Any = None
        if "tensorboard" in config.report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("report_to tensorboard needs: pip install tensorboard") from None
            self.tensorboard = SummaryWriter(str(out_dir / "tensorboard"))
        if "wandb" in config.report_to:
            try:
                import wandb
            except ImportError:
                raise ConfigError("report_to wandb needs: pip install wandb") from None
            self.wandb = wandb.init(project="kernel-bridge", config=config.to_dict())

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        step = int(metrics.get("step", 0)) if step is None else step
        if self.jsonl is not None and "step" in metrics:
            append_jsonl(self.jsonl, metrics)
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tensorboard is not None:
            for key, value in numbers.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(numbers, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


class Progress:
    """A tqdm bar over steps showing reward, correctness and tool use (plain lines without tqdm)."""

    def __init__(self, enabled: bool, total: int, initial: int) -> None:
        self.bar: Any = None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=initial, desc="GRPO", unit="step")
            except ImportError:
                self.bar = None

    def update(self, metrics: dict[str, Any]) -> None:
        shown = {
            "reward": f"{metrics['reward']:.3f}",
            "tool_use": f"{metrics['tool_use']:.2f}",
        }
        if "correct" in metrics:
            shown["correct"] = f"{metrics['correct']:.2f}"
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)
        elif self.enabled:
            print(f"step {metrics['step']}: " + " ".join(f"{k} {v}" for k, v in shown.items()))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
