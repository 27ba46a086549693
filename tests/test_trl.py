"""kernel-bridge rollouts inside TRL's real GRPOTrainer: a tiny random Qwen2, real kernels.

Where the random model would never write a code block, a scripted stand-in sampler writes them
(named as a stand-in; it uses the policy's tokenizer); the policy TRL trains is always TRL's own
model. ``RecordingGRPOTrainer`` keeps what TRL's own generation step handed to its loss.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("trl")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch
from trl import GRPOConfig, GRPOTrainer

from kernel_bridge.execution.sandbox import sandbox_problem
from kernel_bridge.reasoner import Limits
from kernel_bridge.samplers import Delta, SampleRequest
from kernel_bridge.samplers.scripted import ScriptedSampler
from kernel_bridge.samplers.tokens import TokenContext
from kernel_bridge.trace import Trace
from kernel_bridge.training.policy import tiny_policy
from kernel_bridge.training.rollout import RolloutSettings
from kernel_bridge.training.tasks import Task
from kernel_bridge.training.trl import (
    TRACE_FIELDS,
    KernelRollouts,
    completions,
    reward_funcs,
    task_dataset,
)

SAMPLER_FAILS = "\x07"  # where the stand-in's model server goes away

SCRIPT = f"""\
=== question: [ok]
I will compute it.
```python
print(6 * 7)
```
<answer>42</answer>
=== question: [dies]
```python
import os; os._exit(1)
```
The kernel died.
<answer>none</answer>
=== question: [hangs]
```python
import time; time.sleep(60)
```
Too slow.
<answer>none</answer>
=== question: [breaks]
```python
print('before the break')
```
Then the server{SAMPLER_FAILS} goes away.
"""

TASKS = [
    Task("ok", "[ok] What is 6 * 7?", 42, match="numeric"),
    Task("dies", "[dies] Crash the kernel.", "alive"),
    Task("hangs", "[hangs] Sleep a minute.", "fast"),
    Task("breaks", "[breaks] Lose the model server.", "whole"),
]


class ScriptedPolicyStandIn(TokenContext):
    """A stand-in for the policy's sampler: replays ``SCRIPT`` a character (one token of the
    character tokenizer) per delta, as a token sampler streams, with the policy tokenizer's ids
    (and a made-up logprob of -1 per token); raises where the script has ``SAMPLER_FAILS``."""

    name = "scripted-policy-stand-in"

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.script = ScriptedSampler(SCRIPT, chunk_size=1)  # one token per delta

    def params(self) -> dict[str, Any]:
        return {"stand_in": True}

    async def stream(self, request: SampleRequest) -> AsyncIterator[Delta]:
        async for delta in self.script.stream(request):
            text, fails, _ = delta.text.partition(SAMPLER_FAILS)
            ids = self.encode(text)
            finish = None if fails else delta.finish_reason
            yield Delta(text, token_ids=ids, logprobs=[-1.0] * len(ids), finish_reason=finish)
            if fails:
                raise ConnectionError("the model server went away mid-stream")


class RecordingGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer that keeps each generation batch: the inputs (with the fields the
    rollout_func added), what went to the loss, and TRL's own logprobs of the completions under
    the policy at generation time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[dict[str, Any]] = []

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        with torch.no_grad():
            policy, _, _ = self._get_per_token_logps_and_entropies(
                self.model, ids, mask, output["completion_ids"].size(1)
            )
        self.batches.append({"inputs": inputs, "output": output, "policy_logprobs": policy})
        return output


def id_parity(completions: list[Any], trace: list[Trace], **kwargs: Any) -> list[float]:
    """A reward that differs between completions of a group (their trace ids differ), so the
    advantages are not all zero and the loss has a gradient."""
    return [int(t.id, 16) % 7 / 7 for t in trace]


def grpo_args(tmp_path: Any, **extra: Any) -> GRPOConfig:
    options: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "use_cpu": True,
        "bf16": False,  # float32 on both sides, so the logprobs compare closely
        "report_to": "none",
        "num_generations": 2,
        "per_device_train_batch_size": 4,
        "max_completion_length": 256,
        "max_steps": 2,
        "logging_steps": 1,
        "save_strategy": "no",
        "learning_rate": 1e-3,
        "seed": 0,
        **extra,
    }
    return GRPOConfig(**options)


def expected_view(trace: Trace, eos: int, limit: int) -> tuple[list[int], list[int], int | None]:
    """Completion ids and mask from the trace's segments alone (recorded ids, 1 model, 0 tool),
    cut to ``limit``, and where the end-of-turn token of a run that answered is (None if cut)."""
    ids: list[int] = []
    mask: list[int] = []
    for segment in trace.segments:
        assert segment.token_ids is not None  # the stand-in and the tool output both have ids
        ids += segment.token_ids
        mask += [1 if segment.kind == "model" else 0] * len(segment.token_ids)
    eos_at = None
    if trace.finish_reason == "answer":
        ids, mask, eos_at = [*ids, eos], [*mask, 1], len(ids)
    return ids[:limit], mask[:limit], eos_at if eos_at is not None and eos_at < limit else None


def test_trl_trainer_trains_on_kernel_rollouts_with_tool_tokens_masked(tmp_path):
    model, tokenizer = tiny_policy(seed=0)
    seen: dict[str, list[Any]] = {name: [] for name in ("answer", "finish_reason", "steps")}
    scored: dict[str, list[float]] = {"correct": [], "format": [], "tool_errors": []}

    def fields_seen(
        completions: list[Any], answer: list[Any], finish_reason: list[Any], steps: list[Any],
        **kwargs: Any,
    ) -> list[float]:  # fmt: skip
        seen["answer"] += answer
        seen["finish_reason"] += finish_reason
        seen["steps"] += steps
        return [0.0] * len(completions)

    kb_rewards = reward_funcs({"correct": 1.0, "format": 0.1, "tool_errors": 0.5})

    def scoring(fn: Any) -> Any:
        def reward(*args: Any, **kwargs: Any) -> list[float]:
            values = fn(*args, **kwargs)
            scored[fn.__name__] += values
            return values

        reward.__name__ = fn.__name__
        return reward

    settings = RolloutSettings(
        limits=Limits(max_steps=3, max_tokens=400, step_timeout=2.0), system_prompt="none"
    )
    rollouts = KernelRollouts(
        ScriptedPolicyStandIn(tokenizer), tasks=TASKS, settings=settings, pool_size=4
    )
    trainer = RecordingGRPOTrainer(
        model,
        reward_funcs=[*map(scoring, kb_rewards), fields_seen, id_parity],
        args=grpo_args(tmp_path),
        train_dataset=task_dataset(TASKS),
        processing_class=tokenizer,
        rollout_func=rollouts,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with rollouts:
        trainer.train()
        # Local rollout kernels are sandboxed wherever bubblewrap works, as the trainer's are.
        assert rollouts.pool is not None
        assert rollouts.pool.kernel_options["sandbox"] is (sandbox_problem() is None)

    # Two steps, each a generation batch of 2 prompts x 2 completions; every task ran.
    assert len(trainer.batches) == 2
    traces = [i["trace"] for b in trainer.batches for i in b["inputs"]]
    assert len(traces) == 8
    by_task = {t.id: [tr for tr in traces if tr.question == t.question] for t in TASKS}
    assert all(len(group) == 2 for group in by_task.values())

    # Whatever went wrong, each rollout finished, with its failure in the trace.
    for trace in by_task["ok"]:
        assert [s.status for s in trace.steps] == ["ok"] and trace.answer == "42"
    for trace in by_task["dies"]:
        assert trace.steps[0].status == "died" and trace.finish_reason == "answer"
    for trace in by_task["hangs"]:
        assert trace.steps[0].status == "timeout" and trace.finish_reason == "answer"
    for trace in by_task["breaks"]:
        assert trace.finish_reason == "error" and "ConnectionError" in (trace.error or "")
        assert [s.status for s in trace.steps] == ["ok"]

    # The trainer's env_mask is 0 exactly on the tool output's tokens, as the traces have them.
    eos, limit = tokenizer.eos_token_id, 256
    for batch in trainer.batches:
        out = batch["output"]
        for row, inp in enumerate(batch["inputs"]):
            trace = inp["trace"]
            n = int(out["completion_mask"][row].sum())
            ids = out["completion_ids"][row][:n].tolist()
            env_mask = out["tool_mask"][row][:n].tolist()
            want_ids, want_mask, eos_at = expected_view(trace, eos, limit)
            assert (ids, env_mask) == (want_ids, want_mask)
            tool_text = tokenizer.decode([i for i, m in zip(ids, env_mask, strict=True) if m == 0])
            assert tool_text == "".join(s.text for s in trace.segments if s.kind == "tool")
            assert tool_text.count("```output\n") == len(trace.steps) >= 1
            prompt = out["prompt_ids"][row][out["prompt_mask"][row].bool()].tolist()
            assert prompt == trace.prompt_token_ids
            # The sampler's logprobs, aligned: -1 on model tokens, 0 on tool tokens, NaN on
            # the end-of-turn token the trace does not record.
            sampled = out["sampling_per_token_logps"][row][:n].tolist()
            for position, (value, m) in enumerate(zip(sampled, env_mask, strict=True)):
                if position == eos_at:
                    assert math.isnan(value)
                else:
                    assert value == (-1.0 if m else 0.0)

    # The reward functions saw the traces' fields, and every rollout got a finite reward.
    assert seen["answer"] == [t.answer for t in traces]
    assert seen["finish_reason"] == [t.finish_reason for t in traces]
    assert seen["steps"] == [[s.to_dict() for s in t.steps] for t in traces]
    assert all(len(v) == 8 and all(map(math.isfinite, v)) for v in scored.values())
    solved = [1.0 if t.question == TASKS[0].question else 0.0 for t in traces]
    assert scored["correct"] == solved  # weight 1
    failed = [-0.5 * (t.steps[0].status != "ok") for t in traces]
    assert scored["tool_errors"] == failed  # weight 0.5

    # The loss is finite, not zero, and moved the policy's weights.
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert any(v != 0 for v in losses)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_trl_policy_samples_through_the_kernel_bridge_sampler(tmp_path):
    """The default sampler is TRL's own model: the ids and logprobs TRL receives are the ones
    that model sampled, and TRL's logprobs of them under the policy agree."""
    model, tokenizer = tiny_policy(seed=1)
    tasks = TASKS[:2]
    settings = RolloutSettings(limits=Limits(max_tokens=24), system_prompt="none")
    rollouts = KernelRollouts("batched", tasks=tasks, settings=settings, pool_size=1)
    trainer = RecordingGRPOTrainer(
        model,
        reward_funcs=[*reward_funcs({"format": 1.0}), id_parity],
        args=grpo_args(tmp_path, max_completion_length=24, max_steps=1),
        train_dataset=task_dataset(tasks, conversational=True),
        processing_class=tokenizer,
        rollout_func=rollouts,
    )
    with rollouts:
        trainer.train()

    (batch,) = trainer.batches
    out = batch["output"]
    for row, inp in enumerate(batch["inputs"]):
        trace = inp["trace"]
        assert trace.model == "tiny" and trace.sampler["name"] == "BatchedSampler"
        (segment,) = trace.segments  # the random model writes no block
        n = int(out["completion_mask"][row].sum())
        assert out["completion_ids"][row][:n].tolist()[: len(segment.token_ids)] == (
            segment.token_ids
        )
        assert out["tool_mask"][row][:n].tolist() == [1] * n
        recorded = torch.tensor(segment.logprobs)
        assert torch.equal(out["sampling_per_token_logps"][row][: len(recorded)], recorded)
        policy = batch["policy_logprobs"][row][: len(recorded)]
        assert torch.allclose(policy, recorded, atol=1e-4)
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses and all(math.isfinite(v) for v in losses)


