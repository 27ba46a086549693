"""GRPO training on kernel traces: rollouts through the ``Reasoner``, rewards, the update.

    from kernel_bridge.training import Trainer, load_config

    async with Trainer(load_config("configs/smoke.toml")) as trainer:
        await trainer.train()

The pieces, in the order data flows through them: ``tasks`` (questions with checkable answers),
``rollout`` (G runs per task, a fresh kernel each), ``rewards`` (functions of a trace), ``batch``
(traces to padded tensors with the recorded logprobs), ``grpo`` (advantages, the loss, chunked
logprobs), ``trainer`` (the loop, evaluation), ``checkpoints``, ``metrics`` (what a step
reports), ``colocate`` (vLLM on the trainer's GPU). Names are imported lazily, so reading a
config does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigError": "kernel_bridge.training.config",
    "TrainConfig": "kernel_bridge.training.config",
    "load_config": "kernel_bridge.training.config",
    "Task": "kernel_bridge.training.tasks",
    "TaskError": "kernel_bridge.training.tasks",
    "builtin_tasks": "kernel_bridge.training.tasks",
    "load_tasks": "kernel_bridge.training.tasks",
    "split_tasks": "kernel_bridge.training.tasks",
    "Rewards": "kernel_bridge.training.rewards",
    "REWARDS": "kernel_bridge.training.rewards",
    "Rollout": "kernel_bridge.training.rollout",
    "RolloutSettings": "kernel_bridge.training.rollout",
    "collect_rollouts": "kernel_bridge.training.rollout",
    "group_advantages": "kernel_bridge.training.grpo",
    "grpo_loss": "kernel_bridge.training.grpo",
    "token_logprobs": "kernel_bridge.training.grpo",
    "load_policy": "kernel_bridge.training.policy",
    "tiny_policy": "kernel_bridge.training.policy",
    "Trainer": "kernel_bridge.training.trainer",
    "run": "kernel_bridge.training.trainer",
    "run_eval": "kernel_bridge.training.trainer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kernel_bridge.training' has no attribute {name!r}")
