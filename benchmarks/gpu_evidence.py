"""GPU evidence for the training path (issue 19): one script that runs as-is on one CUDA GPU and
writes a markdown table, its numbers and its log under $OUT (or --out DIR).

    python benchmarks/gpu_evidence.py                   # every part, about 8 minutes on an H200
    python benchmarks/gpu_evidence.py --cpu-dry-run     # every code path on CPU, tiny shapes
    python benchmarks/gpu_evidence.py --parts update,fits --budget 300

Parts, in the order they run (``--parts`` takes names, ``phase1``, ``phase2`` or ``all``):

- ``env``: the machine, the libraries, whether vLLM is there (it is not on the device machine of
  this workplace: every rollout here generates on the transformers samplers).
- ``gguf``: the embedded model's real weights: the GGUF from carried pieces (verified against its
  sha256 by ``assemble_gguf``), or the installed chunk packages, converted once to safetensors.
  Without it the 0.5B runs with random weights of the same shape, and the table says so.
- ``tiny``: the tiny-policy learning test of ``tests/test_training_learns.py`` (its config and its
  criteria) on the GPU, in float32 (the test's precision) and bfloat16.
- ``update``: one ``Trainer.update`` (forward, backward, AdamW) of 8 × 1,024 tokens for the 0.5B
  and 1.5B shapes, full weights and LoRA: tokens/s and peak GPU memory (random weights: the speed
  depends on the shape only).
- ``step-0.5B``, ``step-1.5B``: GRPO steps at G = 8 × 8 prompts on tier-1 tasks, rollouts in one
  ``BatchedSampler`` of 64 rows, random weights of each shape (a synthetic reward term that differs
  between completions makes every step run the whole update); seconds per step, generated and
  update tokens/s, peak memory, the sampler-vs-trainer logprob difference in bfloat16.
- ``fits``: the largest Qwen2.5 shape whose GRPO update (random bf16 weights, AdamW, gradient
  checkpointing, 2 × 1,024 tokens) fits, with and without LoRA, each try in its own process; the
  peak says whether it also fits an 80 GB GPU.
- ``sampler``: generated tokens/s of one rollout (``TransformersSampler``) and of a group of 8
  (``BatchedSampler``), real weights where the GGUF is there.
- ``grpo``: with the real weights only, a short GRPO run on tier-1 tasks (LoRA, G = 8 × 8) and the
  held-out solve rate before and after; as many steps (up to 20) as its time allows.

Every part runs in a child process (forked from a parent that has imported torch but never
touched CUDA, or started fresh when a forked child cannot use CUDA) with its own time limit;
a part that would not fit in the time left is skipped with a line in the table, and the table,
``results.json`` and ``evidence.log`` are written after each part, so a timeout loses nothing.

The device machine of this workplace gets the GGUF in pieces, one per call, and runs the parts
that need no real weights in the background meanwhile (benchmarks/gpu_run.md, made by
benchmarks/gpu_carry.sh): ``--setup``, ``--receive``, ``--background`` and ``--after`` are those
steps.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import datetime
import gc
import hashlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import train as bench  # noqa: E402  (benchmarks/train.py: shapes, synthetic rollouts)

KB = Path(os.environ.get("KB", "/tmp/kb-gpu"))  # the device machine's scratch space (gpu_run.md)
CARRY = ROOT / ".gpu-carry"
GIB = 2**30

GPU_SIZES = {
    "update_sequences": 8, "update_length": 1024, "update_repeats": 2,
    "group": 8, "prompts": 8, "max_tokens": 512, "steps": 2, "rollout_batch": 64,
    "sampler_tokens": 256, "fit_sequences": 2, "fit_length": 1024, "tiny_steps": 20,
    "grpo_steps": 20, "grpo_eval_tasks": 42, "grpo_max_tokens": 512, "pool": 16,
}  # fmt: skip
DRY_SIZES = {
    "update_sequences": 2, "update_length": 96, "update_repeats": 1,
    "group": 2, "prompts": 2, "max_tokens": 8, "steps": 2, "rollout_batch": 4,
    "sampler_tokens": 8, "fit_sequences": 1, "fit_length": 64, "tiny_steps": 2,
    "grpo_steps": 1, "grpo_eval_tasks": 2, "grpo_max_tokens": 8, "pool": 2,
}  # fmt: skip
# The dry run's stand-ins for the shapes: hidden, intermediate, layers, heads, kv heads.
DRY_SHAPES = {"0.5B": (64, 128, 2, 4, 2), "1.5B": (96, 192, 2, 4, 2)}
DRY_FIT_SHAPES = {"dry-S": (32, 64, 1, 2, 1), "dry-M": (64, 128, 2, 4, 2)}


# -- what the parts share ------------------------------------------------------------------------


def spread(trace: Any, task: Any) -> float:
    """A reward term that differs between completions (from the trace id): random weights earn
    no other reward, and a group scored alike would skip its update."""
    return int(trace.id, 16) % 7 / 7


def dtype_of(ctx: dict[str, Any]) -> Any:
    import torch

    return getattr(torch, ctx["dtype"])


def load_tokenizer(ctx: dict[str, Any]) -> Any:
    """The embedded model's tokenizer (carried: written by another transformers release, so
    tokenizer.json alone if the directory does not load), else the character tokenizer."""
    tokenizer = None
    folder = Path(ctx["tokenizer_dir"]) if ctx.get("tokenizer_dir") else None
    if folder is not None:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except Exception as e:
            print(f"tokenizer: {folder} did not load ({e}); reading its tokenizer.json", flush=True)
            tokenizer = PreTrainedTokenizerFast(
                tokenizer_file=str(folder / "tokenizer.json"),
                eos_token="<|im_end|>",
                pad_token="<|endoftext|>",
            )
            template = folder / "chat_template.jinja"
            if template.is_file():
                tokenizer.chat_template = template.read_text()
    if tokenizer is None:
        from kernel_bridge.training.policy import char_tokenizer

        tokenizer = char_tokenizer()
    if tokenizer.eos_token_id is None and folder is not None:  # Qwen's chat markers
        tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = "<|endoftext|>" if folder is not None else tokenizer.eos_token
    return tokenizer


def shape_config(ctx: dict[str, Any], shape: str, vocab: int) -> Any:
    """The transformers config of ``shape``: the embedded model's own config.json for the 0.5B
    (its lm_head is untied), Qwen2.5's for the others, a tiny stand-in in the dry run."""
    from transformers import AutoConfig, Qwen2Config

    if ctx["dry"]:
        hidden, inter, layers, heads, kv = {**DRY_SHAPES, **DRY_FIT_SHAPES}[shape]
        return Qwen2Config(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
            max_position_embeddings=32_768, tie_word_embeddings=False,
        )  # fmt: skip
    own = Path(ctx.get("tokenizer_dir") or "/nonexistent") / "config.json"
    if shape == "0.5B" and own.is_file():
        try:
            return AutoConfig.from_pretrained(own.parent)
        except Exception as e:  # written by another transformers release
            print(f"config: {own} did not load ({e}); Qwen2.5-0.5B's, untied", flush=True)
            config = bench.qwen25_config(shape, max_position_embeddings=32_768)
            config.tie_word_embeddings = False  # the GGUF has its own output weight
            return config
    return bench.qwen25_config(shape, max_position_embeddings=32_768)


def random_policy(ctx: dict[str, Any], shape: str, checkpointing: bool = True) -> Any:
    """A model of ``shape`` with random weights (created in the run's dtype on its device: no
    float32 copy of a large model) and the embedded model's tokenizer."""
    import torch
    from transformers import Qwen2ForCausalLM

    tokenizer = load_tokenizer(ctx)
    config = shape_config(ctx, shape, len(tokenizer))
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype_of(ctx))
    try:
        with torch.device(ctx["device"]):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to(dtype_of(ctx))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.name_or_path = f"random-{shape}"
    model.eval()
    return model, tokenizer


