"""TransformersSampler: any causal LM through transformers, on CPU or GPU.

It keeps the KV cache between calls: when the Reasoner resumes after a tool step, the context is the
previous context plus the new tokens (the rest of the model's text and the spliced output), so only
those are prefilled. Every delta carries its token id and logprob for the trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from kernel_bridge.loading import Progress
from kernel_bridge.samplers import Delta, SampleRequest, check_sampling
from kernel_bridge.samplers.tokens import (
    Detokenizer,
    TokenContext,
    TokenOutput,
    cache_keyword,
    eos_ids,
)


@dataclass
class GenerationConfig:
    """Sampling settings; ``temperature=0`` is greedy decoding."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 2048
    seed: int | None = None

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_p)


class TransformersSampler(TokenContext):
    """Samples from a transformers causal LM, continuing the assistant turn with KV-cache reuse."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        config: GenerationConfig | None = None,
        name: str | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or GenerationConfig()
        self.name = name or getattr(model, "name_or_path", None) or type(model).__name__
        self.eos_ids = eos_ids(model, tokenizer)
        self._lock = threading.Lock()  # one generation at a time owns the cache
        # Streams of one event loop wait for their turn on the loop, not in a worker thread: a
        # worker blocked on ``_lock`` cannot run the holder's next step, and with more concurrent
        # streams than the loop has workers (rollouts in parallel) every worker would be blocked.
        self._turns: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()
        self._cache: Any = None
        self._cache_ids: list[int] = []
        self.prefilled_last = 0  # tokens prefilled by the last call (for benchmarks and tests)
        self._cache_keyword = cache_keyword(model)

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        *,
        dtype: Any = None,
        device: str | None = None,
        config: GenerationConfig | None = None,
    ) -> TransformersSampler:
        """Load a model id or local path (a hub is needed only for ids not in the local cache)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        # Typed as a Module for mypy: the stub of functools.wraps, which wraps PreTrainedModel.to,
        # does not bind self (python/typeshed#10653). The call still runs PreTrainedModel.to.
        model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(
            model_id, dtype=dtype or (torch.bfloat16 if device == "cuda" else torch.float32)
        )
        model = model.to(device)
        model.eval()
        return cls(model, tokenizer, config=config, name=f"hf:{model_id}")

    @classmethod
    def embedded(
        cls,
        config: GenerationConfig | None = None,
        variant: str = "local",
        progress: Progress | None = None,
    ) -> TransformersSampler:
        """The embedded Qwen2.5-Coder-0.5B-Instruct on CPU: ``local`` (with the shipped GRPO
        adapter, where the package has one), ``local-base`` (untouched) or ``local:PATH`` (with
        the LoRA adapter or training run at PATH). ``progress``: as ``load_embedded`` takes it."""
        from kernel_bridge.embedded import embedded_adapter, load_embedded

        model, tokenizer = load_embedded(adapter=embedded_adapter(variant), progress=progress)
        return cls(model, tokenizer, config=config, name=variant)

    # -- what the Reasoner and the trace use ---------------------------------------------------

    def params(self) -> dict[str, Any]:
        return {
            "temperature": self.config.temperature,
            "top_p": self.config.top_p,
            "max_new_tokens": self.config.max_new_tokens,
        }

    def reset_cache(self) -> None:
        """Forget the KV cache, e.g. after the model's weights changed (a training step)."""
        with self._lock:
            self._cache = None
            self._cache_ids = []

    # -- generation ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        turn = self._turns.setdefault(loop, asyncio.Lock())
        async with turn:
            yield

    async def stream(self, request: SampleRequest) -> AsyncIterator[Delta]:
        async with self._turn(), contextlib.aclosing(self._generate(request)) as generation:
            async for delta in generation:
                yield delta

    async def _generate(self, request: SampleRequest) -> AsyncGenerator[Delta, None]:
        context = self.context_ids(request)
        budget = min(self.config.max_new_tokens, request.max_tokens or self.config.max_new_tokens)
        out = TokenOutput(Detokenizer(self.tokenizer), [s for s in request.stop if s])
        steps = _Steps(self, context)
        loop = asyncio.get_running_loop()
        try:
            for n in range(budget):
                steps.inflight = loop.run_in_executor(None, steps.next)
                token_id, logprob = await steps.inflight
                if token_id in self.eos_ids:
                    yield out.flush("stop")
                    return
                delta = out.add(token_id, logprob)
                if delta.finish_reason == "stop":
                    yield delta
                    return
                if n == budget - 1:
                    yield out.flush("length", delta)
                    return
                if delta.text or delta.token_ids:
                    yield delta
        finally:
            await steps.release()


class _Steps:
    """One generation: prefill what the cache lacks, then one token per ``next()`` (in a thread)."""

    def __init__(self, sampler: TransformersSampler, context: list[int]) -> None:
        self.s = sampler
        self.context = context
        self.inflight: asyncio.Future[tuple[int, float]] | None = None
        self._next_input: list[int] | None = None
        self._owns_lock = False
        self._generator: Any = None

    def _start(self) -> None:
        import torch

        s = self.s
        s._lock.acquire()
        self._owns_lock = True
        common = 0
        limit = min(len(s._cache_ids), len(self.context) - 1)  # always prefill ≥ 1 token
        while common < limit and s._cache_ids[common] == self.context[common]:
            common += 1
        if s._cache is not None and common > 0:
            surplus = len(s._cache_ids) - common
            if surplus:
                s._cache.crop(-surplus)  # a negative count removes tokens in every version
        else:
            from transformers import DynamicCache

            s._cache, common = DynamicCache(), 0
        s._cache_ids = self.context[:common]
        s.prefilled_last = len(self.context) - common
        self._next_input = self.context[common:]
        if s.config.seed is not None:
            self._generator = torch.Generator(device=s.model.device).manual_seed(s.config.seed)

    def next(self) -> tuple[int, float]:
        import torch

        if self._next_input is None:
            self._start()
        s = self.s
        assert self._next_input is not None
        with torch.inference_mode():
            input_ids = torch.tensor([self._next_input], device=s.model.device)
            cache = {s._cache_keyword: s._cache}
            logits = s.model(input_ids=input_ids, use_cache=True, **cache).logits[0, -1].float()
        s._cache_ids.extend(self._next_input)
        if s.config.temperature == 0:
            logprobs = torch.log_softmax(logits, dim=-1)
            token = int(torch.argmax(logits))
        else:  # the logprob under the temperature, before top-p: what a GRPO trainer computes
            logprobs = torch.log_softmax(logits / s.config.temperature, dim=-1)
            probs = logprobs.exp()
            if s.config.top_p < 1:
                sorted_p, order = torch.sort(probs, descending=True)
                keep = torch.cumsum(sorted_p, 0) - sorted_p < s.config.top_p
                probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
            token = int(torch.multinomial(probs, 1, generator=self._generator))
        self._next_input = [token]
        return token, float(logprobs[token])

    async def release(self) -> None:
        """Wait for a step still running in its thread (a cancel), then free the cache."""
        if self.inflight is not None and not self.inflight.done():
            await asyncio.wait([self.inflight])
        if self._owns_lock:
            self._owns_lock = False
            self.s._lock.release()
