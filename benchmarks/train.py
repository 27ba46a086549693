"""GRPO training figures: rollout throughput with the kernel pool, update speed and memory.

    python benchmarks/train.py [--quick] [--json PATH]          # CPU part (about 25 minutes)
    python benchmarks/train.py --gpu [--json PATH]              # + the GPU part (one GPU)
    python benchmarks/train.py --gpu-only [--json PATH]         # the GPU part alone

CPU, each against a baseline measured in the same run:

- **rollouts/min, pool vs cold kernels**: 16 rollouts of a scripted two-block answer (no model
  time, so the kernel side shows) through ``collect_rollouts`` with a ``KernelPool`` of 4, against
  the same 16 run one after another, each starting its own kernel (``Reasoner`` with no kernel).
- **rollouts with the embedded model**: one group of 4 through the real policy (float32
  TransformersSampler) and the pool: rollouts/min, and where the time went (generation vs kernel).
- **update tokens/s and peak memory**: one GRPO update (``Trainer.update``: forward, backward,
  AdamW step) of the embedded 0.5B on 2 sequences of 512 tokens, logprobs in chunks of 512
  positions vs the full [batch × length × vocab] logits; full weights vs LoRA; and 2 sequences of
  2,048 tokens (LoRA, gradient checkpointing), where the logits set the peak. Each variant runs in
  its own process so its peak resident memory is its own.

GPU (``--gpu``, skipped without CUDA): with vLLM colocated (``backend = "vllm"``; the transformers
sampler where vLLM is not installed), G = 8 and 4 prompts per step on tier-1 tasks, for the 0.5B
(embedded) and 1.5B (``--model-1.5b``: random weights, or a hub id or local path) models:
generation tokens/s, update tokens/s, peak GPU memory, seconds per step, the engine-vs-trainer
logprob difference; then the largest Qwen2.5 shape (random weights from a config,
nothing downloaded) whose GRPO update (bf16 weights, AdamW, gradient checkpointing, 2 × 1024
tokens) fits in the memory of an 80 GB GPU (the process is capped at an H100's 79.6 GiB when the
GPU has more), with and without LoRA.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROLLOUT_SCRIPT = (
    "I will compute it in two steps.\n"
    "```python\nimport math\nx = math.factorial(300) % 1_000_003\nprint(x)\n```\n"
    "Now the sum.\n"
    "```python\ntotal = sum(i * i for i in range(200_000))\nprint(total % 97, x)\n```\n"
    "<answer>done</answer>"
)


# -- rollouts ------------------------------------------------------------------------------------


async def rollouts_pool_vs_cold(n: int) -> dict[str, Any]:
    from kernel_bridge.kernel import KernelPool
    from kernel_bridge.reasoner import Limits, Reasoner
    from kernel_bridge.samplers.scripted import ScriptedSampler
    from kernel_bridge.training.rollout import RolloutSettings, collect_rollouts
    from kernel_bridge.training.tasks import Task

    task = Task("bench", "Compute two things.", "done")
    settings = RolloutSettings(limits=Limits(max_steps=4, max_tokens=10_000))
    async with KernelPool(size=4) as pool:
        await collect_rollouts(ScriptedSampler(ROLLOUT_SCRIPT), pool, [task], 2, settings)  # warm
        begin = time.perf_counter()
        rollouts = await collect_rollouts(
            ScriptedSampler(ROLLOUT_SCRIPT), pool, [task], n, settings
        )
        pooled = time.perf_counter() - begin
    assert all(len(r.trace.steps) == 2 and r.trace.answer == "done" for r in rollouts)
    begin = time.perf_counter()
    for _ in range(n):
        async with Reasoner(ScriptedSampler(ROLLOUT_SCRIPT), limits=settings.limits) as reasoner:
            trace = await reasoner.run(task.question)  # a cold kernel per rollout
        assert len(trace.steps) == 2
    cold = time.perf_counter() - begin
    kernel_s = statistics.fmean(r.trace.timings["kernel_s"] for r in rollouts)
    return {
        "rollouts": n,
        "pool_s": pooled,
        "cold_s": cold,
        "pool_per_min": 60 * n / pooled,
        "cold_per_min": 60 * n / cold,
        "kernel_s_per_rollout": kernel_s,
    }


async def rollouts_with_the_policy(group: int, max_tokens: int) -> dict[str, Any]:
    import torch

    from kernel_bridge.kernel import KernelPool
    from kernel_bridge.reasoner import Limits
    from kernel_bridge.samplers.transformers import GenerationConfig, TransformersSampler
    from kernel_bridge.training.config import TrainConfig
    from kernel_bridge.training.policy import load_policy
    from kernel_bridge.training.rollout import RolloutSettings, collect_rollouts

    torch.manual_seed(0)
    model, tokenizer = load_policy(TrainConfig(model="local"))
    generation = GenerationConfig(temperature=1.0, max_new_tokens=max_tokens)
    sampler = TransformersSampler(model, tokenizer, config=generation, name="local")
    settings = RolloutSettings(limits=Limits(max_steps=3, max_tokens=max_tokens, step_timeout=20))
    async with KernelPool(size=4) as pool:
        begin = time.perf_counter()
        rollouts = await collect_rollouts(sampler, pool, [product_task()], group, settings)
        wall = time.perf_counter() - begin
    traces = [r.trace for r in rollouts]
    tokens = sum(t.usage.model_tokens for t in traces)
    return {
        "rollouts": group,
        "wall_s": wall,
        "per_min": 60 * group / wall,
        "model_tokens": tokens,
        "generation_tokens_per_s": tokens / wall,
        "kernel_s": sum(t.timings["kernel_s"] for t in traces),
        "code_steps": sum(len(t.steps) for t in traces),
    }


def product_task() -> Any:
    from kernel_bridge.training.tasks import Task

    return Task("p", "What is 123456789 * 987654321?", 121932631112635269, match="numeric")


# -- the update ----------------------------------------------------------------------------------


def synthetic_rollouts(tokenizer: Any, sequences: int, length: int, prompt: int = 64) -> list[Any]:
    """Scored rollouts of random tokens: ``sequences`` completions of one prompt, every token a
    model token, rewards 0/1 alternating (so every sequence has a non-zero advantage)."""
    import torch

    from kernel_bridge.trace import Segment, Trace
    from kernel_bridge.training.rewards import RewardResult
    from kernel_bridge.training.rollout import Rollout

    generator = torch.Generator().manual_seed(0)
    vocab = min(len(tokenizer), 150_000)
    prompt_ids = torch.randint(0, vocab, (prompt,), generator=generator).tolist()
    rollouts = []
    for i in range(sequences):
        ids = torch.randint(0, vocab, (length - prompt,), generator=generator).tolist()
        trace = Trace(
            model="bench",
            sampler={"name": "bench"},
            messages=[{"role": "user", "content": "q"}],
            prompt_token_ids=prompt_ids,
            segments=[Segment("model", "x", token_ids=ids)],
            finish_reason="max_tokens",
        )
        rollouts.append(Rollout(None, 0, trace, RewardResult(float(i % 2))))
    return rollouts


def measure_update(options: dict[str, Any]) -> dict[str, Any]:
    """One variant, in this (fresh) process: a warm-up update, then ``repeats`` timed ones."""
    import psutil
    import torch

    from kernel_bridge.training.config import TrainConfig
    from kernel_bridge.training.trainer import Trainer

    config = TrainConfig(
        model=options["model"],
        lora=options["lora"],
        logprob_chunk=options["chunk"],
        micro_batch_size=options["sequences"],
        gradient_checkpointing=options.get("checkpointing", False),
        max_seq_len=options["length"],
        learning_rate=1e-6,
    )
    trainer = Trainer(config, tasks=[product_task()])
    rollouts = synthetic_rollouts(trainer.tokenizer, options["sequences"], options["length"])
    loaded_mb = psutil.Process().memory_info().rss / 2**20
    cuda = trainer.device.type == "cuda"
    if options.get("warmup", True):
        trainer.update(rollouts)  # warm-up (allocator, AdamW state)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(options["repeats"]):
        begin = time.perf_counter()
        stats = trainer.update(rollouts)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - begin)
    seconds = statistics.median(times)
    if not stats["update_tokens"]:
        raise RuntimeError(f"the update of {options} was skipped (no advantage)")
    result = {
        **options,
        "update_s": seconds,
        "tokens_per_s": stats["update_tokens"] / seconds,
        "loaded_rss_mb": loaded_mb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable": sum(p.numel() for p in trainer.params.values()),
    }
    if cuda:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_self(flag: str, options: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """This script with ``flag OPTIONS_JSON`` in a fresh Python (its peak memory is its own):
    the JSON line it printed last, or None, and the tail of its output."""
    done = subprocess.run(
        [sys.executable, __file__, flag, json.dumps(options)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line), ""
    return None, (done.stderr or done.stdout)[-1500:]


def in_subprocess(options: dict[str, Any]) -> dict[str, Any]:
    """``measure_update(options)`` in a fresh Python."""
    result, tail = run_self("--measure-update", options)
    if result is not None:
        return result
    if "out of memory" in tail.lower() or "OutOfMemoryError" in tail:
        return {**options, "oom": True}
    raise RuntimeError(f"update measurement {options} failed:\n{tail}")


# -- GPU -----------------------------------------------------------------------------------------


async def gpu_steps(model: str, steps: int, out_dir: str) -> dict[str, Any]:
    """GRPO steps on tier-1 tasks, G = 8, 4 prompts; the last step's figures. Generation on vLLM
    colocated; where vLLM is not installed, on the transformers sampler (the row says which)."""
    from kernel_bridge.training.colocate import vllm_available
    from kernel_bridge.training.config import TrainConfig
    from kernel_bridge.training.trainer import Trainer

    backend = "vllm" if vllm_available() else "transformers"
    config = TrainConfig(
        model=model,
        backend=backend,
        tiers=[1],
        group_size=8,
        prompts_per_step=4,
        max_tokens=512,
        micro_batch_size=8,
        gradient_checkpointing=True,
        learning_rate=1e-6,
        steps=steps,
        gpu_memory_utilization=0.3,
        out_dir=out_dir,
        save_every=0,
        save_rollouts=False,
        progress=False,
    )
    async with Trainer(config) as trainer:
        history = []
        for _ in range(steps):
            history.append(await trainer.train_step())
    last = history[-1]
    keys = (
        "step_s", "rollout_s", "update_s", "generation_tokens_per_s", "update_tokens_per_s",
        "peak_memory_mb", "logprob_diff_max", "logprob_diff_mean", "reward", "tool_use",
    )  # fmt: skip
    return {"model": model, "backend": backend, **{k: last.get(k) for k in keys}}


QWEN25_SHAPES = {  # hidden, intermediate, layers, heads, kv heads (Qwen2.5 configs)
    "0.5B": (896, 4864, 24, 14, 2),
    "1.5B": (1536, 8960, 28, 12, 2),
    "3B": (2048, 11008, 36, 16, 2),
    "7B": (3584, 18944, 28, 28, 4),
    "14B": (5120, 13824, 48, 40, 8),
    "32B": (5120, 27648, 64, 40, 8),
}


def qwen25_config(shape: str, **extra: Any) -> Any:
    """The transformers config of a Qwen2.5 ``shape`` (its vocabulary, layers and heads)."""
    from transformers import Qwen2Config

    hidden, inter, layers, heads, kv = QWEN25_SHAPES[shape]
    return Qwen2Config(
        vocab_size=151_936,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        tie_word_embeddings=shape in ("0.5B", "1.5B", "3B"),
        **extra,
    )


H100_80GB = 81_559 * 2**20  # what an H100 80GB reports as its total memory


def gpu_fits(shape: str, lora: bool) -> dict[str, Any]:
    """Does one GRPO update of a Qwen2.5 ``shape`` (random bf16 weights) fit in 80 GB?"""
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, H100_80GB / total))
    from transformers import Qwen2ForCausalLM

    from kernel_bridge.training.config import TrainConfig
    from kernel_bridge.training.policy import add_lora, char_tokenizer
    from kernel_bridge.training.trainer import Trainer

    config = qwen25_config(shape)
    train = TrainConfig(
        model="tiny",  # only the name: the model is passed in
        lora=lora,
        gradient_checkpointing=True,
        micro_batch_size=2,
        max_seq_len=1024,
        backend="transformers",
    )
    torch.cuda.reset_peak_memory_stats()
    try:
        with torch.device("cuda"):
            model = Qwen2ForCausalLM(config).to(torch.bfloat16)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if lora:
            model = add_lora(model, train)
        tokenizer = char_tokenizer()
        tokenizer.pad_token_id = 0
        trainer = Trainer(train, model=model, tokenizer=tokenizer, tasks=[product_task()])
        rollouts = synthetic_rollouts(_VocabOf(151_936), 2, 1024)
        trainer.update(rollouts)
        trainer.update(rollouts)
        torch.cuda.synchronize()
        return {"shape": shape, "lora": lora, "fits": True,
                "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20}  # fmt: skip
    except torch.OutOfMemoryError:
        return {"shape": shape, "lora": lora, "fits": False}


def random_checkpoint(shape: str, path: Path) -> str:
    """A Qwen2.5 ``shape`` with random bf16 weights and the embedded model's tokenizer, saved
    where vLLM and transformers can load it; returns its ``hf:`` model name."""
    import torch
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    from kernel_bridge.training.colocate import vllm_model_path

    tokenizer = AutoTokenizer.from_pretrained(vllm_model_path("local"))
    config = qwen25_config(
        shape,
        max_position_embeddings=32_768,
        eos_token_id=tokenizer.eos_token_id,
        torch_dtype="bfloat16",
    )
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return f"hf:{path}"


class _VocabOf:
    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


def gpu_fit_in_subprocess(shape: str, lora: bool) -> dict[str, Any]:
    result, tail = run_self("--fits", {"shape": shape, "lora": lora})
    if result is not None:
        return result
    return {"shape": shape, "lora": lora, "fits": False, "error": tail[-500:]}


# -- tables --------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def cpu_table(out: dict[str, Any]) -> str:
    rows = [
        "| measurement | kernel-bridge | baseline (same run) | ratio |",
        "|---|---:|---:|---:|",
    ]
    r = out["rollouts"]
    rows.append(
        f"| scripted rollouts/min, 2 blocks each ({r['rollouts']} rollouts) | "
        f"KernelPool(4), concurrent: {fmt(r['pool_per_min'])} | cold kernel per rollout, "
        f"sequential: {fmt(r['cold_per_min'])} | {r['pool_per_min'] / r['cold_per_min']:.1f}× |"
    )
    g = out.get("policy")
    if g:
        kernel_share = g["kernel_s"] / g["wall_s"]
        rows.append(
            f"| embedded 0.5B rollouts/min (G={g['rollouts']}, float32) | {fmt(g['per_min'], 2)} "
            f"({fmt(g['generation_tokens_per_s'])} generated tok/s) | | |"
        )
        rows.append(
            f"| where that time went | generation {fmt(100 * (1 - kernel_share))}% | kernel "
            f"{fmt(100 * kernel_share)}% ({g['code_steps']} blocks, {fmt(g['kernel_s'], 2)} s) | |"
        )
    updates = out.get("updates", [])
    for u in updates:
        label = (
            f"update, {'LoRA r=16' if u['lora'] else 'full weights'}"
            f"{', gradient checkpointing' if u.get('checkpointing') else ''}, logprobs "
            f"{'in chunks of ' + str(u['chunk']) if u['chunk'] else 'unchunked'}"
        )
        if u.get("oom"):
            rows.append(f"| {label} | out of memory | | |")
            continue
        base = next(
            (b for b in updates if b["chunk"] == 0 and _same_shape(b, u)),
            None,
        )
        ratio = "baseline"
        if base is not None and base is not u and not base.get("oom"):
            ratio = (
                f"vs unchunked: {u['tokens_per_s'] / base['tokens_per_s']:.2f}× tok/s, "
                f"{u['peak_rss_mb'] / base['peak_rss_mb']:.2f}× peak"
            )
        rows.append(
            f"| {label} ({u['sequences']}×{u['length']} tokens) | {fmt(u['tokens_per_s'])} tok/s, "
            f"{fmt(u['update_s'], 1)} s, peak RSS {fmt(u['peak_rss_mb'] / 1024, 2)} GiB "
            f"(model loaded: {fmt(u['loaded_rss_mb'] / 1024, 2)} GiB) | | {ratio} |"
        )
    short = [u for u in updates if u["chunk"] and not u.get("oom") and u["length"] == 512]
    full = next((u for u in short if not u["lora"]), None)
    lora = next((u for u in short if u["lora"]), None)
    if full and lora:
        rows.append(
            f"| LoRA vs full weights (chunked) | {fmt(lora['tokens_per_s'])} tok/s, "
            f"{fmt(lora['peak_rss_mb'] / 1024, 2)} GiB | {fmt(full['tokens_per_s'])} tok/s, "
            f"{fmt(full['peak_rss_mb'] / 1024, 2)} GiB | "
            f"{lora['tokens_per_s'] / full['tokens_per_s']:.2f}× tok/s, "
            f"{lora['peak_rss_mb'] / full['peak_rss_mb']:.2f}× peak |"
        )
    return "\n".join(rows)


def _same_shape(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("lora", "sequences", "length", "checkpointing")
    return all(a.get(k) == b.get(k) for k in keys)


def gpu_table(out: dict[str, Any]) -> str:
    rows = [
        "| model | generation on | s/step | generation tok/s | update tok/s | peak GPU GiB | "
        "logprob diff max / mean |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in out.get("gpu_steps", []):
        if "error" in s:
            rows.append(f"| {s['model']} | {s['error']} | | | | | |")
            continue
        rows.append(
            f"| {s['model']} | {s['backend']} | {fmt(s['step_s'])} | "
            f"{fmt(s['generation_tokens_per_s'])} | "
            f"{fmt(s['update_tokens_per_s'])} | {fmt(s['peak_memory_mb'] / 1024)} | "
            f"{fmt(s['logprob_diff_max'], 3)} / {fmt(s['logprob_diff_mean'], 4)} |"
        )
    fits = out.get("gpu_fits", [])
    if fits:
        rows.append("")
        rows.append("| Qwen2.5 shape | full weights | LoRA r=16 |")
        rows.append("|---|---|---|")
        for shape in QWEN25_SHAPES:
            cells = []
            for lora in (False, True):
                f = next((x for x in fits if x["shape"] == shape and x["lora"] == lora), None)
                cells.append(
                    "–"
                    if f is None
                    else f"fits ({fmt(f['peak_gpu_mb'] / 1024)} GiB)"
                    if f["fits"]
                    else "does not fit"
                )
            rows.append(f"| {shape} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows)


# -- the CPU step's levers (--cpu-step) ----------------------------------------------------------


async def generation_levers(prompts: int, group: int, max_tokens: int) -> list[dict[str, Any]]:
    """Rollouts of tier-1 tasks with the embedded model, four ways: float32 one stream at a time
    (the old path), int8 one at a time, int8 with every stream of the step in one batch, and int8
    batched from a LoRA-wrapped float model's int8 copy (what the trainer does). The one-at-a-time
    paths run one group (their tokens/s is the figure); the batched ones the whole step."""
    import torch

    from kernel_bridge.embedded import int8_copy, load_embedded
    from kernel_bridge.kernel import KernelPool
    from kernel_bridge.reasoner import Limits
    from kernel_bridge.samplers.batched import BatchedSampler
    from kernel_bridge.samplers.transformers import GenerationConfig, TransformersSampler
    from kernel_bridge.training.config import TrainConfig
    from kernel_bridge.training.policy import load_policy
    from kernel_bridge.training.rollout import RolloutSettings, collect_rollouts
    from kernel_bridge.training.tasks import builtin_tasks, split_tasks

    tasks = split_tasks(builtin_tasks([1]))[0][:prompts]
    generation = GenerationConfig(temperature=1.0, max_new_tokens=max_tokens, seed=0)
    settings = RolloutSettings(limits=Limits(max_steps=3, max_tokens=max_tokens, step_timeout=10))
    float_model, tokenizer = load_embedded(dtype="float32", adapter=None)
    int8_model, _ = load_embedded(adapter=None)
    policy, _ = load_policy(TrainConfig(model="local-base", lora=True, lora_rank=8))
    ways: list[tuple[str, Any, int]] = [
        (
            "float32, one at a time",
            TransformersSampler(float_model, tokenizer, config=generation),
            1,
        ),
        ("int8, one at a time", TransformersSampler(int8_model, tokenizer, config=generation), 1),
        ("int8, one batch", BatchedSampler(int8_model, tokenizer, config=generation), prompts),
    ]
    begin = time.perf_counter()
    copy = int8_copy(policy)
    repack_s = time.perf_counter() - begin
    batched_copy = BatchedSampler(copy, tokenizer, config=generation)
    ways.append(("int8 copy of the LoRA policy, one batch", batched_copy, prompts))
    results = []
    async with KernelPool(size=8) as pool:
        for name, sampler, n in ways:
            torch.manual_seed(0)
            begin = time.perf_counter()
            rollouts = await collect_rollouts(sampler, pool, tasks[:n], group, settings)
            wall = time.perf_counter() - begin
            tokens = sum(r.trace.usage.model_tokens for r in rollouts)
            results.append(
                {
                    "way": name,
                    "rollouts": len(rollouts),
                    "model_tokens": tokens,
                    "wall_s": wall,
                    "tokens_per_s": tokens / wall,
                    "step_s": prompts * group * (tokens / len(rollouts)) / (tokens / wall),
                }
            )
    results[-1]["repack_s"] = repack_s
    return results


def update_levers(group: int, completion: int) -> list[dict[str, Any]]:
    """One group's update (LoRA rank 8, micro-batches of 2, every sequence with an advantage)
    with the default prompt (protocol and worked example) and with no system prompt, the shared
    prompt run once per micro-batch or with every row."""
    import torch

    from kernel_bridge.parsing import get_profile
    from kernel_bridge.prompts import default_examples, default_system_prompt
    from kernel_bridge.trace import Segment, Trace
    from kernel_bridge.training.config import TrainConfig
    from kernel_bridge.training.policy import load_policy
    from kernel_bridge.training.rewards import RewardResult
    from kernel_bridge.training.rollout import Rollout
    from kernel_bridge.training.tasks import Task
    from kernel_bridge.training.trainer import Trainer

    profile = get_profile("markdown")
    question = [{"role": "user", "content": "How many prime numbers are there below 54321?"}]
    prompts = {
        "default prompt": [
            {"role": "system", "content": default_system_prompt(profile)},
            *default_examples(profile),
            *question,
        ],
        "no system prompt": question,
    }
    config = TrainConfig(
        model="local-base", lora=True, lora_rank=8, micro_batch_size=2, progress=False
    )
    model, tokenizer = load_policy(config)
    generator = torch.Generator().manual_seed(0)
    results = []
    for prompt_name, messages in prompts.items():
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        prompt_ids = list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
        rollouts = []
        for i in range(group):
            ids = torch.randint(0, 150_000, (completion,), generator=generator).tolist()
            trace = Trace(
                model="bench",
                sampler={"name": "bench"},
                messages=messages,
                prompt_token_ids=prompt_ids,
                segments=[Segment("model", "x", token_ids=ids)],
                finish_reason="max_tokens",
            )
            rollouts.append(Rollout(None, 0, trace, RewardResult(float(i % 2))))
        for share in (False, True):
            trainer = Trainer(
                config.replace(share_prompt=share),
                model=model,
                tokenizer=tokenizer,
                tasks=[Task("t", "q", 1)],
            )
            begin = time.perf_counter()
            trainer.update(rollouts)
            results.append(
                {
                    "prompt": prompt_name,
                    "prompt_tokens": len(prompt_ids),
                    "share_prompt": share,
                    "sequences": group,
                    "completion_tokens": completion,
                    "update_s": time.perf_counter() - begin,
                }
            )
    return results


def cpu_step_table(out: dict[str, Any]) -> str:
    rows = ["| generation | rollouts | model tokens | tokens/s | 32 rollouts take (s) |"]
    rows.append("|---|---:|---:|---:|---:|")
    base = out["generation"][0]["tokens_per_s"]
    for r in out["generation"]:
        ratio = r["tokens_per_s"] / base
        rows.append(
            f"| {r['way']} | {r['rollouts']} | {r['model_tokens']} | "
            f"{r['tokens_per_s']:.1f} ({ratio:.1f}×) | {r['step_s']:.0f} |"
        )
    repack = out["generation"][-1].get("repack_s")
    if repack is not None:
        rows.append(f"\nre-packing the int8 copy from the LoRA policy: {repack:.1f} s\n")
    rows.append("| update of one group | prompt tokens | prompt once | seconds | ratio |")
    rows.append("|---|---:|---|---:|---:|")
    base = out["update"][0]["update_s"]
    for r in out["update"]:
        rows.append(
            f"| {r['sequences']} × {r['completion_tokens']} completion tokens, {r['prompt']} | "
            f"{r['prompt_tokens']} | {'yes' if r['share_prompt'] else 'no'} | "
            f"{r['update_s']:.1f} | {r['update_s'] / base:.2f}× |"
        )
    return "\n".join(rows)


def cpu_part(quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["rollouts"] = asyncio.run(rollouts_pool_vs_cold(8 if quick else 16))
    if not quick:
        out["policy"] = asyncio.run(rollouts_with_the_policy(group=4, max_tokens=96))
    variants = [{"chunk": 0, "lora": True}, {"chunk": 512, "lora": True}]
    if not quick:
        variants = [{"chunk": 0, "lora": False}, {"chunk": 512, "lora": False}, *variants]
    # On 2 CPU cores one update of the 0.5B takes about a minute: one timed update, no warm-up.
    size = {"model": "local", "sequences": 2, "length": 512, "repeats": 1, "warmup": False}
    out["updates"] = [in_subprocess({**size, **v}) for v in variants]
    if not quick:  # long traces: here the logits, not the weights, set the peak
        long = {**size, "sequences": 2, "length": 2048, "lora": True, "checkpointing": True}
        out["updates"] += [in_subprocess({**long, "chunk": chunk}) for chunk in (0, 512)]
    return out


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--quick", action="store_true", help="fewer rollouts; no policy rollouts")
    cli.add_argument("--gpu", action="store_true", help="also the GPU part (needs CUDA; vLLM)")
    cli.add_argument("--gpu-only", action="store_true", help="the GPU part alone")
    cli.add_argument(
        "--model-1.5b",
        dest="model_15b",
        default="random",
        help="hf:ID_OR_PATH of a 1.5B model, or 'random' (default): Qwen2.5-1.5B's shape with "
        "random weights (nothing to download; every completion runs to max_tokens)",
    )
    cli.add_argument(
        "--cpu-step",
        action="store_true",
        help="the CPU step's levers only: int8 and batched rollouts, the prompt once in the update",
    )
    cli.add_argument("--json", type=Path, help="also write the numbers here")
    cli.add_argument("--measure-update", help=argparse.SUPPRESS)
    cli.add_argument("--fits", help=argparse.SUPPRESS)
    args = cli.parse_args()
    if args.measure_update:
        print(json.dumps(measure_update(json.loads(args.measure_update))))
        return 0
    if args.fits:
        options = json.loads(args.fits)
        print(json.dumps(gpu_fits(options["shape"], options["lora"])))
        return 0

    out: dict[str, Any] = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        }
    }
    if args.cpu_step:
        out["generation"] = asyncio.run(generation_levers(prompts=8, group=4, max_tokens=150))
        out["update"] = update_levers(group=4, completion=150)
        print(cpu_step_table(out))
    elif not args.gpu_only:
        out.update(cpu_part(args.quick))
        print("## CPU\n")
        print(cpu_table(out))

    import torch

    if (args.gpu or args.gpu_only) and torch.cuda.is_available():
        import tempfile

        out["gpu_steps"] = []
        for model in ("local", args.model_15b):
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    if model == "random":
                        model = random_checkpoint("1.5B", Path(tmp) / "qwen2.5-1.5b-random")
                    out["gpu_steps"].append(asyncio.run(gpu_steps(model, 3, tmp)))
            except Exception as e:  # a model that cannot be fetched here, say
                out["gpu_steps"].append({"model": model, "error": f"{type(e).__name__}: {e}"})
        out["gpu_fits"] = []
        for lora in (False, True):
            for shape in QWEN25_SHAPES:
                fit = gpu_fit_in_subprocess(shape, lora)
                out["gpu_fits"].append(fit)
                if not fit["fits"]:
                    break  # larger shapes will not fit either
        print(f"\n## GPU ({torch.cuda.get_device_name()})\n")
        print(gpu_table(out))
    elif args.gpu or args.gpu_only:
        print("\n## GPU\n\nno CUDA device here: the GPU figures are pending")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def trl_vs_own_trainer(steps: int = 6) -> dict[str, Any]:
    """``python benchmarks/train.py --trl``: rollouts per minute through TRL's GRPOTrainer (with
    ``KernelRollouts``) vs kernel-bridge's own ``Trainer``, in one run, on the same tiny random
    Qwen2, built-in tier-1 tasks, G = 4, 2 prompts per step, float32 on CPU, no gradient
    checkpointing. Two kinds of rollout: the tiny policy sampling (``BatchedSampler``; it writes
    no code) and a scripted stand-in answering with two code blocks (``ROLLOUT_SCRIPT``, so the
    kernels work). Rewards: correct, format, tool_errors and a synthetic term that differs
    between completions (from the trace id), so both trainers run the whole update every step.
    ``steps`` measured steps each, after one warm-up step (kernels, first pass); a TRL step runs
    from one rollout_func call to the next. Prints a markdown table."""
    import tempfile

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl import GRPOConfig, GRPOTrainer

    from kernel_bridge.reasoner import Limits
    from kernel_bridge.samplers.scripted import ScriptedSampler
    from kernel_bridge.training.config import TrainConfig
    from kernel_bridge.training.policy import tiny_policy
    from kernel_bridge.training.rollout import RolloutSettings
    from kernel_bridge.training.tasks import builtin_tasks, split_tasks
    from kernel_bridge.training.trainer import Trainer
    from kernel_bridge.training.trl import KernelRollouts, reward_funcs, task_dataset

    group, prompts, per_step = 4, 2, 8
    tasks, _ = split_tasks(builtin_tasks([1]))

    def spread(trace: Any, task: Any) -> float:
        return int(trace.id, 16) % 7 / 7

    rewards = {"correct": 1.0, "format": 0.1, "tool_errors": 0.1, spread: 1.0}
    kinds = {"tiny policy, no code": 48, "scripted, 2 code blocks": 400}  # max_tokens of each
    rows: list[dict[str, Any]] = []
    now: dict[str, Any] = {}  # the TRL run in progress: its rollout_func and call times

    async def own(config: TrainConfig, scripted: bool) -> list[dict[str, Any]]:
        model, tokenizer = tiny_policy(seed=0)
        async with Trainer(config, model=model, tokenizer=tokenizer, reward=rewards) as trainer:
            if scripted:
                trainer.sampler = ScriptedSampler(ROLLOUT_SCRIPT)
                trainer.sampler.reset_cache = lambda: None  # nothing cached
            return [await trainer.train_step() for _ in range(steps + 1)][1:]

    def timed(batch: Any, trainer: Any) -> dict[str, Any]:
        begin = time.perf_counter()
        out = now["rollouts"](batch, trainer)
        now["calls"].append((begin, time.perf_counter()))
        return out

    for kind, max_tokens in kinds.items():
        scripted = kind.startswith("scripted")
        with tempfile.TemporaryDirectory() as tmp:
            config = TrainConfig(
                model="tiny", device="cpu", dtype="float32", tiers=[1], group_size=group,
                prompts_per_step=prompts, max_tokens=max_tokens, system_prompt="none",
                learning_rate=1e-5, micro_batch_size=per_step, out_dir=tmp, save_rollouts=False,
                report_to=[], progress=False,
            )  # fmt: skip
            metrics = asyncio.run(own(config, scripted))
            rows.append({
                "kind": kind, "trainer": "kernel-bridge Trainer",
                "step_s": sum(m["step_s"] for m in metrics),
                "rollout_s": sum(m["rollout_s"] for m in metrics),
            })  # fmt: skip

            settings = RolloutSettings(
                limits=Limits(max_steps=config.max_code_steps, max_tokens=max_tokens,
                              step_timeout=config.step_timeout,
                              time_limit=config.rollout_time_limit),
                system_prompt="none",
            )  # fmt: skip
            sampler = ScriptedSampler(ROLLOUT_SCRIPT) if scripted else "batched"
            now.update(
                rollouts=KernelRollouts(sampler, tasks=tasks, settings=settings, pool_size=4),
                calls=[],
            )
            args = GRPOConfig(
                output_dir=tmp, max_steps=steps + 1, num_generations=group,
                per_device_train_batch_size=per_step, max_completion_length=max_tokens + 512,
                learning_rate=1e-5, bf16=False, use_cpu=True, gradient_checkpointing=False,
                logging_steps=1, save_strategy="no", report_to="none", seed=0,
                disable_tqdm=True,
            )  # fmt: skip
            model, tokenizer = tiny_policy(seed=0)
            trainer = GRPOTrainer(
                model, reward_funcs=reward_funcs(rewards), args=args,
                train_dataset=task_dataset(tasks), processing_class=tokenizer,
                rollout_func=timed,
            )  # fmt: skip
            with now["rollouts"]:
                trainer.train()
            end = time.perf_counter()
            calls = now["calls"][1:]
            rows.append({
                "kind": kind, "trainer": "TRL GRPOTrainer + KernelRollouts",
                "step_s": end - calls[0][0], "rollout_s": sum(b - a for a, b in calls),
            })  # fmt: skip
    n = steps * per_step
    print(f"\n## TRL vs kernel-bridge's trainer ({steps} steps of {per_step} rollouts each)\n")
    print("| rollouts | trainer | rollouts/min (whole step) | rollouts/min (rollout phase) "
          "| s/step | whole step vs own |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        base = next(r for r in rows if r["kind"] == row["kind"])
        row["per_min"] = 60 * n / row["step_s"]
        row["rollout_per_min"] = 60 * n / row["rollout_s"]
        row["vs_own"] = base["step_s"] / row["step_s"]
        print(f"| {row['kind']} | {row['trainer']} | {row['per_min']:.0f} | "
              f"{row['rollout_per_min']:.0f} | {row['step_s'] / steps:.2f} | "
              f"{row['vs_own']:.2f}× |")  # fmt: skip
    return {"steps": steps, "rollouts_per_step": per_step, "rows": rows}


if __name__ == "__main__":
    if "--trl" in sys.argv[1:]:
        trl_vs_own_trainer()
        sys.exit(0)
    sys.exit(main())