def real_policy(ctx: dict[str, Any], **config: Any) -> Any:
    from kernel_bridge.training.config import TrainConfig
    from kernel_bridge.training.policy import load_policy

    train = TrainConfig(model="local-base", dtype=ctx["dtype"], device=ctx["device"], **config)
    return load_policy(train)


def cuda(ctx: dict[str, Any]) -> bool:
    return ctx["device"] == "cuda"


def reset_peak(ctx: dict[str, Any]) -> None:
    import torch

    if cuda(ctx):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mb(ctx: dict[str, Any]) -> float:
    import torch

    if cuda(ctx):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def free(ctx: dict[str, Any]) -> None:
    import torch

    gc.collect()
    if cuda(ctx):
        torch.cuda.empty_cache()


def heldout_tier1() -> list[Any]:
    from kernel_bridge.training.tasks import builtin_tasks, split_tasks

    return split_tasks(builtin_tasks([1]))[1]


def step_keys(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "step", "step_s", "rollout_s", "update_s", "generation_tokens_per_s",
        "update_tokens_per_s", "peak_memory_mb", "logprob_diff_max", "logprob_diff_mean",
        "logprob_tokens_compared", "logprob_fallbacks", "model_tokens_total", "reward",
        "correct", "tool_use", "answered", "sequences_updated", "update_tokens",
    )  # fmt: skip
    return {k: metrics.get(k) for k in keys}


# -- the parts -----------------------------------------------------------------------------------


def part_env(ctx: dict[str, Any]) -> dict[str, Any]:
    import importlib.metadata as md
    import importlib.util

    import torch

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "vllm": importlib.util.find_spec("vllm") is not None,
        **{
            name: version(name)
            for name in ("transformers", "peft", "accelerate", "jupyter_client", "ipykernel")
        },
    }
    if cuda(ctx):
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=props.total_memory / GIB,
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
        )
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            info["driver"] = subprocess.run(
                query, capture_output=True, text=True, timeout=20, check=False
            ).stdout.strip()
    return info


def part_gguf(ctx: dict[str, Any]) -> dict[str, Any]:
    """The real weights: assemble the carried pieces (if any), then the verified GGUF, then its
    conversion to safetensors (not in the dry run: the CPU part of it is what the tests cover)."""
    from kernel_bridge.embedded import (
        GGUF_NAME,
        GGUF_SHA256,
        EmbeddedModelError,
        assemble_gguf,
        cache_root,
        gguf_path,
        load_embedded,
    )

    result: dict[str, Any] = {"real": False, "cache": str(cache_root())}
    pieces_dir = Path(ctx["pieces"]) if ctx.get("pieces") else None
    dest = cache_root() / GGUF_NAME
    verified = dest.with_name(dest.name + ".sha256")
    done = verified.is_file() and verified.read_text().strip() == GGUF_SHA256
    if not done and pieces_dir is not None and (pieces_dir / "SHA256SUMS").is_file():
        names = [line.split()[1] for line in (pieces_dir / "SHA256SUMS").read_text().splitlines()]
        missing = [n for n in names if not (pieces_dir / n).is_file()]
        result["pieces"] = len(names)
        if missing:
            result["pieces_missing"] = missing
        else:
            begin = time.perf_counter()
            assemble_gguf([pieces_dir / n for n in names], dest, GGUF_SHA256)
            result["assemble_s"] = time.perf_counter() - begin
    try:
        path = gguf_path()  # the verified file in the cache, or one assembled from the packages
    except EmbeddedModelError as e:
        result["reason"] = str(e).split(";")[0]
        return result
    result.update(real=True, gguf=str(path), sha256=GGUF_SHA256)
    if ctx["dry"]:
        result["note"] = "dry run: verified only; the CPU parts use tiny stand-ins"
        result["real"] = False
        return result
    begin = time.perf_counter()
    model, _ = load_embedded(dtype="bfloat16")  # converts once (safetensors in the cache)
    result["convert_s"] = time.perf_counter() - begin
    result["parameters"] = sum(p.numel() for p in model.parameters())
    return result


def part_tiny(ctx: dict[str, Any]) -> dict[str, Any]:
    """tests/test_training_learns.py's learning test: its tasks, reward, config and criteria."""
    from kernel_bridge.training.trainer import Trainer
    from tests.test_training_learns import DIGIT_TASKS, share_of_digits, tiny_config

    steps = ctx["sizes"]["tiny_steps"]
    dtypes = ["float32", "bfloat16"] if ctx["dtype"] == "bfloat16" else [ctx["dtype"]]
    runs = []
    for dtype in dtypes:
        if time.time() > ctx["deadline"] - 5:
            break
        work = Path(ctx["work"]) / f"tiny-{dtype}"
        shutil.rmtree(work, ignore_errors=True)
        config = tiny_config(work, device=ctx["device"], dtype=dtype, steps=steps)
        begin = time.perf_counter()

        async def go(config: Any = config) -> list[dict[str, Any]]:
            async with Trainer(config, tasks=DIGIT_TASKS, reward=share_of_digits) as trainer:
                return await trainer.train()

        history = asyncio.run(go())
        rewards = [m["reward"] for m in history]
        first, last = statistics.fmean(rewards[:5]), statistics.fmean(rewards[-5:])
        compared = [m["logprob_diff_max"] for m in history if m["logprob_tokens_compared"]]
        runs.append(
            {
                "dtype": dtype,
                "steps": len(history),
                "seconds": time.perf_counter() - begin,
                "rewards": rewards,
                "first5": first,
                "last5": last,
                "learns": first < 0.3 and last > first + 0.3,
                "logprob_diff_max": max(compared) if compared else None,
                "fallbacks": sum(m["logprob_fallbacks"] for m in history),
            }
        )
        save_progress(ctx, {"runs": runs})
    return {"runs": runs}


