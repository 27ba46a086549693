"""GRPO end to end on CPU: the tiny policy learns a checkable task through the real loop
(Reasoner rollouts with a kernel pool, traces, rewards, the update); checkpoints resume; recorded
traces with human labels train; the CLI runs; market-data tasks reach the finance tools."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

from kernel_bridge.cli import main
from kernel_bridge.kernel import KernelPool
from kernel_bridge.reasoner import Limits
from kernel_bridge.samplers.scripted import ScriptedSampler
from kernel_bridge.trace import TraceStore
from kernel_bridge.training.config import TrainConfig
from kernel_bridge.training.rollout import RolloutSettings, collect_rollouts
from kernel_bridge.training.tasks import Task, builtin_tasks
from kernel_bridge.training.trainer import Trainer

DIGIT_TASKS = [
    Task(f"digits-{i}", f"Reply with digits only, as many as you can. ({i})", "digits")
    for i in range(8)
]


def share_of_digits(trace, task):
    """The checkable reward: the share of the completion's characters that are digits."""
    text = trace.text
    return sum(c.isdigit() for c in text) / max(1, len(text))


def tiny_config(tmp_path, **changes) -> TrainConfig:
    options = {
        "model": "tiny",
        "group_size": 8,
        "prompts_per_step": 4,
        "max_tokens": 16,
        "max_code_steps": 1,
        "system_prompt": "none",
        "learning_rate": 1e-2,
        "micro_batch_size": 32,
        "pool_size": 1,
        "steps": 20,
        "save_every": 0,
        "progress": False,
        "save_rollouts": False,
        "seed": 0,
        "out_dir": str(tmp_path / "run"),
    }
    options.update(changes)
    return TrainConfig(**options)


async def test_tiny_policy_learns_a_checkable_task_through_real_rollouts(tmp_path):
    async with Trainer(tiny_config(tmp_path), tasks=DIGIT_TASKS, reward=share_of_digits) as t:
        history = await t.train()
    rewards = [m["reward"] for m in history]
    first, last = statistics.fmean(rewards[:5]), statistics.fmean(rewards[-5:])
    assert first < 0.3  # a random policy over ~100 characters writes few digits
    assert last > first + 0.3, rewards
    # The sampler's recorded logprobs are the trainer's (same weights, float32).
    assert max(m["logprob_diff_max"] for m in history if m["logprob_tokens_compared"]) < 1e-3
    assert all(m["logprob_fallbacks"] == 0 for m in history)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line) for line in lines]
    assert [m["step"] for m in metrics] == list(range(1, 21))


async def test_at_another_temperature_sampler_and_trainer_agree_on_the_logprobs(tmp_path):
    """Both score the distribution the rollouts came from: the model's at the temperature."""
    from kernel_bridge.training.grpo import make_batch, token_logprobs
    from kernel_bridge.training.trainer import training_example

    config = tiny_config(tmp_path, temperature=0.6, steps=1, group_size=4, prompts_per_step=2)
    async with Trainer(config, tasks=DIGIT_TASKS, reward=share_of_digits) as trainer:
        rollouts = await trainer.generate(DIGIT_TASKS[:1], group_size=2)
        example = training_example(rollouts[0].trace, trainer.tokenizer, 1.0, 4096)
        batch = make_batch([example.row], [1.0], trainer.tokenizer.pad_token_id)
        with torch.no_grad():
            tempered, raw = (
                token_logprobs(trainer.model, batch.input_ids, batch.attention_mask, batch.start,
                               temperature=t)
                for t in (0.6, 1.0)
            )  # fmt: skip
        have = batch.mask & ~batch.recorded.isnan()
        assert have.sum() > 0
        assert (batch.recorded - tempered)[have].abs().max() < 1e-4
        assert (batch.recorded - raw)[have].abs().max() > 0.1  # not the untempered model's
        metrics = await trainer.train_step()
    assert metrics["logprob_tokens_compared"] > 0
    assert metrics["logprob_diff_max"] < 1e-3 and metrics["logprob_fallbacks"] == 0