def test_an_empty_run_gets_one_end_of_turn_token_masked_unless_the_model_chose_it():
    _, tokenizer = tiny_policy()
    eos = tokenizer.eos_token_id
    failed, stopped = (
        Trace(model="m", sampler={"name": "s"}, messages=[{"role": "user", "content": "q"}])
        for _ in range(2)
    )
    failed.finish_reason, stopped.finish_reason = "error", "answer"
    out = completions([failed, stopped], tokenizer)
    assert out["completion_ids"] == [[eos], [eos]]
    assert out["env_mask"] == [[0], [1]]  # the model's own end of turn is trained on
    assert out["logprobs"][0] == [0.0] and math.isnan(out["logprobs"][1][0])
    prompt = tokenizer.apply_chat_template(failed.messages, add_generation_prompt=True)
    assert out["prompt_ids"][0] == prompt["input_ids"]


def test_a_dataset_column_the_traces_would_overwrite_is_refused():
    _, tokenizer = tiny_policy()
    trainer = SimpleNamespace(
        args=SimpleNamespace(max_completion_length=16),
        processing_class=tokenizer,
        train_dataset=SimpleNamespace(column_names=["prompt", "answer"]),
    )
    rollouts = KernelRollouts(ScriptedPolicyStandIn(tokenizer))
    with rollouts, pytest.raises(ValueError, match=r"\['answer'\].*rename"):
        rollouts(["[ok] What is 6 * 7?"], trainer)
    assert "answer" in TRACE_FIELDS


