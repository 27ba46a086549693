"""``TrainConfig``: every setting of a GRPO run in one dataclass, loadable from a TOML file.

A TOML file holds the same names as the dataclass, flat (``group_size = 8``), plus an optional
``[rewards]`` table of weights. Unknown keys, wrong types and impossible values are errors that
name the file, the key and what to write instead; nothing is guessed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernel_bridge.errors import UserError


class ConfigError(UserError, ValueError):
    """A training configuration that cannot be used; the message says which key and why."""


@dataclass
class TrainConfig:
    """A GRPO run: the policy, the tasks, the rollouts, the rewards, the update, the bookkeeping."""

    # -- the policy --------------------------------------------------------------------------
    # "local" (the embedded Qwen2.5-Coder-0.5B, float weights), "hf:ID_OR_PATH", or "tiny"
    # (a random 2-layer Qwen2 with a character tokenizer, built from a config: tests, smoke runs).
    model: str = "local"
    dtype: str = "auto"  # "auto": float32 on CPU, bfloat16 on GPU; or a torch dtype name
    device: str = "auto"  # "auto": cuda when available, else cpu
    lora: bool = False  # train LoRA adapters (peft) instead of every weight
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target: str = "all-linear"
    # Start the LoRA weights from a trained adapter instead of zero: an adapter file, a checkpoint
    # directory or a run's out_dir, of the same rank, alpha and targets (a second stage of a run,
    # with a fresh optimizer; the result is still one adapter on the untouched model).
    lora_init: str = ""
    gradient_checkpointing: bool = False

    # -- tasks -------------------------------------------------------------------------------
    tasks: str = "builtin"  # "builtin" or a .jsonl file of tasks (see docs/training.md)
    tiers: list[int] = field(default_factory=lambda: [1, 2])  # built-in tiers to use
    heldout_fraction: float = 0.2  # share held out of a JSONL without "split" fields
    traces: str = ""  # a .jsonl of recorded traces: train on them instead of new rollouts

    # -- rollouts ----------------------------------------------------------------------------
    backend: str = "auto"  # "transformers", "vllm" (colocated, GPU), or "auto"
    group_size: int = 8  # completions per prompt (G)
    prompts_per_step: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 1024  # model tokens per rollout
    max_code_steps: int = 8  # code blocks per rollout
    step_timeout: float = 10.0  # seconds per code block
    rollout_time_limit: float = 1800.0  # wall seconds per rollout; batched, it shares each pass
    pool_size: int = 4  # warm kernels; a rollout takes a fresh one when its first block runs
    # Rollouts on the transformers backend: up to rollout_batch streams decoded together in one
    # forward pass (0: one stream at a time); "int8" generates with an int8 copy of the current
    # weights (LoRA merged, re-packed after each update; CPU), "trainer" with the trainer's own
    # weights, "auto" int8 on CPU for the real models.
    rollout_batch: int = 32
    rollout_weights: str = "auto"
    profile: str = "markdown"
    system_prompt: str = "default"  # "default" (the protocol + a worked example), "none", or text

    # -- rewards -----------------------------------------------------------------------------
    rewards: dict[str, float] = field(
        default_factory=lambda: {"correct": 1.0, "format": 0.1, "tool_errors": 0.1}
    )

    # -- the update --------------------------------------------------------------------------
    steps: int = 100
    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    updates_per_batch: int = 1  # optimizer steps on one batch of rollouts (μ)
    micro_batch_size: int = 4  # sequences per forward pass
    clip_low: float = 0.2  # ratio clipped to [1 - clip_low, 1 + clip_high]
    clip_high: float = 0.2
    beta: float = 0.0  # weight of the KL penalty to the reference policy
    scale_rewards: bool = True  # divide advantages by the group's standard deviation
    loss_aggregation: str = "token"  # "token" (mean over all model tokens) or "sequence"
    logprob_chunk: int = 512  # positions per chunk of the LM head; 0: the full logits at once
    old_logprobs: str = "sampler"  # "sampler" (recorded, checked) or "trainer"
    logprob_tolerance: float = 0.5  # a trace whose recorded logprobs differ more uses the trainer's
    max_seq_len: int = 4096  # prompt + completion; longer traces are cut at the end
    share_prompt: bool = True  # a micro-batch's common prompt runs once, without gradient

    # -- vLLM (backend = "vllm") -------------------------------------------------------------
    gpu_memory_utilization: float = 0.35
    vllm_sleep: bool = True  # free vLLM's memory during the update

    # -- the run -----------------------------------------------------------------------------
    out_dir: str = "runs/grpo"
    seed: int = 0
    save_every: int = 50  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 2
    eval_every: int = 0  # steps between held-out evaluations (0: none)
    eval_max_tasks: int = 0  # 0: every held-out task
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])  # + "tensorboard", "wandb"
    save_rollouts: bool = True  # every rollout's trace to out_dir/rollouts.jsonl
    resume: bool = False  # continue from the latest checkpoint in out_dir
    progress: bool = True  # a progress bar (tqdm)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check values that no type can express; raises ``ConfigError`` naming the key."""
        for name, value in [
            *((f.name, getattr(self, f.name)) for f in dataclasses.fields(self)),
            *((f"rewards.{k}", v) for k, v in self.rewards.items()),
        ]:
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value}")
        positive = ("group_size", "prompts_per_step", "max_tokens", "max_code_steps", "steps")
        for name in (*positive, "micro_batch_size", "pool_size", "updates_per_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lora_init and not self.lora:
            raise ConfigError("lora_init needs lora = true: it names the adapter LoRA starts from")
        if self.group_size < 2 and not self.traces:
            raise ConfigError(
                f"group_size must be at least 2, got {self.group_size}: GRPO's advantage compares "
                "the completions of one prompt with each other"
            )
        choices = {
            "backend": ("auto", "transformers", "vllm"),
            "loss_aggregation": ("token", "sequence"),
            "old_logprobs": ("sampler", "trainer"),
            "rollout_weights": ("auto", "int8", "trainer"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name} must be one of {', '.join(map(repr, allowed))}, "
                    f"got {getattr(self, name)!r}"
                )
        for name in ("step_timeout", "rollout_time_limit", "learning_rate", "max_grad_norm"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ConfigError(
                f"temperature must be positive for training, got {self.temperature}: GRPO needs "
                "different completions of one prompt (greedy decoding gives G copies)"
            )
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.clip_low < 1 or self.clip_high < 0:
            raise ConfigError(
                f"clip_low must be in [0, 1) and clip_high ≥ 0, got {self.clip_low}, "
                f"{self.clip_high}"
            )
        if self.beta < 0:
            raise ConfigError(f"beta must be ≥ 0, got {self.beta}")
        if not 0 <= self.heldout_fraction < 1:
            raise ConfigError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if not 0 < self.gpu_memory_utilization < 1:
            raise ConfigError(
                f"gpu_memory_utilization must be in (0, 1), got {self.gpu_memory_utilization}"
            )
        if self.rollout_batch < 0:
            raise ConfigError(
                f"rollout_batch must be ≥ 0 (0: one at a time), got {self.rollout_batch}"
            )
        if self.logprob_chunk < 0:
            raise ConfigError(f"logprob_chunk must be ≥ 0 (0: no chunks), got {self.logprob_chunk}")
        for name in ("save_every", "eval_every", "eval_max_tasks", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints must be at least 1, got {self.keep_checkpoints}")
        unknown = [r for r in self.report_to if r not in ("jsonl", "tensorboard", "wandb")]
        if unknown:
            raise ConfigError(
                f"report_to has {unknown}; use any of 'jsonl', 'tensorboard', 'wandb'"
            )
        from kernel_bridge.training.rewards import REWARDS

        for name, weight in self.rewards.items():
            if name not in REWARDS:
                raise ConfigError(
                    f"rewards has no function {name!r}; the built-in ones are "
                    f"{', '.join(sorted(REWARDS))} (custom functions are passed in Python: "
                    "Trainer(config, reward=Rewards({...}))"
                )
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise ConfigError(f"rewards.{name} must be a number, got {weight!r}")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated like a new config)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
    """Read a TOML file into a ``TrainConfig``; ``overrides`` win over the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read the training config {path}: {e.strerror or e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    data.update(overrides)
    return config_from_dict(data, where=str(path))


def config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    """Build a ``TrainConfig`` from plain data, checking every key and type first."""
    hints = typing.get_type_hints(TrainConfig)
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    for key, value in data.items():
        if key not in hints:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint} (see docs/training.md)")
        if not _has_type(value, hints[key]):
            raise ConfigError(
                f"{where}: {key} must be {_describe(hints[key])}, got {value!r} "
                f"({type(value).__name__})"
            )
    try:
        return TrainConfig(**data)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _has_type(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_has_type(v, item) for v in value)
    if origin is dict:
        key_type, value_type = typing.get_args(hint)
        return isinstance(value, dict) and all(
            _has_type(k, key_type) and _has_type(v, value_type) for k, v in value.items()
        )
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    plural = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
    if origin is list:
        return f"a list of {plural.get(typing.get_args(hint)[0], 'values')}"
    if origin is dict:
        return f"a table of {plural.get(typing.get_args(hint)[1], 'values')}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint)
    )