async def test_resume_continues_the_step_count_and_restores_the_optimizer(tmp_path):
    config = tiny_config(tmp_path, steps=2, group_size=2, prompts_per_step=2, save_every=1)
    async with Trainer(config, tasks=DIGIT_TASKS, reward=share_of_digits) as first:
        await first.train()
        weights = {n: p.detach().clone() for n, p in first.params.items()}
        moments = {i: s["exp_avg"].clone() for i, s in enumerate(first.optimizer.state.values())}
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step-000001",
        "step-000002",
    ]
    resumed = Trainer(
        config.replace(resume=True, steps=3), tasks=DIGIT_TASKS, reward=share_of_digits
    )
    async with resumed:
        assert resumed.step == 2
        for name, tensor in weights.items():
            assert torch.equal(resumed.params[name], tensor)
        state = list(resumed.optimizer.state.values())
        assert state and all(torch.equal(s["exp_avg"], moments[i]) for i, s in enumerate(state))
        assert resumed.optimizer.state_dict()["state"][0]["step"] == 2
        await resumed.train()
        assert resumed.step == 3
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]


async def test_recorded_traces_with_human_labels_are_training_data(tmp_path):
    config = tiny_config(tmp_path, steps=1, save_every=0)
    async with Trainer(config, tasks=DIGIT_TASKS, reward=share_of_digits) as live:
        rollouts = await live.generate(DIGIT_TASKS[:1], group_size=3)
    store = TraceStore(tmp_path / "notebook-traces.jsonl")
    for rollout, rating in zip(rollouts, ["up", "down", None], strict=True):
        if rating:
            rollout.trace.labels = {"rating": rating, "note": "from the sidebar"}
        store.append(rollout.trace)
    offline = config.replace(traces=str(tmp_path / "notebook-traces.jsonl"), rewards={"human": 1.0})
    async with Trainer(offline, tasks=DIGIT_TASKS) as trainer:
        before = {n: p.detach().clone() for n, p in trainer.params.items()}
        metrics = await trainer.train_step()
    assert metrics["human"] == pytest.approx(0.0)  # +1, -1, 0
    assert metrics["sequences_updated"] == 2  # the unlabelled trace has advantage 0
    assert any(not torch.equal(before[n], p) for n, p in trainer.params.items())


def test_cli_trains_and_evaluates_from_a_toml_config(tmp_path, capsys):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "\n".join(
            json.dumps({"question": f"What is {i} + {i}?", "answer": 2 * i}) for i in range(6)
        )
    )
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'model = "tiny"\ntasks = "{tasks}"\ngroup_size = 2\nprompts_per_step = 2\n'
        'max_tokens = 8\nsystem_prompt = "none"\nsteps = 2\npool_size = 1\nprogress = false\n'
        f'out_dir = "{tmp_path / "out"}"\n[rewards]\ncorrect = 1.0\nlength = 0.1\n'
    )
    assert main(["train", str(config)]) == 0
    out = capsys.readouterr().out
    assert "step 2:" in out and "metrics.jsonl" in out
    assert (tmp_path / "out" / "checkpoints" / "step-000002" / "weights.safetensors").exists()
    assert len(TraceStore(tmp_path / "out" / "rollouts.jsonl").load()) == 8
    assert main(["eval", str(config)]) == 0
    out = capsys.readouterr().out
    assert "correct" in out and "tier1_correct" in out
    result = json.loads((tmp_path / "out" / "eval.jsonl").read_text().splitlines()[-1])
    assert result["step"] == 2 and result["tasks"] == 2  # 20% of 6, rounded up, held out


