"""vLLM colocated with the trainer on one GPU: generate fast, sleep during the update, take the new
weights after every optimizer step.

The engine is vLLM's ``AsyncLLM`` in this process (its engine core runs in a child process on the
same GPU), driven through ``VLLMEngineSampler`` so rollouts stream deltas with token ids and
logprobs like any sampler. One step:

    wake_up(weights) → push the trainer's weights → wake_up(kv_cache) → reset the prefix cache
    → rollouts → sleep(level 2: weights and KV cache freed) → the GRPO update

Weights travel as CUDA IPC handles (no copy through the host), about a GiB per call: the worker
rebuilds each tensor on its side and calls the model's own ``load_weights``, which maps Hugging
Face names (and fuses q/k/v, gate/up) the way vLLM does when it reads a checkpoint. With LoRA
each adapted weight is sent merged (base + B·A in a new tensor; the trainer's stay as they are).
Nothing here imports vLLM until a ``ColocatedVLLM`` is created.
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
        from torch.multiprocessing.reductions import rebuild_cuda_tensor

        worker: Any = self
        weights = []
        for name, (rebuild, args) in handles:
            if rebuild is rebuild_cuda_tensor:
                args = list(args)
                args[6] = worker.device.index  # the storage's device, as this process numbers it
            weights.append((name, rebuild(*args)))
        worker.model_runner.model.load_weights(weights=weights)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return len(weights)


def hf_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(Hugging Face name, tensor) of every weight, each tied weight once, LoRA merged in.

    A LoRA-wrapped layer yields a new tensor, base + scaled B·A, made when it is reached: the
    trainer's weights are never touched (merging in place and back would drift the frozen base
    weights by a rounding error every step, in bfloat16 a visible one).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    lora_layers = {
        f"{name}.base_layer.weight": module
        for name, module in base.named_modules()
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")
    }
    state = base.state_dict()
    # Tied weights (embeddings) once, vLLM ties them itself; found before anything is sent, as
    # sending may move a tensor's storage (CPU tensors go to shared memory).
    first: dict[int, str] = {}
    names = [
        name
        for name, tensor in state.items()
        if "lora_" not in name
        and "modules_to_save" not in name
        and first.setdefault(tensor.data_ptr(), name) == name
    ]
    for name in names:
        tensor = state[name]
        layer = lora_layers.get(name)
        if layer is not None and not layer.merged and not layer.disable_adapters:
            merged = tensor.float()
            for adapter in layer.active_adapters:
                if adapter in layer.lora_A:
                    merged = merged + layer.get_delta_weight(adapter).float()
            tensor = merged.to(tensor.dtype)
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
        push_bytes: int = 2**30,
    ) -> None:
        # The handles carry a function to rebuild the tensor: vLLM must be allowed to pickle it.
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        from kernel_bridge.samplers.vllm import VLLMEngineSampler

        self.sleep_enabled = sleep
        self.asleep = False
        self.push_bytes = push_bytes  # weights sent per call to the worker
        self.version: int | None = None  # what the engine holds: the trainer's step at the push
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
            # Logprobs after the temperature, as the trainer computes them (with top_p < 1 also
            # after top-p, which the trainer does not apply: the logprob check then falls back).
            logprobs_mode="processed_logprobs",
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

    async def load(self, model: Any, version: int | None = None) -> bool:
        """Wake the weights, push the trainer's, wake the KV cache, drop stale prefix blocks.

        ``version`` names the weights (the trainer's count of updates): an awake engine that
        already holds them is left as it is. Returns whether the weights were pushed.
        """
        if version is not None and version == self.version and not self.asleep:
            return False
        if self.asleep:
            await self.engine.wake_up(tags=["weights"])
        batch: list[tuple[str, torch.Tensor]] = []
        size = 0
        with torch.no_grad():
            for name, tensor in hf_weights(model):
                batch.append((name, tensor.detach().contiguous()))
                size += tensor.nbytes
                if size >= self.push_bytes:  # bounds the merged LoRA copies alive at once
                    await self._push(batch)
                    batch, size = [], 0
            if batch:
                await self._push(batch)
        if self.asleep:
            await self.engine.wake_up(tags=["kv_cache"])
            self.asleep = False
        await self.engine.reset_prefix_cache()
        self.version = version
        return True

    async def _push(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        """Send ``weights`` by handle; the worker has loaded them when this returns."""
        from torch.multiprocessing.reductions import reduce_tensor

        handles = [(name, reduce_tensor(tensor)) for name, tensor in weights]
        await self.engine.collective_rpc("load_weights_from_ipc", args=(handles,))

    async def close(self) -> None:
        shutdown = getattr(self.engine, "shutdown", None)
        if shutdown is not None:
            result = shutdown()
            if asyncio.iscoroutine(result):
                await result


def vllm_model_path(model: str) -> str:
    """What vLLM loads for a ``TrainConfig.model``: a hub id or a directory with safetensors."""
    from kernel_bridge.embedded import converted_dir, is_embedded, load_embedded

    if is_embedded(model):  # an adapter arrives with the trainer's weights at the first push
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