@pytest.mark.parametrize(
    "sampler, use_vllm, message",
    [
        ("vllm:http://127.0.0.1:9/v1", False, "only TRL's server mode updates"),
        ("openai/gpt-4o", False, "samples from the policy TRL trains"),
    ],
)
def test_a_sampler_that_is_not_the_policy_is_refused(sampler, use_vllm, message):
    _, tokenizer = tiny_policy()
    trainer = SimpleNamespace(
        args=SimpleNamespace(max_completion_length=16, use_vllm=use_vllm, vllm_mode="server"),
        processing_class=tokenizer,
        train_dataset=None,
    )
    rollouts = KernelRollouts(sampler)
    with rollouts, pytest.raises(ValueError, match=message):
        rollouts(["[ok] What is 6 * 7?"], trainer)


def test_rollouts_run_their_blocks_on_a_kernel_gateway(kernel_gateway):
    _, tokenizer = tiny_policy()
    trainer = SimpleNamespace(
        args=SimpleNamespace(max_completion_length=256),
        processing_class=tokenizer,
        train_dataset=task_dataset(TASKS[:1]),
    )
    settings = RolloutSettings(limits=Limits(max_tokens=400), system_prompt="none")
    with KernelRollouts(
        ScriptedPolicyStandIn(tokenizer),
        tasks=TASKS,
        settings=settings,
        pool_size=1,
        kernel_options={"url": kernel_gateway.url, "token": kernel_gateway.token},
    ) as rollouts:
        out = rollouts([TASKS[0].question], trainer)
        assert rollouts.pool is not None
        assert rollouts.pool.kernel_options["url"] == kernel_gateway.url
        assert "sandbox" not in rollouts.pool.kernel_options  # the gateway's own limits apply
    (trace,) = out["trace"]
    assert [s.status for s in trace.steps] == ["ok"] and trace.steps[0].output_text == "42"
    assert out["answer"] == ["42"] and out["task"] == [TASKS[0]]
    assert 0 in out["env_mask"][0] and len(out["env_mask"][0]) == len(out["completion_ids"][0])
