"""The colocated vLLM path of the trainer, on CPU, against a stand-in engine.

What runs for real: the ``Trainer`` with ``backend = "vllm"``, ``ColocatedVLLM`` (sleep, wake,
weight push, prefix-cache reset), ``WeightReceiver`` mixed into a worker the way vLLM mixes a
``worker_extension_cls`` in, ``hf_weights`` (LoRA merged, tied weights once), the
``VLLMEngineSampler`` and real kernels. What stands in: vLLM's ``AsyncLLM``
(``tests/vllm_standin.ColocatedEngineStandIn``), which generates scripted tokens but scores them
with its own copy of the model, loaded only through the pushes, so the engine-vs-trainer logprob
check (``logprob_diff_max``) measures whether the engine holds the trainer's weights.
A GPU runs the real engine: ``python benchmarks/train.py --gpu-only``.
"""

from __future__ import annotations

import sys

import pytest
import torch

from kernel_bridge.training import colocate
from kernel_bridge.training.colocate import hf_weights
from kernel_bridge.training.policy import add_lora, tiny_policy
from kernel_bridge.training.tasks import Task
from kernel_bridge.training.trainer import Trainer
from tests.test_training_learns import share_of_digits, tiny_config
from tests.vllm_standin import ColocatedEngineStandIn, Completion, vllm_modules_standin

TASKS = [Task(f"digits-{i}", f"Reply with digits only. ({i})", "digits") for i in range(4)]
# Half the completions are digits: each group's rewards differ, so every step changes weights.
SCRIPT = ["4711", "no", "90210", "yes", "8", "ok", "123", "abc"]


def engine_for(tokenizer, steps, group, prompts, **options) -> ColocatedEngineStandIn:
    completions = [Completion(SCRIPT[i % len(SCRIPT)]) for i in range(steps * group * prompts)]
    engine_model, _ = tiny_policy(seed=99)  # the engine starts with other weights
    return ColocatedEngineStandIn(tokenizer, engine_model, completions, **options)


@pytest.fixture
def on_vllm(monkeypatch):
    """Make ``backend = "vllm"`` start ``ColocatedVLLM`` on the stand-in engine given."""

    def install(engine: ColocatedEngineStandIn) -> None:
        for name, module in vllm_modules_standin(engine).items():
            monkeypatch.setitem(sys.modules, name, module)
        monkeypatch.setattr(colocate, "vllm_available", lambda: True)
        monkeypatch.setattr(colocate, "vllm_model_path", lambda model: f"/models/{model}")

    return install


def colocated_config(tmp_path, **changes):
    options = dict(backend="vllm", group_size=4, prompts_per_step=2, learning_rate=3e-2, steps=2)
    return tiny_config(tmp_path, **{**options, **changes})


async def test_each_step_wakes_pushes_resets_generates_then_sleeps(tmp_path, on_vllm):
    model, tokenizer = tiny_policy()
    engine = engine_for(tokenizer, steps=2, group=4, prompts=2)
    on_vllm(engine)
    config = colocated_config(tmp_path)
    trainer = Trainer(config, model=model, tokenizer=tokenizer, tasks=TASKS, reward=share_of_digits)
    assert trainer.backend == "vllm"
    async with trainer:
        assert engine.engine_args.kwargs["worker_extension_cls"] == colocate.WORKER_EXTENSION
        assert engine.engine_args.kwargs["enable_sleep_mode"] is True
        assert engine.engine_args.kwargs["model"] == "/models/tiny"
        started = list(engine.events)
        first = await trainer.train_step()
        second = await trainer.train_step()
    push = ["collective_rpc(load_weights_from_ipc)", "reset_prefix_cache"]
    assert started == push  # the trainer's weights before the first rollout
    wake = ["wake_up(weights)", "collective_rpc(load_weights_from_ipc)", "wake_up(kv_cache)"]
    assert engine.events[len(started) :] == [
        "sleep(2)",  # step 1: the engine already holds these weights; sleeps for the update
        *wake, "reset_prefix_cache", "sleep(2)",  # step 2: the weights after step 1's update
        "shutdown",
    ]  # fmt: skip
    assert len(engine.calls) == 16 and all(c.generation for c in engine.calls)
    assert first["generation_tokens_per_s"] > 0 and second["update_tokens"] > 0
    # The engine's logprobs for the sampled tokens are the trainer's: it holds its weights.
    for metrics in (first, second):
        assert metrics["logprob_tokens_compared"] > 0
        assert metrics["logprob_diff_max"] < 1e-4, metrics
        assert metrics["logprob_fallbacks"] == 0


