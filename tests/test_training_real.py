"""One real GRPO step: the embedded Qwen2.5-Coder-0.5B (float weights, LoRA), real kernel rollouts
from a pool, the update, and the new weights in the parameters."""

from __future__ import annotations

import math

import pytest
import torch

from kernel_bridge.embedded import INSTALL_HINT, embedded_available
from kernel_bridge.training.config import TrainConfig
from kernel_bridge.training.tasks import Task
from kernel_bridge.training.trainer import Trainer, training_example

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not embedded_available(), reason=f"embedded model missing ({INSTALL_HINT})"),
]

TASK = Task("product", "What is 123456789 * 987654321?", 123456789 * 987654321, match="numeric")


def mean_logprob(trace, task):
    """A continuous reward term, so that two different completions never tie (a tie would give
    both advantage 0 and an update of exactly nothing)."""
    values = [lp for s in trace.segments if s.kind == "model" and s.logprobs for lp in s.logprobs]
    return sum(values) / max(1, len(values))


async def test_one_grpo_step_with_the_embedded_model_and_real_kernels(tmp_path):
    config = TrainConfig(
        model="local",
        lora=True,
        lora_rank=8,
        group_size=2,
        prompts_per_step=1,
        max_tokens=48,
        max_code_steps=2,
        learning_rate=1e-3,
        micro_batch_size=2,
        pool_size=2,
        steps=1,
        seed=0,
        progress=False,
        save_every=0,
        out_dir=str(tmp_path / "run"),
    )
    trainer = Trainer(config, tasks=[TASK], reward={"correct": 1.0, mean_logprob: 0.1})
    async with trainer:
        before = {n: p.detach().clone() for n, p in trainer.params.items()}
        metrics = await trainer.train_step()
        traces = [t for t in _rollout_traces(tmp_path)]
    assert all(name.count("lora_") for name in before)  # only the adapters train
    assert math.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
    changed = [n for n, p in trainer.params.items() if not torch.equal(before[n], p)]
    assert changed, "no parameter moved"
    # The kernel ran the model's code, and its output was masked out of the loss.
    assert any(trace.steps for trace in traces), [trace.text for trace in traces]
    with_tool = next(trace for trace in traces if trace.steps)
    example = training_example(with_tool, trainer.tokenizer, 1.0, config.max_seq_len)
    assert 0 in example.mask and 1 in example.mask
    # The sampler's logprobs and the trainer's agree on the same tokens.
    assert metrics["logprob_tokens_compared"] > 0
    assert metrics["logprob_diff_max"] < 0.05


def _rollout_traces(tmp_path):
    from kernel_bridge.trace import load_traces

    return load_traces(tmp_path / "run" / "rollouts.jsonl")
