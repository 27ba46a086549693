"""BatchedSampler: many concurrent streams of one local model, decoded together, one token each.

A GRPO step runs its rollouts concurrently; one stream at a time (``TransformersSampler``) leaves
a CPU memory-bound, decoding one token of one sequence per pass over the weights. Here every
stream that wants a token joins one forward pass:

- each stream is a *row* of one batched KV cache; a row's past tokens sit in any columns of the
  cache (a bool per column says which), with explicit position ids and a 4-D attention mask,
  so rows of any length, prefilling or decoding, share one forward;
- a stream that continues an earlier one (the Reasoner resumes after a code block) takes that
  row back; a new stream copies the row with the longest common prefix (the system prompt and
  worked example of every rollout, the question of every rollout of a group) and prefills only
  what differs: the shared prompt runs once;
- when rows join or leave, the cache is rebuilt with each row's tokens packed to the left, so
  columns wasted by rows that had nothing to add do not accumulate.

Greedy decoding gives each stream the same tokens as decoding it alone (up to float rounding of
batched matrix products; tested). Logprobs are recorded as ``TransformersSampler`` records them:
after temperature, before top-p.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from kernel_bridge.samplers import Delta, SampleRequest
from kernel_bridge.samplers.tokens import (
    Detokenizer,
    TokenContext,
    TokenOutput,
    cache_keyword,
    common_prefix,
    eos_ids,
)
from kernel_bridge.samplers.transformers import GenerationConfig

_SHARED_PREFIX = 16  # fewer common tokens than this are not worth copying a row for


@dataclass(eq=False)
class _Stream:
    """One ``stream()`` call: its context, budget, output and the queue its deltas go to."""

    context: list[int]
    budget: int
    out: TokenOutput
    queue: asyncio.Queue[Delta | None]
    loop: asyncio.AbstractEventLoop
    produced: int = 0
    cancelled: bool = False


@dataclass(eq=False)
class _Row:
    """A sequence in the batched cache: the ids whose keys and values are cached, by column."""

    ids: list[int] = field(default_factory=list)
    columns: list[int] = field(default_factory=list)  # cache column of each id
    pending: list[int] = field(default_factory=list)  # ids to run before the next sample
    stream: _Stream | None = None
    origin: _Row | None = None  # the row whose cached prefix this one copies (until rebuilt)
    kv: list[tuple[Any, Any]] | None = None  # a parked row's own keys and values, per layer


@functools.cache
def _slab_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class SlabLayer(DynamicLayer):
        """A cache layer over preallocated key/value slabs [B, H, C, D] holding ``length``
        columns: ``update`` writes the new columns in place instead of concatenating."""

        def __init__(self, keys: Any, values: Any, length: int) -> None:
            super().__init__()
            self.slab_keys, self.slab_values, self.length = keys, values, length
            self.keys, self.values = keys[:, :, :length], values[:, :, :length]
            self.device, self.is_initialized = keys.device, True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
            n, k = self.length, key_states.shape[-2]
            self.slab_keys[:, :, n : n + k] = key_states
            self.slab_values[:, :, n : n + k] = value_states
            self.length = n + k
            self.keys = self.slab_keys[:, :, : n + k]
            self.values = self.slab_values[:, :, : n + k]
            return self.keys, self.values

    return SlabLayer


class BatchedSampler(TokenContext):
    """Samples many concurrent streams of a causal LM in shared forward passes (CPU or GPU).

    ``max_batch`` rows decode together; further streams wait for a row to free up.
    ``prefill_chunk`` bounds the tokens one row runs per pass, so a long prompt does not stall
    the rows that decode. The model is used as it is: pass the int8 copy for fast CPU rollouts.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        config: GenerationConfig | None = None,
        name: str | None = None,
        max_batch: int = 32,
        prefill_chunk: int = 256,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or GenerationConfig()
        self.name = name or getattr(model, "name_or_path", None) or type(model).__name__
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.eos_ids = eos_ids(model, tokenizer)
        self._lock = threading.Lock()  # the engine's state: one pass at a time
        self._inbox: list[_Stream] = []
        self._rows: list[_Row] = []  # in the batch, in cache order
        self._parked: list[_Row] = []  # finished streams' rows, kept to be continued
        self._engine: asyncio.Task[None] | None = None
        self._generator: Any = None
        self._kv: list[tuple[Any, Any]] = []  # per layer: key and value slabs [B, H, C, D]
        self._length = 0  # columns in use
        self._valid: Any = None  # [B, C] bool: the column holds one of the row's tokens
        self.passes = 0  # forward passes run (for benchmarks and tests)
        self.prefilled = 0  # tokens run through the model, prompt and sampled alike

    # -- what the Reasoner and the trace use ---------------------------------------------------

    def params(self) -> dict[str, Any]:
        return {
            "temperature": self.config.temperature,
            "top_p": self.config.top_p,
            "max_new_tokens": self.config.max_new_tokens,
            "batched": True,
        }

    def reset_cache(self) -> None:
        """Forget every cached row, e.g. after the model's weights changed (a training step)."""
        with self._lock:
            self._parked = []
            if not self._rows:
                self._kv, self._valid, self._length = [], None, 0

    async def stream(self, request: SampleRequest) -> AsyncIterator[Delta]:
        loop = asyncio.get_running_loop()
        budget = min(self.config.max_new_tokens, request.max_tokens or self.config.max_new_tokens)
        stream = _Stream(
            context=self.context_ids(request),
            budget=budget,
            out=TokenOutput(Detokenizer(self.tokenizer), [s for s in request.stop if s]),
            queue=asyncio.Queue(),
            loop=loop,
        )
        with self._lock:
            self._inbox.append(stream)
        if self._engine is None or self._engine.done():
            self._engine = loop.create_task(self._run())
        try:
            while (delta := await stream.queue.get()) is not None:
                yield delta
        finally:
            stream.cancelled = True
            engine = self._engine
            if engine is not None and engine.done() and not engine.cancelled():
                with contextlib.suppress(asyncio.CancelledError):
                    if (error := engine.exception()) is not None:
                        raise error

    # -- the engine ----------------------------------------------------------------------------

    async def _run(self) -> None:
        """Passes until no stream is left; each pass in a worker thread, deltas in between."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)  # let streams started together arrive together
        try:
            while True:
                with self._lock:
                    if not self._rows and not self._inbox:
                        return
                sent = await loop.run_in_executor(None, self._pass)
                for stream, delta in sent:
                    stream.queue.put_nowait(delta)
                    if delta.finish_reason is not None:
                        stream.queue.put_nowait(None)
                await asyncio.sleep(0)
        except BaseException:
            with self._lock:
                streams = [r.stream for r in self._rows if r.stream] + self._inbox
                self._rows, self._inbox, self._kv, self._valid, self._length = [], [], [], None, 0
            for stream in streams:
                stream.queue.put_nowait(None)
            raise

    def _pass(self) -> list[tuple[_Stream, Delta]]:
        import torch

        with self._lock, torch.inference_mode():
            self._admit()
            if not self._rows:
                return []
            return self._forward_and_sample()

    def _admit(self) -> None:
        """Finished and cancelled rows leave (parked, to be continued); waiting streams join."""
        leaving = [r for r in self._rows if r.stream is None or r.stream.cancelled]
        for row in leaving:
            b = self._rows.index(row)
            columns = self._column_index(row)
            row.kv = [
                (k[b].index_select(1, columns), v[b].index_select(1, columns)) for k, v in self._kv
            ]
            row.columns, row.stream, row.pending = list(range(len(row.ids))), None, []
        self._parked = (self._parked + leaving)[-2 * self.max_batch :]
        batch = [r for r in self._rows if r not in leaving]
        waiting: list[_Stream] = []
        joined = False
        for stream in self._inbox:
            if stream.cancelled:
                continue
            found = self._row_for(stream.context, batch) if len(batch) < self.max_batch else None
            if found is None:
                waiting.append(stream)
                continue
            found.stream = stream
            batch.append(found)
            joined = True
        self._inbox = waiting
        if leaving or joined:
            self._rebuild(batch)

    def _row_for(self, context: list[int], batch: list[_Row]) -> _Row | None:
        """A row for ``context``: the parked row it continues, else a copy of the prefix it
        shares with a row, else a new row. None: a row that joined in this pass shares its
        prompt, so it waits a pass and copies that row's keys and values instead."""
        best: _Row | None = None
        shared = 0
        for row in [*self._parked, *batch]:
            n = common_prefix(row.ids, context)
            if n > shared:
                best, shared = row, n
        shared = min(shared, len(context) - 1)  # at least one token runs, to give the logits
        if shared < _SHARED_PREFIX:
            new = [r for r in batch if r.stream is not None and not r.ids and r.origin is None]
            if any(common_prefix(r.pending, context) >= _SHARED_PREFIX for r in new):
                return None
            return _Row(pending=list(context))
        assert best is not None
        if best in self._parked and shared == len(best.ids):
            self._parked.remove(best)
            best.pending = context[shared:]
            best.origin = best
            return best
        return _Row(
            ids=best.ids[:shared],
            columns=best.columns[:shared],
            pending=context[shared:],
            origin=best.origin or best,  # columns count in the coordinates of the first source
        )

    def _rebuild(self, rows: list[_Row]) -> None:
        """New slabs for ``rows``: each row's cached tokens copied into columns 0, 1, 2, …"""
        import torch

        config, device = self.model.config, self.model.device
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        dtype = _float_dtype(self.model)
        width = max(len(r.ids) for r in rows) if rows else 0
        capacity = width + self.prefill_chunk + 256
        valid = torch.zeros((len(rows), capacity), dtype=torch.bool, device=device)
        old = {id(r): b for b, r in enumerate(self._rows)}
        # Where each row's cached keys and values are now: a row of the old slabs, or a parked
        # row's own tensors (its columns are 0, 1, 2, … there).
        copies: list[tuple[int, Any, Any, Any, int]] = []
        for b, row in enumerate(rows):
            n = len(row.ids)
            valid[b, :n] = True
            source = row.origin or row
            if n and id(source) in old and source.kv is None:
                columns = torch.tensor(row.columns, device=device)
                copies.append((b, old[id(source)], columns, None, n))
            elif n:
                assert source.kv is not None, "a row's cached tokens must be somewhere"
                copies.append((b, None, None, source.kv, n))
        slabs = []
        for layer in range(config.num_hidden_layers):
            k = torch.zeros((len(rows), heads, capacity, dim), dtype=dtype, device=device)
            v = torch.zeros_like(k)
            for b, at, columns, kv, n in copies:
                if kv is None:
                    k[b, :, :n] = self._kv[layer][0][at].index_select(1, columns)
                    v[b, :, :n] = self._kv[layer][1][at].index_select(1, columns)
                else:
                    k[b, :, :n] = kv[layer][0][:, :n]
                    v[b, :, :n] = kv[layer][1][:, :n]
            slabs.append((k, v))
        for row in rows:
            row.columns, row.origin = list(range(len(row.ids))), None
            if row.stream is not None and row.kv is not None and row not in self._parked:
                row.kv = None  # continued: its tensors are in the slabs now
        self._kv, self._valid, self._length, self._rows = slabs, valid, width, rows

    def _column_index(self, row: _Row) -> Any:
        import torch

        return torch.tensor(row.columns, dtype=torch.long, device=self.model.device)

    def _grow(self, extra: int) -> None:
        import torch

        capacity = self._valid.shape[1]
        if self._length + extra <= capacity:
            return
        more = max(extra, capacity)
        self._kv = [
            (
                torch.cat([k, k.new_zeros(*k.shape[:2], more, k.shape[3])], dim=2),
                torch.cat([v, v.new_zeros(*v.shape[:2], more, v.shape[3])], dim=2),
            )
            for k, v in self._kv
        ]
        self._valid = torch.cat([self._valid, self._valid.new_zeros(len(self._rows), more)], 1)

    def _forward_and_sample(self) -> list[tuple[_Stream, Delta]]:
        """One pass: the rows that decode (one new token each) together, then the rows that
        prefill (a prompt, a tool output) together, each group in its own forward, so decoding
        rows never compute a prefill's padding."""
        decoding = [b for b, r in enumerate(self._rows) if len(r.pending) == 1]
        prefilling = [b for b, r in enumerate(self._rows) if len(r.pending) > 1]
        sent = []
        for group in (decoding, prefilling):
            if group:
                sent += self._forward(group)
        return sent

    def _forward(self, group: list[int]) -> list[tuple[_Stream, Delta]]:
        """Run the pending tokens of the rows ``group`` (indices into the batch) and sample for
        the rows that have none left. Other rows get unused (masked) columns."""
        import torch
        from transformers.cache_utils import Cache

        device = self.model.device
        rows = [self._rows[b] for b in group]
        whole = len(group) == len(self._rows)
        take = [min(len(r.pending), self.prefill_chunk) for r in rows]
        n = max(take)
        self._grow(n)
        start = self._length
        input_ids = torch.full((len(rows), n), self._pad_id(), dtype=torch.long)
        positions = torch.zeros((len(rows), n), dtype=torch.long)
        new_valid = torch.zeros((len(self._rows), n), dtype=torch.bool)
        for i, (b, row, k) in enumerate(zip(group, rows, take, strict=True)):
            input_ids[i, :k] = torch.tensor(row.pending[:k])
            new_valid[b, :k] = True
            positions[i] = len(row.ids) + torch.arange(n).clamp(max=k - 1)
        self._valid[:, start : start + n] = new_valid.to(device)
        index = torch.tensor(group, device=device)
        valid = self._valid if whole else self._valid.index_select(0, index)
        # Row b's query j sees its cached tokens and its own new tokens up to j.
        seen = valid[:, None, : start + n].expand(len(rows), n, start + n).clone()
        causal = torch.ones((n, n), dtype=torch.bool, device=device).tril()
        seen[:, :, start:] &= causal
        diagonal = torch.arange(n, device=device)
        seen[:, diagonal, start + diagonal] = True  # a padding query sees itself: never empty
        slab = _slab_layer_class()
        if whole:
            slabs = self._kv
        else:  # a copy of the group's rows; their new columns are copied back below
            slabs = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self._kv]
        cache = Cache(layers=[slab(k, v, start) for k, v in slabs])
        body = self.model.get_decoder()
        hidden = body(
            input_ids=input_ids.to(device),
            attention_mask=seen[:, None],
            position_ids=positions.to(device),
            use_cache=True,
            **{cache_keyword(body): cache},
        ).last_hidden_state
        if not whole:
            for (k, v), (sub_k, sub_v) in zip(self._kv, slabs, strict=True):
                k[index, :, start : start + n] = sub_k[:, :, start : start + n]
                v[index, :, start : start + n] = sub_v[:, :, start : start + n]
        self._length = start + n
        self.passes += 1
        self.prefilled += sum(take)
        ready = []
        for i, (row, k) in enumerate(zip(rows, take, strict=True)):
            row.ids.extend(row.pending[:k])
            row.columns.extend(range(start, start + k))
            row.pending = row.pending[k:]
            if not row.pending and row.stream is not None:
                ready.append((i, k - 1))
        if not ready:
            return []
        last = hidden[[i for i, _ in ready], [j for _, j in ready]]
        logits = self.model.get_output_embeddings()(last).float()
        return self._sample(logits, [rows[i] for i, _ in ready])

    def _sample(self, logits: Any, rows: list[_Row]) -> list[tuple[_Stream, Delta]]:
        import torch

        c = self.config
        if c.temperature == 0:
            logprobs = torch.log_softmax(logits, dim=-1)
            tokens = logits.argmax(-1)
        else:
            logprobs = torch.log_softmax(logits / c.temperature, dim=-1)
            probs = logprobs.exp()
            if c.top_p < 1:
                sorted_p, order = torch.sort(probs, descending=True, dim=-1)
                keep = torch.cumsum(sorted_p, -1) - sorted_p < c.top_p
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
            if self._generator is None and c.seed is not None:
                self._generator = torch.Generator(device=logits.device).manual_seed(c.seed)
            tokens = torch.multinomial(probs, 1, generator=self._generator).squeeze(-1)
        chosen = logprobs.gather(-1, tokens[:, None]).squeeze(-1).tolist()
        sent = []
        for row, token, logprob in zip(rows, tokens.tolist(), chosen, strict=True):
            stream = row.stream
            assert stream is not None
            stream.produced += 1
            if token in self.eos_ids:
                delta = stream.out.flush("stop")
            else:
                delta = stream.out.add(token, logprob)
                if delta.finish_reason is None and stream.produced >= stream.budget:
                    delta = stream.out.flush("length", delta)
            if delta.finish_reason is not None:
                row.stream = None  # leaves at the next pass; its row stays to be continued
            else:
                row.pending = [token]
            if delta.finish_reason is not None or delta.text or delta.token_ids:
                sent.append((stream, delta))
        return sent

    def _pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return int(pad if pad is not None else next(iter(self.eos_ids), 0))


def _float_dtype(model: Any) -> Any:
    import torch

    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