async def test_an_engine_that_keeps_old_weights_is_caught_by_the_logprob_check(tmp_path, on_vllm):
    model, tokenizer = tiny_policy()
    engine = engine_for(tokenizer, steps=2, group=4, prompts=2, take_weights=False)
    on_vllm(engine)
    trainer = Trainer(
        colocated_config(tmp_path), model=model, tokenizer=tokenizer, tasks=TASKS,
        reward=share_of_digits,
    )  # fmt: skip
    async with trainer:
        first = await trainer.train_step()
        second = await trainer.train_step()
    assert first["logprob_diff_max"] < 1e-4  # the first push arrived
    # Step 2 sampled from the weights before step 1's update: seen, and the trainer's used.
    assert second["logprob_diff_max"] > 100 * max(first["logprob_diff_max"], 1e-6)
    assert second["logprob_fallbacks"] > 0


async def test_lora_adapters_are_merged_for_the_push_and_unmerged_after(tmp_path, on_vllm):
    model, tokenizer = tiny_policy()
    config = colocated_config(tmp_path, lora=True, lora_rank=4, lora_alpha=8, learning_rate=5e-2)
    model = add_lora(model, config)
    engine = engine_for(tokenizer, steps=2, group=4, prompts=2)
    on_vllm(engine)
    trainer = Trainer(config, model=model, tokenizer=tokenizer, tasks=TASKS, reward=share_of_digits)
    q_proj = model.get_base_model().model.layers[0].self_attn.q_proj
    base_before = q_proj.base_layer.weight.detach().clone()
    async with trainer:
        await trainer.train_step()
        second = await trainer.train_step()
    loads = engine.worker.model_runner.model.loads
    assert len(loads) == 2  # at the start and after step 1's update
    hf_names = set(tiny_policy()[0].state_dict()) - {"lm_head.weight"}  # tied to the embeddings
    assert set(loads[-1]) == hf_names  # every weight once, under its Hugging Face name
    # The adapters trained, the push carried them merged, and the trainer's model is unmerged.
    assert not q_proj.merged
    assert torch.equal(q_proj.base_layer.weight, base_before)
    lora_b = q_proj.lora_B["default"].weight
    assert lora_b.abs().max() > 0
    assert second["logprob_diff_max"] < 1e-4 and second["logprob_fallbacks"] == 0


def test_hf_weights_names_every_weight_once_as_the_checkpoint_does():
    model, _ = tiny_policy()
    names = [name for name, _ in hf_weights(model)]
    assert len(names) == len(set(names))
    assert set(names) == set(model.state_dict()) - {"lm_head.weight"}
    assert names[0] == "model.embed_tokens.weight"


async def test_an_awake_engine_holding_the_same_weights_is_not_pushed_again(on_vllm):
    model, tokenizer = tiny_policy()
    engine = engine_for(tokenizer, steps=0, group=0, prompts=0)
    on_vllm(engine)
    colocated = colocate.ColocatedVLLM(
        "/models/tiny", tokenizer, temperature=1.0, top_p=1.0, max_tokens=8, max_model_len=64,
        gpu_memory_utilization=0.3, dtype="float32",
    )  # fmt: skip
    assert await colocated.load(model, version=0) is True
    assert await colocated.load(model, version=0) is False  # nothing changed
    assert await colocated.load(model, version=1) is True
    await colocated.sleep()
    assert await colocated.load(model, version=1) is True  # asleep: its weights were freed
    assert await colocated.load(model) is True  # no version: always pushed
    assert engine.pushes == 4
    await colocated.close()


async def test_weights_travel_in_batches_of_about_push_bytes(on_vllm):
    model, tokenizer = tiny_policy()
    engine = engine_for(tokenizer, steps=0, group=0, prompts=0)
    on_vllm(engine)
    largest = max(t.nbytes for _, t in hf_weights(model))
    colocated = colocate.ColocatedVLLM(
        "/models/tiny", tokenizer, temperature=1.0, top_p=1.0, max_tokens=8, max_model_len=64,
        gpu_memory_utilization=0.3, dtype="float32", push_bytes=largest,
    )  # fmt: skip
    await colocated.load(model)
    loads = engine.worker.model_runner.model.loads
    names = [name for load in loads for name in load]
    assert len(loads) > 1 and sorted(names) == sorted(name for name, _ in hf_weights(model))
    for name, tensor in engine.hf_model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    await colocated.close()


async def test_below_temperature_one_engine_and_trainer_score_the_tempered_distribution(
    tmp_path, on_vllm
):
    model, tokenizer = tiny_policy()
    engine = engine_for(tokenizer, steps=1, group=4, prompts=2)
    on_vllm(engine)
    config = colocated_config(tmp_path, temperature=0.5, steps=1)
    trainer = Trainer(config, model=model, tokenizer=tokenizer, tasks=TASKS, reward=share_of_digits)
    async with trainer:
        metrics = await trainer.train_step()
    assert engine.engine_args.kwargs["logprobs_mode"] == "processed_logprobs"
    assert {c.params.temperature for c in engine.calls} == {0.5}
    assert metrics["logprob_diff_max"] < 1e-4 and metrics["logprob_fallbacks"] == 0
