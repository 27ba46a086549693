"""vLLM colocated with the trainer on one GPU: generate fast, sleep during the update, take the new
weights after every optimizer step.

The engine is vLLM's ``AsyncLLM`` in this process (its engine core runs in a child process on the
same GPU), driven through ``VLLMEngineSampler`` so rollouts stream deltas with token ids and
logprobs like any sampler. One step:

    wake_up(weights) → push the trainer's weights → wake_up(kv_cache) → reset the prefix cache
    → rollouts → sleep(level 2: weights and KV cache freed) → the GRPO update

Weights travel as CUDA IPC handles (no copy through the host): the worker rebuilds each tensor on
its side and calls the model's own ``load_weights``, which maps Hugging Face names (and fuses
q/k/v, gate/up) the way vLLM does when it reads a checkpoint. With LoRA the adapters are merged
for the push and unmerged after. Nothing here imports vLLM until a ``ColocatedVLLM`` is created.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import torch

WORKER_EXTENSION = "kernel_bridge.training.colocate.WeightReceiver"


class WeightReceiver:
    """Mixed into vLLM's GPU worker (``worker_extension_cls``): loads weights sent by handle."""

    def load_weights_from_ipc(self, handles: list[tuple[str, Any]]) -> int:
        worker: Any = self
        device = worker.device.index
        weights = []
        for name, (rebuild, args) in handles:
            args = list(args)
            args[6] = device  # the storage's device, as this process numbers it
            weights.append((name, rebuild(*args)))
        worker.model_runner.model.load_weights(weights=weights)
        torch.cuda.synchronize()
        return len(weights)


def hf_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(Hugging Face name, tensor) of every weight, LoRA merged in, tied copies once."""
    base = model.get_base_model() if hasattr(model, "merge_adapter") else model
    seen: set[int] = set()
    for name, tensor in base.state_dict().items():
        if "lora_" in name or "modules_to_save" in name:
            continue
        key = tensor.data_ptr()
        if key in seen:  # tied embeddings: vLLM ties them itself
            continue
        seen.add(key)
        yield name.replace(".base_layer", ""), tensor


class ColocatedVLLM:
    """An ``AsyncLLM`` on the trainer's GPU and the ``VLLMEngineSampler`` that rollouts use."""

    def __init__(
        self,
        model_path: str,
        tokenizer: Any,
        *,
        temperature: float,
        top_p: float,
        max_tokens: int,
        max_model_len: int,
        gpu_memory_utilization: float,
        dtype: str = "bfloat16",
        seed: int = 0,
        sleep: bool = True,
    ) -> None:
        # The handles carry a function to rebuild the tensor: vLLM must be allowed to pickle it.
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        from kernel_bridge.samplers.vllm import VLLMEngineSampler

        self.sleep_enabled = sleep
        self.asleep = False
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=model_path,
            dtype=dtype,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enable_prefix_caching=True,
            enable_sleep_mode=sleep,
            worker_extension_cls=WORKER_EXTENSION,
        )
        self.engine = AsyncLLM.from_engine_args(args)
        # No per-request seed: one seed for every request would give G identical completions.
        self.sampler = VLLMEngineSampler(
            self.engine,
            tokenizer,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            name=f"vllm-engine:{model_path}",
        )

    async def sleep(self) -> None:
        """Free the engine's weights and KV cache for the update (level 2: both dropped)."""
        if self.sleep_enabled and not self.asleep:
            await self.engine.sleep(level=2)
            self.asleep = True

    async def load(self, model: Any) -> None:
        """Wake the weights, push the trainer's, wake the KV cache, drop stale prefix blocks."""
        if self.asleep:
            await self.engine.wake_up(tags=["weights"])
        merged = hasattr(model, "merge_adapter")
        if merged:
            model.merge_adapter()
        try:
            with torch.no_grad():
                from torch.multiprocessing.reductions import reduce_tensor

                tensors = [(name, t.detach().contiguous()) for name, t in hf_weights(model)]
                handles = [(name, reduce_tensor(t)) for name, t in tensors]
                await self.engine.collective_rpc("load_weights_from_ipc", args=(handles,))
                del tensors, handles
        finally:
            if merged:
                model.unmerge_adapter()
        if self.asleep:
            await self.engine.wake_up(tags=["kv_cache"])
            self.asleep = False
        await self.engine.reset_prefix_cache()

    async def close(self) -> None:
        shutdown = getattr(self.engine, "shutdown", None)
        if shutdown is not None:
            result = shutdown()
            if asyncio.iscoroutine(result):
                await result


def vllm_model_path(model: str) -> str:
    """What vLLM loads for a ``TrainConfig.model``: a hub id or a directory with safetensors."""
    if model == "local":
        from kernel_bridge.embedded import converted_dir, load_embedded

        path = converted_dir()
        if not path.is_dir():
            load_embedded()  # converts the GGUF once
        return str(path)
    if model.startswith("hf:"):
        return model.removeprefix("hf:")
    raise ValueError(
        f"model {model!r} cannot run on vLLM; use 'local' or 'hf:ID_OR_PATH' with backend = "
        '"vllm", or backend = "transformers"'
    )


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
