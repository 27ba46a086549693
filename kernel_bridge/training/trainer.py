"""The GRPO trainer: rollouts → rewards → advantages → clipped update → new weights to the sampler.

One step: ``prompts_per_step`` tasks, ``group_size`` rollouts each through the ``Reasoner`` with a
fresh kernel per rollout; every trace scored by the rewards; advantages normalized within each
group; the batch built from ``Trace.training_view`` (``batch.py``: the sampler's own token ids and
logprobs, never the re-tokenized text); the loss of ``grpo.grpo_loss`` over model tokens only; one
optimizer step per pass over the batch; then the sampler gets the new weights (the transformers
sampler drops its KV cache, the colocated vLLM engine receives the weights and resets its prefix
cache). Checkpoints are in ``checkpoints.py``, what a step reports in ``metrics.py``.

Old-policy logprobs (``old_logprobs = "sampler"``, the default) are the ones the sampler recorded
while generating; the trainer's own values for the same tokens, from the first forward pass of
the update (the policy has not changed yet), check them: a trace whose recorded logprobs differ by
more than ``logprob_tolerance`` anywhere, and any token without a recorded value, uses the
trainer's (``batch.LogprobCheck``). ``logprob_diff_max`` in the metrics is that comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from kernel_bridge.execution import KernelPool
from kernel_bridge.trace import Trace, TraceStore, load_traces
from kernel_bridge.training import checkpoints
from kernel_bridge.training.batch import Example, LogprobCheck, training_example, update_batch
from kernel_bridge.training.config import ConfigError, TrainConfig
from kernel_bridge.training.evaluate import evaluate_sampler
from kernel_bridge.training.grpo import group_advantages, grpo_loss, token_logprobs
from kernel_bridge.training.metrics import (
    Progress,
    Reporters,
    append_jsonl,
    reset_peak_memory,
    step_metrics,
)
from kernel_bridge.training.policy import load_policy, trainable_parameters
from kernel_bridge.training.rewards import RewardFn, Rewards, as_rewards
from kernel_bridge.training.rollout import Rollout, RolloutSettings, collect_rollouts
from kernel_bridge.training.tasks import Task, builtin_tasks, hold_out, load_tasks, split_tasks

# Example and training_example live in batch.py; they are importable from here too.
__all__ = ["Example", "Trainer", "run", "run_eval", "training_example"]


class Trainer:
    """GRPO on kernel traces. ``async with Trainer(config) as trainer: await trainer.train()``.

    ``model``/``tokenizer`` default to ``load_policy(config)``; ``tasks`` to the configured task
    set (its held-out split becomes ``eval_tasks``); ``reward`` to ``Rewards(config.rewards)`` —
    any ``(trace, task) -> float`` function or ``Rewards`` works.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        model: Any = None,
        tokenizer: Any = None,
        tasks: Sequence[Task] | None = None,
        reward: Rewards | RewardFn | Mapping[Any, float] | None = None,
    ) -> None:
        self.config = config
        torch.manual_seed(config.seed)
        if model is None:
            model, tokenizer = load_policy(config)
        elif tokenizer is None:
            raise ConfigError("a model passed to Trainer needs its tokenizer too")
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.rewards = as_rewards(reward if reward is not None else dict(config.rewards))
        all_tasks = list(tasks) if tasks is not None else self._load_tasks()
        self.train_tasks, self.eval_tasks = split_tasks(all_tasks)
        self.offline = self._load_offline(all_tasks) if config.traces else None
        if not self.train_tasks and self.offline is None:
            raise ConfigError("no training tasks: every task is in the held-out split")
        self.params = trainable_parameters(model)
        if not self.params:
            raise ConfigError("the model has no trainable parameters")
        self.optimizer = torch.optim.AdamW(
            self.params.values(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        warmup = config.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
        )
        self.ref_model = None
        if config.beta > 0 and not hasattr(model, "disable_adapter"):
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.backend = self._resolve_backend()
        self.step = 0
        self.weights_version = 0  # counts the changes of the weights (optimizer steps, loads)
        self.history: list[dict[str, Any]] = []
        self.out_dir = Path(config.out_dir)
        self.pool: KernelPool | None = None
        self.sampler: Any = None
        self.engine: Any = None  # ColocatedVLLM on the vLLM backend
        self.rollout_model: Any = None  # the int8 copy rollouts generate with (rollout_weights)
        self._rollout_version = -1
        self._reporters: Reporters | None = None
        self.settings = RolloutSettings.from_config(config)

    # -- setup -------------------------------------------------------------------------------

    def _load_tasks(self) -> list[Task]:
        c = self.config
        if c.tasks == "builtin":
            return builtin_tasks(c.tiers)
        return hold_out(load_tasks(c.tasks), c.heldout_fraction)

    def _load_offline(self, tasks: list[Task]) -> list[list[tuple[Trace, Task | None]]]:
        """Recorded traces grouped by question; each paired with the task that asks it, if any.

        A question with a single trace has nothing to be compared with, so lone traces form one
        group together (their baseline is their mean).
        """
        by_question = {task.question: task for task in tasks}
        groups: dict[str, list[tuple[Trace, Task | None]]] = {}
        for trace in load_traces(self.config.traces):
            if trace.finish_reason is None or not trace.segments:
                continue
            question = trace.question or ""
            groups.setdefault(question, []).append((trace, by_question.get(question)))
        if not groups:
            raise ConfigError(f"{self.config.traces} holds no finished traces to train on")
        together = [g for g in groups.values() if len(g) > 1]
        alone = [item for g in groups.values() if len(g) == 1 for item in g]
        return together + ([alone] if alone else [])

    def _resolve_backend(self) -> str:
        from kernel_bridge.training.colocate import vllm_available

        backend = self.config.backend
        if backend == "auto":
            usable = vllm_available() and self.device.type == "cuda"
            backend = "vllm" if usable and self.config.model != "tiny" else "transformers"
        if backend == "vllm" and not vllm_available():
            raise ConfigError('backend = "vllm" needs vLLM and a CUDA GPU (pip install vllm)')
        return backend

    async def start(self) -> Trainer:
        """Start the kernel pool and the sampler; resume from a checkpoint if configured."""
        c = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if c.resume:
            latest = checkpoints.latest(self.out_dir)
            if latest is not None:
                self.load_checkpoint(latest)
                checkpoints.truncate_metrics(self.out_dir / "metrics.jsonl", self.step)
        if self.backend == "vllm":
            from kernel_bridge.training.colocate import ColocatedVLLM, vllm_model_path

            self.engine = ColocatedVLLM(
                vllm_model_path(c.model),
                self.tokenizer,
                temperature=c.temperature,
                top_p=c.top_p,
                max_tokens=c.max_tokens,
                max_model_len=c.max_seq_len,
                gpu_memory_utilization=c.gpu_memory_utilization,
                dtype=str(next(self.model.parameters()).dtype).removeprefix("torch."),
                seed=c.seed,
                sleep=c.vllm_sleep,
            )
            self.sampler = self.engine.sampler
            await self.engine.load(self.model, self.weights_version)  # also after a resume
        else:
            self.sampler = self._transformers_sampler(c.temperature)
            # A rollout starts when it gets a row of the batch: its time limit is its own, not
            # time spent waiting for other rollouts to finish.
            self.settings.concurrency = c.rollout_batch
        if self.offline is None or c.eval_every:
            self.pool = await KernelPool(c.pool_size, **self.settings.kernel_options()).start()
        self._reporters = Reporters(c, self.out_dir)
        return self

    def _transformers_sampler(self, temperature: float) -> Any:
        from kernel_bridge.samplers.batched import BatchedSampler
        from kernel_bridge.samplers.transformers import GenerationConfig, TransformersSampler

        c = self.config
        generation = GenerationConfig(
            temperature=temperature, top_p=c.top_p, max_new_tokens=c.max_tokens
        )
        model = self._sync_rollout_model()
        if c.rollout_batch:
            return BatchedSampler(
                model, self.tokenizer, config=generation, name=c.model, max_batch=c.rollout_batch
            )
        return TransformersSampler(model, self.tokenizer, config=generation, name=c.model)

    def _uses_int8(self) -> bool:
        c = self.config
        if c.rollout_weights == "auto":
            return self.device.type == "cpu" and c.model != "tiny"
        return c.rollout_weights == "int8"

    def _sync_rollout_model(self) -> Any:
        """The model rollouts generate with: the trainer's own, or its int8 copy, re-packed
        from the current weights whenever they changed since the last rollout."""
        if not self._uses_int8():
            return self.model
        from kernel_bridge.embedded import int8_copy, refresh_int8_copy

        if self.rollout_model is None:
            self.rollout_model = int8_copy(self.model)
        elif self._rollout_version != self.weights_version:
            refresh_int8_copy(self.rollout_model, self.model)
        self._rollout_version = self.weights_version
        return self.rollout_model

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        if self.engine is not None:
            await self.engine.close()
            self.engine = None
        if self._reporters is not None:
            self._reporters.close()
            self._reporters = None

    async def __aenter__(self) -> Trainer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- one step ----------------------------------------------------------------------------

    def step_tasks(self, step: int) -> list[Task]:
        """The tasks of ``step``: a fixed shuffle per epoch, so a resumed run sees the same ones."""
        n, per_step = len(self.train_tasks), self.config.prompts_per_step
        chosen = []
        for position in range(step * per_step, (step + 1) * per_step):
            epoch, at = divmod(position, n)
            order = random.Random(f"{self.config.seed}/{epoch}").sample(range(n), n)
            chosen.append(self.train_tasks[order[at]])
        return chosen

    async def generate(self, tasks: Sequence[Task], group_size: int | None = None) -> list[Rollout]:
        """``group_size`` scored rollouts of each task (the sampler has the current weights)."""
        if self.pool is None:
            raise RuntimeError("the trainer is not started: use `async with Trainer(...)`")
        if self.engine is not None:
            await self.engine.load(self.model, self.weights_version)
        else:
            self._sync_rollout_model()
        self.model.eval()
        rollouts = await collect_rollouts(
            self.sampler, self.pool, tasks, group_size or self.config.group_size, self.settings
        )
        self.score(rollouts)
        return rollouts

    def score(self, rollouts: Sequence[Rollout]) -> None:
        for rollout in rollouts:
            rollout.reward = self.rewards(rollout.trace, rollout.task)
            rollout.trace.reward = rollout.reward.total

    def offline_rollouts(self, step: int) -> list[Rollout]:
        """The recorded traces of ``step``: ``prompts_per_step`` groups, in a fixed shuffle."""
        assert self.offline is not None
        groups = self.offline
        n, per_step = len(groups), min(self.config.prompts_per_step, len(self.offline))
        chosen = []
        for position in range(step * per_step, (step + 1) * per_step):
            epoch, at = divmod(position, n)
            chosen.append(
                groups[random.Random(f"{self.config.seed}/{epoch}").sample(range(n), n)[at]]
            )
        rollouts = [
            Rollout(task, index, trace)
            for index, group in enumerate(chosen)
            for trace, task in group
        ]
        self.score(rollouts)
        return rollouts

    def update(self, rollouts: Sequence[Rollout]) -> dict[str, float]:
        """The GRPO update on one batch of scored rollouts; returns loss and diagnostics."""
        c = self.config
        rewards = torch.tensor([r.reward.total for r in rollouts])  # type: ignore[union-attr]
        advantages = group_advantages(rewards, [r.group for r in rollouts], c.scale_rewards)
        data = update_batch(
            [r.trace for r in rollouts], advantages.tolist(), self.tokenizer,
            max_len=c.max_seq_len, micro_batch_size=c.micro_batch_size,
            keep_zero_advantage=c.beta > 0,
            questions=[r.task.question if r.task and r.task.hint else None for r in rollouts],
        )  # fmt: skip
        stats: dict[str, float] = {
            "sequences_updated": data.sequences_updated,
            "model_tokens_batch": data.num_tokens,
        }
        check = LogprobCheck(c.logprob_tolerance)
        if not data.micro:  # every group's completions scored alike: nothing to learn
            return {
                **stats,
                **check.stats(),
                "loss": 0.0,
                "grad_norm": 0.0,
                "clip_fraction": 0.0,
                "kl": 0.0,
                "update_tokens": 0,
                "lr": float(self.scheduler.get_last_lr()[0]),
            }
        olds: list[torch.Tensor] = []
        refs: list[torch.Tensor | None] = []
        self.model.train()
        losses, clip, kl, tokens_seen = [], [], [], 0
        try:
            for epoch in range(c.updates_per_batch):
                self.optimizer.zero_grad(set_to_none=True)
                total = 0.0
                for i, rows in enumerate(data.micro):
                    batch = rows.to(self.device)
                    logprobs = token_logprobs(
                        self.model, batch.input_ids, batch.attention_mask, batch.start,
                        c.logprob_chunk, c.temperature, self._shared(batch),
                    )  # fmt: skip
                    if epoch == 0:  # the policy is still π_old: its values are the old logprobs
                        trainer_old = logprobs.detach()
                        if c.old_logprobs == "sampler":
                            olds.append(check(batch.recorded, trainer_old, batch.mask))
                        else:
                            olds.append(trainer_old)
                        refs.append(self._ref_logprobs(batch) if c.beta > 0 else None)
                    loss, s = grpo_loss(
                        logprobs, olds[i], batch.advantages, batch.mask, refs[i],
                        clip_low=c.clip_low, clip_high=c.clip_high, beta=c.beta,
                        aggregation=c.loss_aggregation, num_tokens=data.num_tokens,
                        num_sequences=data.num_sequences,
                    )  # fmt: skip
                    loss.backward()
                    total += float(loss.detach())
                    clip.append(s["clip_fraction"])
                    kl.append(s["kl"])
                    tokens_seen += int(batch.attention_mask.sum())
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    list(self.params.values()), c.max_grad_norm
                )
                self.optimizer.step()
                self.scheduler.step()
                self.weights_version += 1
                losses.append(total)
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            self.model.eval()
        return {
            **stats,
            **check.stats(),
            "loss": losses[0],
            "grad_norm": float(grad_norm),
            "clip_fraction": statistics.fmean(clip),
            "kl": statistics.fmean(kl),
            "update_tokens": tokens_seen,
            "lr": float(self.scheduler.get_last_lr()[0]),
        }

    def _shared(self, batch: Any) -> int:
        """Prompt tokens to run once without gradient (not under gradient checkpointing, which
        would run the cached forward twice)."""
        share = self.config.share_prompt and not self.config.gradient_checkpointing
        return batch.shared if share else 0

    def _ref_logprobs(self, batch: Any) -> torch.Tensor:
        with torch.no_grad():
            if self.ref_model is not None:
                model, context = self.ref_model, contextlib.nullcontext()
            else:
                model, context = self.model, self.model.disable_adapter()  # LoRA: the base model
            with context:
                return token_logprobs(
                    model, batch.input_ids, batch.attention_mask, batch.start,
                    self.config.logprob_chunk, self.config.temperature, self._shared(batch),
                )  # fmt: skip

    async def train_step(self) -> dict[str, Any]:
        """One GRPO step (rollouts or recorded traces, then the update); returns its metrics."""
        begin = time.perf_counter()
        reset_peak_memory(self.device)
        if self.offline is not None:
            rollouts = self.offline_rollouts(self.step)
        else:
            rollouts = await self.generate(self.step_tasks(self.step))
        rollout_s = time.perf_counter() - begin
        if self.engine is not None:
            await self.engine.sleep()
        elif self.sampler is not None:
            self.sampler.reset_cache()  # the rollouts' keys and values: free them for the update
        t = time.perf_counter()
        update = self.update(rollouts)
        update_s = time.perf_counter() - t
        if self.engine is None and self.sampler is not None:
            self.sampler.reset_cache()  # its KV cache holds keys and values of the old weights
        self.step += 1
        metrics = step_metrics(
            self.step, rollouts, update, rollout_s=rollout_s, update_s=update_s,
            step_s=time.perf_counter() - begin, device=self.device,
            generated=self.offline is None,
        )  # fmt: skip
        if self.config.save_rollouts:
            self._append_traces("rollouts.jsonl", rollouts)
        self.history.append(metrics)
        if self._reporters is not None:
            self._reporters.log(metrics)
        return metrics

    async def train(self, steps: int | None = None) -> list[dict[str, Any]]:
        """Run until ``steps`` (default ``config.steps``) steps are done in total; checkpoints and
        held-out evaluations as configured. Returns the metrics of the steps run now."""
        c = self.config
        until = steps if steps is not None else c.steps
        done: list[dict[str, Any]] = []
        bar = Progress(c.progress, until, self.step)
        try:
            while self.step < until:
                metrics = await self.train_step()
                done.append(metrics)
                bar.update(metrics)
                if c.save_every and self.step % c.save_every == 0:
                    self.save_checkpoint()
                if c.eval_every and self.step % c.eval_every == 0:
                    await self.evaluate()
        finally:
            bar.close()
        if done and not (c.save_every and self.step % c.save_every == 0):
            self.save_checkpoint()
        return done

    # -- evaluation --------------------------------------------------------------------------

    async def evaluate(self, tasks: Sequence[Task] | None = None) -> dict[str, Any]:
        """Greedy rollouts of the held-out tasks (or ``tasks``); accuracy and tool use, by tier."""
        tasks = list(tasks if tasks is not None else self.eval_tasks)
        if self.config.eval_max_tasks:
            tasks = tasks[: self.config.eval_max_tasks]
        if not tasks:
            raise ConfigError("no held-out tasks to evaluate")
        if self.pool is None:
            raise RuntimeError("the trainer is not started: use `async with Trainer(...)`")
        if self.engine is not None:
            from kernel_bridge.samplers.vllm import VLLMEngineSampler

            await self.engine.load(self.model, self.weights_version)
            sampler = VLLMEngineSampler(
                self.engine.engine, self.tokenizer, temperature=0.0,
                max_tokens=self.config.max_tokens,
            )  # fmt: skip
        else:
            sampler = self._transformers_sampler(0.0)  # greedy
        self.model.eval()
        found, rollouts = await evaluate_sampler(
            sampler, tasks, self.pool, self.settings, self.rewards
        )
        metrics: dict[str, Any] = {"step": self.step, **found}
        self._append_traces("eval_traces.jsonl", rollouts)
        append_jsonl(self.out_dir / "eval.jsonl", metrics)
        if self._reporters is not None:
            self._reporters.log(
                {f"eval/{k}": v for k, v in metrics.items() if k != "step"}, self.step
            )
        return metrics

    def _append_traces(self, name: str, rollouts: Sequence[Rollout]) -> None:
        store = TraceStore(self.out_dir / name)
        for rollout in rollouts:
            store.append(rollout.trace)

    # -- checkpoints -------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write the trainable weights, optimizer, scheduler and RNG state of this step."""
        return checkpoints.save(
            self.out_dir, self.step, self.params, self.optimizer, self.scheduler, self.config
        )

    def load_checkpoint(self, path: str | Path) -> int:
        """Restore a checkpoint of the same model; the step count continues from it."""
        self.step = checkpoints.load(
            path, self.params, self.optimizer, self.scheduler, self.config, self.device
        )
        self.weights_version += 1
        if self.sampler is not None and self.engine is None:
            self.sampler.reset_cache()
        return self.step


def run(config: TrainConfig, **trainer_options: Any) -> list[dict[str, Any]]:
    """Train as configured (blocking); returns the metrics of the steps run."""

    async def go() -> list[dict[str, Any]]:
        async with Trainer(config, **trainer_options) as trainer:
            return await trainer.train()

    return asyncio.run(go())


def run_eval(config: TrainConfig, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Evaluate on the held-out tasks, from ``checkpoint`` (default: the latest in out_dir, if
    any) or the untrained model."""

    async def go() -> dict[str, Any]:
        async with Trainer(config.replace(resume=False)) as trainer:
            path = Path(checkpoint) if checkpoint else checkpoints.latest(trainer.out_dir)
            if path is not None:
                trainer.load_checkpoint(path)
            return await trainer.evaluate()

    return asyncio.run(go())