def test_cli_reports_a_bad_training_config_in_one_line(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("learning_rat = 1e-5\n")
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'learning_rate'" in err and "Traceback" not in err


async def test_market_tasks_run_with_the_finance_tools_and_their_cutoff():
    """A tier-3 task through the rollout path: the kernel gets the finance tools with the task's
    cutoff, and the tool's data gives the task's reference answer."""
    task = next(t for t in builtin_tasks([3]) if "highest monthly closing price" in t.question)
    ticker = task.question.split("What was ")[1].split("'")[0]
    year = int(task.question.rstrip("?").split()[-1])
    script = (
        "```python\n"
        f"df = stock_price('{ticker}', '{year}-01-01', '{year + 1}-12-31')\n"
        "print(len(df), df['Close'].max())\n"
        "```\n"
        f"<answer>{task.answer}</answer>"
    )
    settings = RolloutSettings(limits=Limits(max_steps=2, max_tokens=2000, step_timeout=60))
    async with KernelPool(size=1) as pool:
        (rollout,) = await collect_rollouts(ScriptedSampler(script), pool, [task], 1, settings)
    step = rollout.trace.steps[0]
    assert step.status == "ok", step.output_text
    assert f"12 {task.answer}" in step.output_text  # 12 months: nothing after the cutoff
    assert rollout.trace.answer == str(task.answer)


async def test_rollouts_that_write_no_code_take_no_kernel():
    task = Task("t", "Say 1.", 1, match="numeric")
    settings = RolloutSettings(limits=Limits(max_steps=1, max_tokens=100))
    async with KernelPool(size=1) as pool:
        sampler = ScriptedSampler("No code needed.\n<answer>1</answer>")
        rollouts = await collect_rollouts(sampler, pool, [task], 3, settings)
        assert pool.warm == 1  # a kernel taken would be shutting down and restarting now
    assert [r.trace.answer for r in rollouts] == ["1", "1", "1"]


async def test_many_parallel_rollouts_share_one_transformers_sampler():
    """More concurrent streams than the event loop has worker threads: each waits for its turn
    on the loop (a worker blocked on the sampler's lock would starve the one generating)."""
    import asyncio

    from kernel_bridge.samplers import SampleRequest
    from kernel_bridge.samplers.transformers import GenerationConfig, TransformersSampler
    from kernel_bridge.training.policy import tiny_policy

    model, tokenizer = tiny_policy()
    sampler = TransformersSampler(
        model, tokenizer, config=GenerationConfig(temperature=1.0, max_new_tokens=4)
    )
    request = SampleRequest([{"role": "user", "content": "hi"}], max_tokens=4)

    async def one() -> int:
        return sum(len(d.token_ids or []) for d in [d async for d in sampler.stream(request)])

    async with asyncio.timeout(60):
        counts = await asyncio.gather(*(one() for _ in range(24)))
    assert all(0 < n <= 4 for n in counts)


async def test_a_guided_task_is_asked_with_its_hint_and_trained_after_the_plain_question():
    """The rollout sees the hint; the update's example is the same completion after the question
    alone (the chat template's prompt of the messages without the hint), with the trainer's own
    logprobs as the old policy's."""
    from kernel_bridge.training.batch import training_example
    from kernel_bridge.training.policy import tiny_policy

    _, tokenizer = tiny_policy(seed=1)
    task = Task("g", "What is 6 * 7?", 42, match="numeric", hint="multiply in a block")
    settings = RolloutSettings(limits=Limits(max_steps=1, max_tokens=100))
    async with KernelPool(size=1) as pool:
        sampler = ScriptedSampler("Easy.\n<answer>42</answer>")
        (rollout,) = await collect_rollouts(sampler, pool, [task], 1, settings)
    trace = rollout.trace
    assert trace.messages[-1]["content"] == "What is 6 * 7? Hint: multiply in a block"
    plain = [*trace.messages[:-1], {"role": "user", "content": task.question}]
    expected = tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=True)
    expected = list(expected["input_ids"] if hasattr(expected, "keys") else expected)

    as_asked = training_example(trace, tokenizer, 1.0, max_len=4096)
    guided = training_example(trace, tokenizer, 1.0, max_len=4096, question=task.question)
    assert guided.prompt_ids == expected != as_asked.prompt_ids
    assert "Hint" not in tokenizer.decode(guided.prompt_ids)
    assert guided.completion_ids == as_asked.completion_ids and guided.mask == as_asked.mask
    assert all(math.isnan(x) for x in guided.recorded)