def update_once(ctx: dict[str, Any], shape: str, lora: bool) -> dict[str, Any]:
    import torch

    from kernel_bridge.training.config import TrainConfig
    from kernel_bridge.training.policy import add_lora
    from kernel_bridge.training.trainer import Trainer

    s = ctx["sizes"]
    config = TrainConfig(
        model=f"random-{shape}", lora=lora, gradient_checkpointing=True,
        micro_batch_size=s["update_sequences"], max_seq_len=s["update_length"],
        learning_rate=1e-6, backend="transformers", rollout_weights="trainer",
    )  # fmt: skip
    model, tokenizer = random_policy(ctx, shape)
    if lora:
        model = add_lora(model, config)
    trainer = Trainer(config, model=model, tokenizer=tokenizer, tasks=[bench.product_task()])
    rollouts = bench.synthetic_rollouts(tokenizer, s["update_sequences"], s["update_length"])
    try:
        trainer.update(rollouts)  # warm-up: allocator, AdamW state, kernels
        reset_peak(ctx)
        times = []
        for _ in range(s["update_repeats"]):
            begin = time.perf_counter()
            stats = trainer.update(rollouts)
            if cuda(ctx):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - begin)
    except torch.OutOfMemoryError:
        return {"shape": shape, "lora": lora, "oom": True}
    seconds = statistics.median(times)
    return {
        "shape": shape,
        "lora": lora,
        "tokens": stats["update_tokens"],
        "update_s": seconds,
        "tokens_per_s": stats["update_tokens"] / seconds,
        "peak_mb": peak_mb(ctx),
        "trainable": sum(p.numel() for p in trainer.params.values()),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def part_update(ctx: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for shape in ("0.5B", "1.5B"):
        for lora in (False, True):
            if time.time() > ctx["deadline"] - 5:
                return {"rows": rows, "note": "time ran out before the other variants"}
            rows.append(update_once(ctx, shape, lora))
            save_progress(ctx, {"rows": rows, "note": "stopped before the other variants"})
            free(ctx)
    return {"rows": rows}


def part_step(ctx: dict[str, Any], shape: str) -> dict[str, Any]:
    """GRPO steps of random weights of ``shape`` through the real loop (kernels, rewards)."""
    from kernel_bridge.training.config import TrainConfig
    from kernel_bridge.training.trainer import Trainer

    s = ctx["sizes"]
    model, tokenizer = random_policy(ctx, shape)
    work = Path(ctx["work"]) / f"step-{shape}"
    config = TrainConfig(
        model=f"random-{shape}", backend="transformers", rollout_weights="trainer",
        tiers=[1], group_size=s["group"], prompts_per_step=s["prompts"],
        max_tokens=s["max_tokens"], max_code_steps=4, step_timeout=10.0,
        rollout_batch=s["rollout_batch"], pool_size=s["pool"], micro_batch_size=8,
        gradient_checkpointing=True, learning_rate=1e-6, out_dir=str(work), save_every=0,
        save_rollouts=False, report_to=[], progress=False,
    )  # fmt: skip
    rewards = {"correct": 1.0, "format": 0.1, "tool_errors": 0.1, spread: 1.0}

    async def go() -> list[dict[str, Any]]:
        history: list[dict[str, Any]] = []
        async with Trainer(config, model=model, tokenizer=tokenizer, reward=rewards) as trainer:
            for _ in range(s["steps"]):
                if history and time.time() + history[-1]["step_s"] > ctx["deadline"] - 5:
                    break
                history.append(step_keys(await trainer.train_step()))
                save_progress(ctx, {**head, "steps": history})
        return history

    head = {"shape": shape, "weights": "random", **_settings(s)}
    return {**head, "steps": asyncio.run(go())}


def _settings(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "group": s["group"],
        "prompts": s["prompts"],
        "max_tokens": s["max_tokens"],
        "rollout_batch": s["rollout_batch"],
    }


def fit_once(ctx: dict[str, Any]) -> dict[str, Any]:
    """One GRPO update of ``ctx['shape']`` (random weights): does it fit in this GPU?"""
    import torch
    from transformers import Qwen2ForCausalLM

    from kernel_bridge.training.config import TrainConfig
    from kernel_bridge.training.policy import add_lora, char_tokenizer
    from kernel_bridge.training.trainer import Trainer

    shape, lora, s = ctx["shape"], ctx["lora"], ctx["sizes"]
    dry = ctx["dry"]
    config = shape_config(ctx, shape, 151_936) if dry else bench.qwen25_config(shape)
    train = TrainConfig(
        model="tiny", lora=lora, gradient_checkpointing=True,
        micro_batch_size=s["fit_sequences"], max_seq_len=s["fit_length"],
        backend="transformers", rollout_weights="trainer",
    )  # fmt: skip
    reset_peak(ctx)
    begin = time.perf_counter()
    try:
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype_of(ctx))
        try:
            with torch.device(ctx["device"]):
                model = Qwen2ForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if lora:
            model = add_lora(model, train)
        tokenizer = char_tokenizer()
        tokenizer.pad_token_id = 0
        trainer = Trainer(train, model=model, tokenizer=tokenizer, tasks=[bench.product_task()])
        rollouts = bench.synthetic_rollouts(
            bench._VocabOf(config.vocab_size), s["fit_sequences"], s["fit_length"]
        )
        trainer.update(rollouts)
        trainer.update(rollouts)  # the second has the AdamW state from the first
        fits = True
    except torch.OutOfMemoryError:
        fits = False
    return {
        "shape": shape,
        "lora": lora,
        "fits": fits,
        "peak_mb": peak_mb(ctx),
        "seconds": time.perf_counter() - begin,
    }


def part_fits(ctx: dict[str, Any]) -> dict[str, Any]:
    """Largest shape first; down until one fits, and on until one's peak also fits 80 GB."""
    shapes = list(DRY_FIT_SHAPES if ctx["dry"] else bench.QWEN25_SHAPES)[::-1]
    limit_mb = ctx["fit_limit_mb"]
    rows: list[dict[str, Any]] = []
    best: dict[str, dict[str, Any]] = {}
    for lora in (True, False):
        mode = "lora" if lora else "full"
        for shape in shapes:
            left = ctx["deadline"] - time.time()
            if left < (2 if ctx["dry"] else 20):
                return {"rows": rows, "best": best, "limit_mb": limit_mb, "note": "time ran out"}
            child = {**ctx, "shape": shape, "lora": lora}
            found = run_isolated("fit-once", child, min(left - 5, 240), ctx["log"], ctx["how"])
            row = found.get("result") or {"shape": shape, "lora": lora, "fits": False}
            if found["status"] != "done":
                row["error"] = found.get("error") or found["status"]
            rows.append(row)
            save_progress(ctx, {"rows": rows, "best": best, "limit_mb": limit_mb})
            if row.get("fits"):
                best.setdefault(mode, row)
                if row["peak_mb"] <= limit_mb:
                    best[f"{mode}_80gb"] = row
                    break
    return {"rows": rows, "best": best, "limit_mb": limit_mb}


def part_sampler(ctx: dict[str, Any]) -> dict[str, Any]:
    """Generated tokens/s: one rollout, then a group of 8 decoded together, through the Reasoner
    and a kernel pool (code the model writes runs; its kernel time is reported)."""
    import torch

    from kernel_bridge.kernel import KernelPool
    from kernel_bridge.reasoner import Limits
    from kernel_bridge.samplers.batched import BatchedSampler
    from kernel_bridge.samplers.transformers import GenerationConfig, TransformersSampler
    from kernel_bridge.training.rollout import RolloutSettings, collect_rollouts

    if ctx["real"]:
        model, tokenizer = real_policy(ctx)
        weights = "real"
    else:
        model, tokenizer = random_policy(ctx, "0.5B", checkpointing=False)
        weights = "random"
    n = ctx["sizes"]["sampler_tokens"]
    task = heldout_tier1()[0]
    settings = RolloutSettings(limits=Limits(max_steps=4, max_tokens=n, step_timeout=10))
    sampling = GenerationConfig(temperature=1.0, max_new_tokens=n)
    torch.manual_seed(0)

    async def go() -> list[dict[str, Any]]:
        rows = []
        async with KernelPool(size=8) as pool:
            warm = GenerationConfig(temperature=1.0, max_new_tokens=4)
            short = RolloutSettings(limits=Limits(max_steps=1, max_tokens=4))
            await collect_rollouts(TransformersSampler(model, tokenizer, config=warm), pool,
                                   [task], 1, short)  # fmt: skip
            await collect_rollouts(BatchedSampler(model, tokenizer, config=warm, max_batch=8),
                                   pool, [task], 2, short)  # fmt: skip
            ways = [
                ("one rollout", "TransformersSampler", 1,
                 TransformersSampler(model, tokenizer, config=sampling)),
                ("group of 8", "BatchedSampler", 8,
                 BatchedSampler(model, tokenizer, config=sampling, max_batch=8)),
            ]  # fmt: skip
            for label, name, group, sampler in ways:
                reset_peak(ctx)
                begin = time.perf_counter()
                rollouts = await collect_rollouts(sampler, pool, [task], group, settings)
                if cuda(ctx):
                    torch.cuda.synchronize()
                wall = time.perf_counter() - begin
                traces = [r.trace for r in rollouts]
                tokens = sum(t.usage.model_tokens for t in traces)
                rows.append(
                    {
                        "way": label,
                        "sampler": name,
                        "rollouts": group,
                        "model_tokens": tokens,
                        "wall_s": wall,
                        "tokens_per_s": tokens / wall,
                        "kernel_s": sum(t.timings.get("kernel_s", 0.0) for t in traces),
                        "code_steps": sum(len(t.steps) for t in traces),
                        "peak_mb": peak_mb(ctx),
                    }
                )
                save_progress(ctx, {**head, "rows": rows})
        return rows

    head = {"weights": weights, "max_tokens": n, "task": task.id}
    return {**head, "rows": asyncio.run(go())}


def part_grpo(ctx: dict[str, Any]) -> dict[str, Any]:
    """Held-out solve rate (greedy, tier 1), GRPO steps while time allows, the solve rate again."""
    from kernel_bridge.training.config import TrainConfig
    from kernel_bridge.training.policy import add_lora
    from kernel_bridge.training.trainer import Trainer

    s = ctx["sizes"]
    work = Path(ctx["work"]) / "grpo"
    shutil.rmtree(work, ignore_errors=True)
    config = TrainConfig(
        model="local-base" if ctx["real"] else "dry-run-standin", dtype=ctx["dtype"],
        device=ctx["device"], lora=True, lora_rank=8, lora_alpha=16, gradient_checkpointing=True,
        tiers=[1], backend="transformers", rollout_weights="trainer",
        rollout_batch=s["rollout_batch"], group_size=s["group"], prompts_per_step=s["prompts"],
        temperature=1.0, max_tokens=s["grpo_max_tokens"], max_code_steps=4, step_timeout=10.0,
        pool_size=s["pool"], steps=s["grpo_steps"], learning_rate=2e-4, warmup_steps=2,
        micro_batch_size=8, clip_high=0.28, eval_max_tasks=s["grpo_eval_tasks"],
        out_dir=str(work), save_every=0, report_to=["jsonl"], save_rollouts=False,
        progress=False, seed=0,
    )  # fmt: skip
    options: dict[str, Any] = {}
    if not ctx["real"]:  # the dry run: a tiny random stand-in through the same loop
        model, tokenizer = random_policy(ctx, "0.5B")
        options = {"model": add_lora(model, config), "tokenizer": tokenizer}
    out: dict[str, Any] = {
        "weights": "real" if ctx["real"] else "dry-run stand-in",
        "lora_rank": 8,
        "learning_rate": 2e-4,
        **_settings({**s, "max_tokens": s["grpo_max_tokens"]}),
        "steps": [],
    }

    def save() -> None:
        save_progress(ctx, out)

    async def go() -> None:
        async with Trainer(config, **options) as trainer:
            begin = time.perf_counter()
            out["before"] = _eval_keys(await trainer.evaluate())
            eval_s = time.perf_counter() - begin
            save()
            while trainer.step < s["grpo_steps"]:
                longest = max([m["step_s"] for m in out["steps"]], default=eval_s)
                if time.time() + longest + eval_s * 1.2 + 10 > ctx["deadline"]:
                    out["stopped"] = "time: the evaluation after needs the rest"
                    break
                out["steps"].append(step_keys(await trainer.train_step()))
                save()
            out["after"] = _eval_keys(await trainer.evaluate())
            save()

    asyncio.run(go())
    return out


def _eval_keys(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("step", "tasks", "correct", "tier1_correct", "answered", "tool_use", "code_steps",
            "tool_error_rate", "model_tokens", "eval_s")  # fmt: skip
    return {k: metrics.get(k) for k in keys}


def part_probe(ctx: dict[str, Any]) -> dict[str, Any]:
    """A child that uses CUDA: tells whether forked children can (the parent imported torch)."""
    import torch

    x = torch.randn(1024, 1024, device=ctx["device"])
    return {"device": str(x.device), "sum": float((x @ x).sum())}


@dataclass
class Part:
    fn: Callable[[dict[str, Any]], dict[str, Any]]
    need: float  # seconds on the GPU it needs to be worth starting (an estimate)
    cap: float  # seconds it may run at most
    title: str
    reserve: bool = False  # earlier parts leave its `need` free


PARTS: dict[str, Part] = {
    "env": Part(part_env, 10, 60, "machine and libraries"),
    "gguf": Part(part_gguf, 30, 240, "the real weights: GGUF pieces, sha256, conversion"),
    "tiny": Part(part_tiny, 40, 150, "tiny-policy learning test"),
    "update": Part(part_update, 45, 150, "update tokens/s and peak memory"),
    "step-0.5B": Part(lambda c: part_step(c, "0.5B"), 40, 150, "GRPO steps, 0.5B shape"),
    "step-1.5B": Part(lambda c: part_step(c, "1.5B"), 50, 180, "GRPO steps, 1.5B shape"),
    "fits": Part(part_fits, 60, 240, "largest shape whose update fits"),
    "sampler": Part(part_sampler, 30, 120, "generated tokens/s"),
    "grpo": Part(part_grpo, 150, 100_000, "short GRPO run, held-out solve rate", reserve=True),
}
HELPERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "fit-once": fit_once,
    "probe": part_probe,
}
PHASE1 = ["env", "tiny", "update", "step-0.5B", "step-1.5B", "fits"]
GROUPS = {
    "phase1": PHASE1,  # no real weights needed: runs while the GGUF pieces travel
    "phase2": ["env", "gguf", "sampler", *PHASE1, "grpo"],  # phase 1's leftovers too
    "all": ["env", "gguf", "tiny", "update", "sampler", "step-0.5B", "step-1.5B", "fits", "grpo"],
}


# -- running a part in a child process -----------------------------------------------------------


def run_isolated(
    name: str, ctx: dict[str, Any], timeout: float, log: str, how: str
) -> dict[str, Any]:
    """``name``'s function on ``ctx`` in a child process (forked, or a fresh Python with
    ``how="spawn"``), killed with its process group after ``timeout`` seconds. Returns status
    (done, error, timeout, stopped), seconds, and the result, or the error and what the part
    had saved with ``save_progress`` (``partial``)."""
    return finish_isolated(start_isolated(name, ctx, log, how), timeout)


def start_isolated(name: str, ctx: dict[str, Any], log: str, how: str) -> dict[str, Any]:
    fd, result_path = tempfile.mkstemp(prefix=f".{name}.", suffix=".json", dir=ctx["work"])
    os.close(fd)
    progress = str(Path(ctx["work"]) / f"{name}.progress.json")
    Path(progress).unlink(missing_ok=True)
    ctx = {**ctx, "log": log, "how": how, "progress": progress}
    if how == "fork":
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: its own process group, its output to the log
            code = 1
            try:
                os.setpgid(0, 0)
                with open(log, "ab", buffering=0) as f:
                    os.dup2(f.fileno(), 1)
                    os.dup2(f.fileno(), 2)
                code = _child(name, ctx, result_path)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
    else:
        ctx_path = result_path + ".ctx"
        Path(ctx_path).write_text(json.dumps(ctx))
        with open(log, "ab") as f:
            child = subprocess.Popen(
                [sys.executable, __file__, "--run-part", name, ctx_path, result_path],
                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                process_group=0,
            )  # fmt: skip
        pid = child.pid
    with contextlib.suppress(OSError):  # the child does it too; whichever comes first
        os.setpgid(pid, pid)
    _CHILDREN.add(pid)
    return {"pid": pid, "result": result_path, "progress": progress, "begin": time.perf_counter()}


def finish_isolated(handle: dict[str, Any], timeout: float) -> dict[str, Any]:
    pid, begin = handle["pid"], handle["begin"]
    status = "done"
    try:
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if _STOPPING or time.perf_counter() - begin > timeout:
                _kill_group(pid)
                os.waitpid(pid, 0)
                status = "stopped" if _STOPPING else "timeout"
                break
            time.sleep(0.2)
    finally:
        _CHILDREN.discard(pid)
    seconds = time.perf_counter() - begin
    result_path = handle["result"]
    try:
        found = json.loads(Path(result_path).read_text() or "{}")
    except ValueError:
        found = {}
    for path in (result_path, result_path + ".ctx"):
        Path(path).unlink(missing_ok=True)
    if status == "done" and "result" in found:
        return {"status": "done", "seconds": seconds, "result": found["result"]}
    if _STOPPING:
        status = "stopped"
    entry: dict[str, Any] = {"status": status, "seconds": seconds}
    if status == "timeout":
        entry["error"] = f"stopped at its time limit ({seconds:.0f} s)"
    elif status == "stopped":
        entry["error"] = "stopped: the run was ended (SIGTERM)"
    else:
        entry["status"] = "error"
        entry["error"] = found.get("error") or "the child ended without a result (crashed?)"
    with contextlib.suppress(OSError, ValueError):
        entry["partial"] = json.loads(Path(handle["progress"]).read_text())
    return entry


def save_progress(ctx: dict[str, Any], data: dict[str, Any]) -> None:
    """What a part has so far: the table shows it if the part is stopped before its end."""
    if ctx.get("progress"):
        tmp = ctx["progress"] + ".tmp"
        Path(tmp).write_text(json.dumps(data, default=_jsonable))
        os.replace(tmp, ctx["progress"])


_CHILDREN: set[int] = set()
_STOPPING = False
_MAIN_PID: int | None = None  # the process running the parts (the others are its children)


def _kill_group(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        if sig == signal.SIGTERM:
            time.sleep(1.0)


def _child(name: str, ctx: dict[str, Any], result_path: str) -> int:
    fn = PARTS[name].fn if name in PARTS else HELPERS[name]
    print(f"\n=== {name} (pid {os.getpid()}) {time.strftime('%H:%M:%S')}", flush=True)
    try:
        result = fn(ctx)
    except BaseException as e:
        traceback.print_exc()
        tail = traceback.format_exception_only(type(e), e)[-1].strip()
        Path(result_path).write_text(json.dumps({"error": tail[:600]}))
        return 1
    Path(result_path).write_text(json.dumps({"result": result}, default=_jsonable))
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def preimport() -> None:
    """What every part imports, once, before any fork (no CUDA call: torch's is_available goes
    through NVML with PYTORCH_NVML_BASED_CUDA_CHECK=1, so the children can still use CUDA)."""
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import Qwen2ForCausalLM  # noqa: F401

    import kernel_bridge.samplers.batched
    import kernel_bridge.samplers.transformers
    import kernel_bridge.training.trainer  # noqa: F401


# -- the evidence run ----------------------------------------------------------------------------


class Evidence:
    """The parts' results (results.json), the table (table.md) and the log (evidence.log)."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out = out
        self.path = out / "results.json"
        self.state: dict[str, Any] = {"meta": meta, "parts": {}}

    @property
    def parts(self) -> dict[str, Any]:
        return self.state["parts"]

    def done(self, name: str) -> bool:
        return self.parts.get(name, {}).get("status") == "done"

    def record(self, name: str, entry: dict[str, Any]) -> None:
        self.parts[name] = entry
        self.write()

    def real(self) -> bool:
        return bool(self.parts.get("gguf", {}).get("result", {}).get("real"))

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, default=_jsonable) + "\n")
        tmp.replace(self.path)
        (self.out / "table.md").write_text(render(self.state))


def evidence(args: argparse.Namespace) -> int:
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    signal.signal(signal.SIGTERM, _on_term)
    start = time.time()
    deadline = start + args.budget
    out = Path(args.out or os.environ.get("OUT") or CARRY / "evidence").resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = str(out / "evidence.log")
    for name in ("results.json", "table.md", "evidence.log", "status.txt", "done", "stop"):
        (out / name).unlink(missing_ok=True)  # a new run, not a continuation
    for key, value in {
        "PYTORCH_NVML_BASED_CUDA_CHECK": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }.items():
        os.environ.setdefault(key, value)
    if args.after and (Path(args.after) / "pid").is_file():  # at once: it ends its part sooner
        (Path(args.after) / "stop").write_text("stop after the part in progress\n")
    dry = args.cpu_dry_run
    work = Path(args.work or (tempfile.mkdtemp(prefix="gpu-evidence-") if dry else KB / "work"))
    work.mkdir(parents=True, exist_ok=True)
    if dry and not args.work:
        os.environ["KERNEL_BRIDGE_CACHE"] = str(work / "cache")  # the dry run's own cache
        atexit.register(shutil.rmtree, work, True)  # children leave with os._exit: not theirs
    meta = {
        "mode": "cpu dry run" if dry else "gpu",
        "dtype": args.dtype or ("float32" if dry else "bfloat16"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "budget_s": args.budget,
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    ev = Evidence(out, meta)
    tokenizer_dir = find_tokenizer(args, work)
    pieces = args.pieces or next(
        (str(p) for p in (KB / "pieces", CARRY) if (p / "SHA256SUMS").is_file()), None
    )
    ctx: dict[str, Any] = {
        "dry": dry,
        "device": "cpu" if dry else "cuda",
        "dtype": meta["dtype"],
        "sizes": DRY_SIZES if dry else GPU_SIZES,
        "work": str(work),
        "tokenizer_dir": tokenizer_dir,
        "pieces": pieces,
        "fit_limit_mb": 0.0 if dry else bench.H100_80GB / 2**20,
        "real": False,
    }
    say(log, f"evidence: {meta['mode']}, budget {args.budget:.0f} s, out {out}, work {work}")
    say(log, f"tokenizer: {tokenizer_dir or 'none (character tokenizer)'}; pieces: {pieces}")
    how = "spawn" if args.spawn else "fork"
    if how == "fork":
        preimport()
    probe = run_isolated("probe", ctx, 120, log, how)
    if probe["status"] != "done" and how == "fork" and not _STOPPING:
        say(log, f"a forked child cannot use {ctx['device']} ({probe.get('error')}): spawning")
        how = "spawn"
        probe = run_isolated("probe", ctx, 120, log, how)
    if probe["status"] != "done":
        ev.state["meta"]["fatal"] = f"no usable {ctx['device']} device: {probe.get('error')}"
        ev.write()
        say(log, ev.state["meta"]["fatal"])
        (out / "done").write_text("no device\n")
        return 2
    ev.state["meta"]["children"] = how
    names = expand(args.parts)
    pending: dict[str, dict[str, Any]] = {}  # parts started early: their handles
    if args.after:
        # The GGUF's conversion is CPU work: it runs while the background run ends its part.
        if "gguf" in names:
            ctx["deadline"] = time.time() + PARTS["gguf"].cap
            say(log, "gguf: started now, beside the background run's last part")
            pending["gguf"] = start_isolated("gguf", ctx, log, how)
        wait_for_background(Path(args.after), out, deadline, args.wait)
        merged = Path(args.after) / "results.json"
        if merged.is_file():
            for name, entry in json.loads(merged.read_text())["parts"].items():
                ev.parts[name] = {**entry, "phase": "background"}
    ev.write()
    for i, name in enumerate(names):
        if _STOPPING or (out / "stop").is_file():
            say(log, "stopping: asked to (SIGTERM or a stop file); the parts left are not run")
            break
        if ev.done(name) or (name in names[:i]):
            continue
        part = PARTS[name]
        ctx["real"] = ev.real()
        left = deadline - time.time()
        scale = 0.1 if dry else 1.0
        reserve = scale * sum(
            PARTS[n].need
            for n in names[i + 1 :]
            if PARTS[n].reserve and not ev.done(n) and (n != "grpo" or ctx["real"] or dry)
        )
        need = part.need * scale
        earlier = {k: v for k, v in ev.parts.get(name, {}).items() if k == "partial"}
        if name == "grpo" and not ctx["real"] and not dry:
            reason = ev.parts.get("gguf", {}).get("result", {}).get("reason")
            note = "no real weights" + (f" ({reason})" if reason else "")
            ev.record(name, {"status": "skipped", "seconds": 0, "error": note})
            continue
        if name not in pending and left < need + reserve:
            note = f"budget spent: needs about {need:.0f} s, {left:.0f} s left"
            if reserve:
                note += f" ({reserve:.0f} s kept for the GRPO run)"
            ev.record(name, {"status": "skipped", "seconds": 0, "error": note, **earlier})
            say(log, f"{name}: skipped, {note}")
            continue
        if name in pending:
            found = finish_isolated(pending.pop(name), part.cap + 15)
        else:
            cap = min(part.cap, left - reserve)
            ctx["deadline"] = time.time() + cap
            say(log, f"{name}: {part.title} (up to {cap:.0f} s)")
            found = run_isolated(name, ctx, cap + 15, log, how)
        if found["status"] != "done" and "partial" not in found:
            found.update(earlier)
        ev.record(name, found)
        say(log, f"{name}: {found['status']} in {found['seconds']:.1f} s {found.get('error', '')}")
        (out / "status.txt").write_text(f"{name} {found['status']} at {time.strftime('%H:%M:%S')}")
    for name, handle in pending.items():  # started early, never reached: stop and record
        ev.record(name, finish_isolated(handle, 0))
    ev.state["meta"]["seconds"] = time.time() - start
    ev.write()
    (out / "done").write_text(f"{time.time() - start:.1f}\n")
    print(render(ev.state))
    return 0


def _on_term(signum: int, frame: Any) -> None:
    """SIGTERM: stop the children (with their process groups); the parent then records the part
    as stopped, writes the table and ends; a part's child ends at once."""
    global _STOPPING
    _STOPPING = True
    for pid in list(_CHILDREN):
        _kill_group(pid)
    if os.getpid() != _MAIN_PID:
        raise SystemExit(128 + signum)


def expand(parts: str) -> list[str]:
    names: list[str] = []
    for item in (p.strip() for p in parts.split(",") if p.strip()):
        for name in GROUPS.get(item, [item]):
            if name not in PARTS:
                raise SystemExit(f"unknown part {name!r}: {', '.join([*PARTS, *GROUPS])}")
            names.append(name)
    return names


def find_tokenizer(args: argparse.Namespace, work: Path) -> str | None:
    """The embedded model's tokenizer: --tokenizer, the one --setup unpacked, the carried
    tokenizer.tgz, or the converted model in the cache."""
    if args.tokenizer:
        return args.tokenizer
    if (KB / "tokenizer" / "tokenizer.json").is_file():
        return str(KB / "tokenizer")
    if (CARRY / "tokenizer.tgz").is_file():
        with tarfile.open(CARRY / "tokenizer.tgz") as tar:
            tar.extractall(work, filter="data")
        return str(work / "tokenizer")
    from kernel_bridge.embedded import _is_converted, converted_dir

    return str(converted_dir()) if _is_converted(converted_dir()) else None


def say(log: str, line: str) -> None:
    stamped = f"[{time.strftime('%H:%M:%S')}] {line}"
    print(stamped, flush=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(stamped + "\n")


def wait_for_background(phase: Path, out: Path, deadline: float, wait: float) -> None:
    """Ask the background run (``--background``) to stop after the part it is running, wait for
    it (``wait`` seconds at most), stop it if need be (its finished parts count, the others run
    here), and take its log."""
    log = str(out / "evidence.log")
    pid_file, done = phase / "pid", phase / "done"
    if not pid_file.is_file():
        say(log, f"no background run in {phase}: its parts run here")
        return
    pid = int(pid_file.read_text())
    (phase / "stop").write_text("stop after the part in progress\n")
    limit = min(time.time() + wait, deadline - 60)
    say(log, f"background run (pid {pid}): asked to stop after its part; {wait:.0f} s at most")
    while not done.is_file() and time.time() < limit and _alive(pid):
        time.sleep(1.0)
    if not done.is_file() and _alive(pid):
        say(log, "the background run is still going: stopping it (its finished parts count)")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(20):
            if done.is_file() or not _alive(pid):
                break
            time.sleep(0.5)
        _kill_group(pid)
    with open(log, "a", encoding="utf-8") as f:
        for name, keep in (("evidence.log", None), ("console.log", 4000)):
            if (phase / name).is_file():
                text = (phase / name).read_text(errors="replace")
                f.write(
                    f"\n===== the background run's {name} =====\n{text[-keep if keep else 0 :]}"
                )
        f.write("===== end of the background run's logs =====\n\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    return True


# -- the table -----------------------------------------------------------------------------------


def gib(mb: Any) -> str:
    return "–" if mb is None else f"{mb / 1024:.1f}"


def num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(state: dict[str, Any]) -> str:
    meta, parts = state["meta"], state["parts"]

    def result(name: str) -> dict[str, Any]:
        entry = parts.get(name, {})
        return entry.get("result") or entry.get("partial") or {}

    dry = meta.get("mode") == "cpu dry run"
    dt = meta.get("dtype", "bfloat16")
    lines = ["# GPU evidence: kernel-bridge's training path (benchmarks/gpu_evidence.py)", ""]
    if dry:
        lines += [
            "**CPU DRY RUN**: tiny random stand-ins for every shape and tiny budgets; it shows "
            "that every code path runs, and its figures mean nothing.",
            "",
        ]
    env = result("env")
    if env:
        gpu = (
            f"{env['gpu']} ({env['gpu_memory_gib']:.1f} GiB, compute {env['capability']}), "
            f"driver {env.get('driver', '?')}, CUDA {env.get('cuda_runtime')}"
            if env.get("gpu")
            else "no GPU"
        )
        lines.append(
            f"Machine: {gpu}; {env['cpus']} CPUs; Python {env['python']}, torch {env['torch']}, "
            f"transformers {env.get('transformers')}, peft {env.get('peft')}, accelerate "
            f"{env.get('accelerate')}, jupyter_client {env.get('jupyter_client')}, ipykernel "
            f"{env.get('ipykernel')}. Run: {env['date']}, `{meta.get('command')}`."
        )
        lines.append("")
        if not env.get("vllm"):
            lines.append(
                "vLLM: **not installed** on this machine, so nothing here is the vLLM-colocated "
                "path of `configs/gpu-*.toml`: every rollout generates on kernel-bridge's "
                "transformers samplers (one stream: `TransformersSampler`; groups: "
                f"`BatchedSampler`), in {dt} on the {'CPU' if dry else 'GPU'}."
            )
            lines.append("")
    lines.append(weights_line(parts))
    lines.append("")
    lines += section_sampler(result("sampler"))
    lines += section_update(result("update"), dt)
    lines += section_steps([result("step-0.5B"), result("step-1.5B")], dt)
    lines += section_fits(result("fits"))
    lines += section_tiny(result("tiny"))
    lines += section_grpo(parts.get("grpo", {}))
    lines += ["## Parts", "", "| part | status | seconds | note |", "|---|---|---:|---|"]
    for name in PARTS:
        entry = parts.get(name)
        if entry is None:
            lines.append(f"| {name} | not run | | |")
            continue
        note = str(entry.get("error", "")).replace("|", "\\|").replace("\n", " ")[:300]
        if "partial" in entry and entry["status"] != "done":
            note += " (what it had finished is shown above)"
        where = " (background)" if entry.get("phase") == "background" else ""
        lines.append(
            f"| {name} | {entry['status']}{where} | {num(entry.get('seconds'))} | {note} |"
        )
    if meta.get("fatal"):
        lines += ["", f"**Nothing measured**: {meta['fatal']}"]
    if meta.get("seconds"):
        lines += ["", f"Total: {meta['seconds']:.0f} s of a {meta['budget_s']:.0f} s budget."]
    return "\n".join(lines) + "\n"


def weights_line(parts: dict[str, Any]) -> str:
    g = parts.get("gguf", {})
    r = g.get("result") or {}
    if r.get("real"):
        how = f"assembled from {r['pieces']} carried pieces, " if r.get("assemble_s") else ""
        return (
            "Weights: the embedded Qwen2.5-Coder-0.5B-Instruct's **real weights** (the GGUF "
            f"{how}sha256 {r['sha256'][:12]}… verified, converted to bfloat16 safetensors in "
            f"{num(r.get('convert_s'))} s) where a row says *real*; rows saying *random* use "
            "random weights of a shape, which is all their figures depend on."
        )
    if g.get("status") == "done" and r.get("note"):
        return f"Weights: {r['note']}."
    reason = r.get("reason") or g.get("error") or "the GGUF part did not run"
    missing = r.get("pieces_missing")
    if missing:
        reason = f"pieces {', '.join(missing)} of {r['pieces']} did not arrive"
    return (
        "Weights: **RANDOM** weights of each shape everywhere (the embedded model's own 0.5B "
        f"config and tokenizer): the real weights were not there ({reason})."
    )


def section_sampler(r: dict[str, Any]) -> list[str]:
    if not r:
        return []
    lines = [
        f"## Generation: one rollout vs a group of 8 ({r['weights']} weights, 0.5B, "
        f"temperature 1, up to {r['max_tokens']} tokens, task {r['task']})",
        "",
        "| rollouts | sampler | model tokens | seconds | tokens/s | ratio | code blocks "
        "(kernel s) | peak GPU GiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = r["rows"][0]["tokens_per_s"] if r["rows"] else None
    for row in r["rows"]:
        ratio = f"{row['tokens_per_s'] / base:.1f}×" if base else "–"
        lines.append(
            f"| {row['way']} | {row['sampler']} | {row['model_tokens']} | {num(row['wall_s'])} "
            f"| {num(row['tokens_per_s'])} | {ratio} | {row['code_steps']} "
            f"({num(row['kernel_s'], 2)}) | {gib(row['peak_mb'])} |"
        )
    return [*lines, ""]


def section_update(r: dict[str, Any], dt: str) -> list[str]:
    if not r:
        return []
    lines = [
        f"## Update: one `Trainer.update` (forward, backward, AdamW; {dt}, gradient "
        "checkpointing, logprobs in chunks of 512; random weights)",
        "",
        "| shape | weights trained | tokens | tokens/s | seconds | peak GPU GiB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        trainable = row.get("trainable", 0) / 1e6
        trained = f"LoRA r=16 ({trainable:.1f} M)" if row["lora"] else f"full ({trainable:.0f} M)"
        if row.get("oom"):
            lines.append(f"| {row['shape']} | {trained} | | out of memory | | |")
            continue
        lines.append(
            f"| {row['shape']} | {trained} | {row['tokens']} | {num(row['tokens_per_s'])} | "
            f"{num(row['update_s'], 2)} | {gib(row['peak_mb'])} |"
        )
    if r.get("note"):
        lines.append(f"\n{r['note']}")
    return [*lines, ""]


def section_steps(results: list[dict[str, Any]], dt: str) -> list[str]:
    results = [r for r in results if r]
    if not results:
        return []
    s = results[0]
    lines = [
        f"## GRPO steps: G = {s['group']} × {s['prompts']} prompts, tier-1 tasks, up to "
        f"{s['max_tokens']} tokens, rollouts in one BatchedSampler of {s['rollout_batch']} rows, "
        "full weights",
        "",
        "| shape | weights | step | s/step | rollouts s | update s | generated tok/s | "
        f"update tok/s | peak GPU GiB | logprob diff max / mean ({dt}) | fallbacks |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        for m in r["steps"]:
            lines.append(
                f"| {r['shape']} | {r['weights']} | {m['step']} | {num(m['step_s'])} | "
                f"{num(m['rollout_s'])} | {num(m['update_s'])} | "
                f"{num(m['generation_tokens_per_s'], 0)} | {num(m['update_tokens_per_s'], 0)} | "
                f"{gib(m['peak_memory_mb'])} | {num(m['logprob_diff_max'], 3)} / "
                f"{num(m['logprob_diff_mean'], 4)} | {m['logprob_fallbacks']} |"
            )
    lines.append(
        "\nRandom weights never write code or an answer: every completion runs to the token "
        "limit, and a reward term from the trace id keeps every group's update running. Step 1 "
        "includes the first-use costs (CUDA kernels, allocator, kernel pool)."
    )
    return [*lines, ""]


def section_fits(r: dict[str, Any]) -> list[str]:
    if not r:
        return []
    limit = r["limit_mb"]
    lines = [
        "## Largest Qwen2.5 shape whose GRPO update fits (random bf16 weights, AdamW, gradient "
        "checkpointing, 2 × 1,024 tokens; largest shape first)",
        "",
        f"| shape | weights trained | fits this GPU | peak GPU GiB | peak ≤ {gib(limit)} GiB "
        "(80 GB GPU) | seconds |",
        "|---|---|---|---:|---|---:|",
    ]
    for row in r["rows"]:
        fits = (
            "yes" if row.get("fits") else ("no" + (f" ({row['error']})" if "error" in row else ""))
        )
        under = "yes" if row.get("fits") and row["peak_mb"] <= limit else "–"
        lines.append(
            f"| {row['shape']} | {'LoRA r=16' if row['lora'] else 'full'} | {fits} | "
            f"{gib(row.get('peak_mb'))} | {under} | {num(row.get('seconds'))} |"
        )
    best = r["best"]
    for mode, label in (("full", "full weights"), ("lora", "LoRA")):
        here = best.get(mode, {}).get("shape", "none tried fit")
        eighty = best.get(f"{mode}_80gb", {}).get("shape", "not found in the time")
        lines.append(f"\n{label}: largest on this GPU **{here}**; within 80 GB **{eighty}**.")
    lines.append(
        "\nPeaks are torch's allocated peak; an 80 GB card also loses some memory to the "
        "allocator and the CUDA context."
    )
    return [*lines, ""]


def section_tiny(r: dict[str, Any]) -> list[str]:
    if not r:
        return []
    lines = [
        "## Tiny-policy learning test on the GPU (tests/test_training_learns.py: its tasks, "
        "reward, config and criteria)",
        "",
        "| dtype | steps | reward, first 5 → last 5 steps | learns (first < 0.3, last > first "
        "+ 0.3) | logprob diff max | fallbacks | seconds |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    for run in r["runs"]:
        lines.append(
            f"| {run['dtype']} | {run['steps']} | {run['first5']:.3f} → {run['last5']:.3f} | "
            f"{'yes' if run['learns'] else 'no'} | {num(run['logprob_diff_max'], 6)} | "
            f"{run['fallbacks']} | {num(run['seconds'])} |"
        )
    lines.append(
        "\nThe test itself asks for a logprob difference under 1e-3 (float32 on both sides); "
        "in bfloat16 the sampler and the trainer round differently."
    )
    return [*lines, ""]


def section_grpo(entry: dict[str, Any]) -> list[str]:
    r = entry.get("result") or entry.get("partial") or {}
    if not r:
        return []
    partial = "" if entry.get("result") else " (partial: the part did not finish)"
    lines = [
        f"## Short GRPO run on tier-1 tasks{partial}: {r['weights']} weights, LoRA r="
        f"{r['lora_rank']}, lr {r['learning_rate']}, G = {r['group']} × {r['prompts']} prompts, up "
        f"to {r['max_tokens']} tokens",
        "",
    ]
    before, after = r.get("before") or {}, r.get("after") or {}
    lines += [
        "| held-out tier-1 (greedy) | tasks | solved | answered | ran code | eval s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, m in (("before", before), (f"after {len(r['steps'])} steps", after)):
        if m:
            lines.append(
                f"| {label} | {m['tasks']} | {num(m['correct'], 3)} | {num(m['answered'], 3)} | "
                f"{num(m['tool_use'], 3)} | {num(m['eval_s'])} |"
            )
    if r["steps"]:
        lines += [
            "",
            "| step | reward | correct | ran code | s/step | generated tok/s | update tok/s | "
            "peak GPU GiB | logprob diff max |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in r["steps"]:
            lines.append(
                f"| {m['step']} | {num(m['reward'], 3)} | {num(m['correct'], 3)} | "
                f"{num(m['tool_use'], 2)} | {num(m['step_s'])} | "
                f"{num(m['generation_tokens_per_s'], 0)} | {num(m['update_tokens_per_s'], 0)} | "
                f"{gib(m['peak_memory_mb'])} | {num(m['logprob_diff_max'], 3)} |"
            )
    if r.get("stopped"):
        lines.append(f"\nStopped early: {r['stopped']}.")
    return [*lines, ""]


# -- the device machine's steps (benchmarks/gpu_run.md) ------------------------------------------


def setup(args: argparse.Namespace) -> int:
    """First call: the carried wheels import, CUDA is there, a kernel runs a block, the
    tokenizer is unpacked, and a forked child can use CUDA."""
    import importlib

    ok = True
    for name in ("jupyter_client", "ipykernel", "nbformat", "zmq", "tornado", "gguf", "peft",
                 "transformers", "torch"):  # fmt: skip
        try:
            module = importlib.import_module(name)
            print(f"import {name}: {getattr(module, '__version__', 'ok')}")
        except Exception as e:
            print(f"import {name}: FAILED {type(e).__name__}: {e}")
            ok = False
    import torch

    if torch.cuda.is_available():
        print(f"cuda: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    else:
        print("cuda: NOT AVAILABLE")
        ok = args.cpu_dry_run and ok
    try:
        print("kernel:", kernel_check())
    except Exception as e:
        print(f"kernel: FAILED {type(e).__name__}: {e}")
        ok = False
    if (CARRY / "tokenizer.tgz").is_file():
        KB.mkdir(parents=True, exist_ok=True)
        with tarfile.open(CARRY / "tokenizer.tgz") as tar:
            tar.extractall(KB, filter="data")
        print(f"tokenizer: unpacked into {KB / 'tokenizer'}")
    probe = subprocess.run(
        [sys.executable, __file__, "--probe", *(["--cpu-dry-run"] if args.cpu_dry_run else [])],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    print(probe.stdout.strip().splitlines()[-1] if probe.stdout.strip() else probe.stderr[-500:])
    print("setup:", "ok" if ok else "FAILED")
    return 0 if ok else 1


def kernel_check() -> str:
    from kernel_bridge.kernel import KernelPool
    from kernel_bridge.reasoner import Limits
    from kernel_bridge.samplers.scripted import ScriptedSampler
    from kernel_bridge.training.rollout import RolloutSettings, collect_rollouts
    from kernel_bridge.training.tasks import Task

    code = "import sys\nprint(sum(range(10)), sys.version_info[:2])"
    script = f"```python\n{code}\n```\n<answer>45</answer>"
    settings = RolloutSettings(limits=Limits(max_steps=2, max_tokens=1000))

    async def go() -> str:
        async with KernelPool(size=1) as pool:
            (r,) = await collect_rollouts(
                ScriptedSampler(script), pool, [Task("t", "q", 45)], 1, settings
            )
        step = r.trace.steps[0]
        return f"{step.status}, output {step.output_text.strip()!r}, answer {r.trace.answer}"

    return asyncio.run(go())


def probe(args: argparse.Namespace) -> int:
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    preimport()
    device = "cpu" if args.cpu_dry_run else "cuda"
    with tempfile.TemporaryDirectory() as work:
        found = run_isolated("probe", {"device": device, "work": work}, 120, os.devnull, "fork")
    print(f"fork + {device}: {found['status']} {found.get('error', '')}".strip())
    return 0 if found["status"] == "done" else 1


def receive(args: argparse.Namespace) -> int:
    """Each call: move the carried GGUF pieces to KB/pieces, each checked against SHA256SUMS;
    say which are still to come and how the background run is doing."""
    pieces = KB / "pieces"
    pieces.mkdir(parents=True, exist_ok=True)
    if (CARRY / "SHA256SUMS").is_file():
        shutil.copy(CARRY / "SHA256SUMS", pieces / "SHA256SUMS")
    if not (pieces / "SHA256SUMS").is_file():
        print("receive: no SHA256SUMS carried")
        return 1
    sums = dict(reversed(line.split()) for line in (pieces / "SHA256SUMS").read_text().splitlines())
    bad = 0
    for name, expected in sums.items():
        carried = CARRY / name
        if not carried.is_file():
            continue
        digest = hashlib.sha256(carried.read_bytes()).hexdigest()
        if digest == expected:
            shutil.move(carried, pieces / name)
            print(f"receive: {name} ok ({(pieces / name).stat().st_size / 2**20:.1f} MiB)")
        else:
            print(f"receive: {name} BAD sha256 {digest[:12]}…: carry it again")
            carried.unlink()
            bad += 1
    have = [n for n in sums if (pieces / n).is_file()]
    missing = [n for n in sums if n not in have]
    print(f"pieces: {len(have)} of {len(sums)} here; to come: {' '.join(missing) or 'none'}")
    status = KB / "phase1" / "status.txt"
    if status.is_file():
        print(f"background: last part {status.read_text().strip()}")
    elif (KB / "phase1" / "pid").is_file():
        print("background: running its first part")
    return 1 if bad else 0


def background(args: argparse.Namespace) -> int:
    """Start the evidence run of ``--parts`` in a new session (it outlives this call), from a copy
    of the working tree, writing to KB/phase1."""
    repo, out = KB / "repo", KB / "phase1"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(
        ROOT, repo,
        ignore=shutil.ignore_patterns(".git", ".gpu-carry", "runs", "node_modules", "__pycache__"),
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(KB / "site"), str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    command = [sys.executable, str(repo / "benchmarks" / "gpu_evidence.py"), "--parts",
               args.parts, "--budget", str(args.budget), "--out", str(out)]  # fmt: skip
    if args.cpu_dry_run:
        command.append("--cpu-dry-run")
    with open(out / "console.log", "ab") as log:
        child = subprocess.Popen(
            command, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    (out / "pid").write_text(f"{child.pid}\n")
    (out / "deadline").write_text(f"{time.time() + args.budget}\n")
    print(f"background: {' '.join(command[2:])} started (pid {child.pid}), out {out}")
    return 0


# -- main ----------------------------------------------------------------------------------------


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--out", help="where the table, results.json and evidence.log go ($OUT)")
    cli.add_argument("--budget", type=float, default=480, help="seconds for all parts (480)")
    cli.add_argument("--parts", default="all", help="names, phase1, phase2 or all (all)")
    cli.add_argument("--cpu-dry-run", action="store_true", help="tiny stand-ins on CPU")
    cli.add_argument("--spawn", action="store_true", help="fresh Python per part, not fork")
    cli.add_argument("--dtype", help="the models' dtype (bfloat16 on GPU, float32 in the dry run)")
    cli.add_argument("--tokenizer", help="the embedded model's tokenizer directory")
    cli.add_argument("--pieces", help="a folder with GGUF pieces and their SHA256SUMS")
    cli.add_argument("--work", help="scratch folder (default: KB/work; the dry run: a temp dir)")
    cli.add_argument("--after", help="first end the background run writing to this folder")
    cli.add_argument("--wait", type=float, default=150, help="seconds to wait for it (150)")
    device = cli.add_argument_group("the device machine's steps (benchmarks/gpu_run.md)")
    device.add_argument("--setup", action="store_true", help="check imports, CUDA, a kernel")
    device.add_argument("--receive", action="store_true", help="take the carried GGUF pieces")
    device.add_argument("--background", action="store_true", help="start --parts, detached")
    cli.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    cli.add_argument("--run-part", nargs=3, help=argparse.SUPPRESS)
    args = cli.parse_args()
    if args.run_part:
        name, ctx_path, result_path = args.run_part
        return _child(name, json.loads(Path(ctx_path).read_text()), result_path)
    if args.probe:
        return probe(args)
    if args.setup:
        return setup(args)
    if args.receive:
        return receive(args)
    if args.background:
        return background(args)
    return evidence(args)


if __name__ == "__main__":
    sys.exit(main())
