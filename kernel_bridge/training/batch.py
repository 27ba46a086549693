"""Scored traces to the update's tensors: examples, padded micro-batches, old-policy logprobs.

A trace becomes an ``Example`` through ``Trace.training_view`` (ids, mask and the sampler's
logprobs, aligned token by token); examples become micro-batches of padded tensors
(``make_batch``); ``LogprobCheck`` picks each token's old-policy logprob: the recorded one where
it agrees with the trainer's, the trainer's elsewhere.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kernel_bridge.samplers.tokens import common_prefix
from kernel_bridge.trace import Trace

Row = tuple[list[int], list[int], list[int], list[float]]


@dataclass
class Example:
    """One trace as the update sees it; ``recorded`` is the sampler's logprob per completion token
    (NaN where it has none)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    mask: list[int]
    recorded: list[float]
    advantage: float

    @property
    def row(self) -> Row:
        return self.prompt_ids, self.completion_ids, self.mask, self.recorded


def training_example(
    trace: Trace, tokenizer: Any, advantage: float, max_len: int, question: str | None = None
) -> Example:
    """``trace.training_view`` (ids, mask, recorded logprobs), cut to ``max_len`` tokens.

    A run that ended with an answer ended because the model sampled its end-of-turn token, which
    the trace does not keep; it is appended (a model token, no recorded logprob) so the policy
    also learns when to stop.

    ``question``: the run was asked something else (a guided task's question with its hint), and
    the update trains its completion after ``question`` instead: the prompt is the trace's
    messages with the last user message's text replaced, through the chat template, and no
    recorded logprob is kept (the sampler's were conditioned on the other prompt), so the
    trainer's own are the old policy's.
    """
    if question is not None:
        messages = [dict(m) for m in trace.messages]
        last = max(i for i, m in enumerate(messages) if m.get("role") == "user")
        messages[last]["content"] = question
        trace = dataclasses.replace(trace, messages=messages, prompt_token_ids=None)
    view = trace.training_view(tokenizer)
    completion, mask, recorded = list(view.completion_ids), list(view.mask), list(view.logprobs)
    if question is not None:
        recorded = [math.nan] * len(recorded)
    eos = getattr(tokenizer, "eos_token_id", None)
    ended = (
        trace.finish_reason == "answer" and trace.segments and trace.segments[-1].kind == "model"
    )
    if ended and eos is not None:
        completion.append(eos)
        mask.append(1)
        recorded.append(math.nan)
    room = max(0, max_len - len(view.prompt_ids))
    return Example(
        view.prompt_ids, completion[:room], mask[:room], recorded[:room], float(advantage)
    )


@dataclass
class Batch:
    """Sequences padded to one length; completion-aligned tensors start at ``start``.

    ``mask`` and ``recorded`` are [B, T-1-start], aligned with ``token_logprobs``.
    ``recorded`` holds the sampler's logprobs (NaN where it has none).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mask: torch.Tensor
    recorded: torch.Tensor
    advantages: torch.Tensor
    start: int
    shared: int = 0  # leading tokens every row has in common (at most ``start``)

    def to(self, device: Any) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.mask.to(device),
            self.recorded.to(device),
            self.advantages.to(device),
            self.start,
            self.shared,
        )


def make_batch(sequences: Sequence[Row], advantages: Sequence[float], pad_id: int) -> Batch:
    """Pad (prompt ids, completion ids, mask, recorded logprobs) rows into one ``Batch``.

    Logprobs are computed only from the shortest prompt on: prompt positions carry no loss, and on
    a big vocabulary the LM head over a long system prompt would cost as much as the completion.
    """
    lengths = [len(p) + len(c) for p, c, _, _ in sequences]
    width = max(lengths)
    start = min(len(p) for p, _, _, _ in sequences) - 1
    rows = len(sequences)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, width), dtype=torch.long)
    mask = torch.zeros((rows, width - 1), dtype=torch.bool)
    recorded = torch.full((rows, width - 1), float("nan"))
    for row, (prompt, completion, loss_mask, logps) in enumerate(sequences):
        ids = prompt + completion
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        # Position t predicts token t + 1: completion token j sits at len(prompt) - 1 + j.
        at = len(prompt) - 1
        mask[row, at : at + len(completion)] = torch.tensor(loss_mask, dtype=torch.bool)
        recorded[row, at : at + len(completion)] = torch.tensor(logps, dtype=torch.float32)
    first = sequences[0][0]
    shared = min(common_prefix(first, p) for p, _, _, _ in sequences)
    return Batch(
        input_ids,
        attention,
        mask[:, start:],
        recorded[:, start:],
        torch.tensor(list(advantages), dtype=torch.float32),
        start,
        min(shared, start),
    )


@dataclass
class UpdateBatch:
    """One update's micro-batches and the loss's normalizers (over every sequence of the batch,
    the skipped ones included, so the loss does not depend on what was skipped)."""

    micro: list[Batch]
    num_tokens: int  # model tokens of every sequence: the normalizer of "token" aggregation
    num_sequences: int  # every sequence: the normalizer of "sequence" aggregation
    sequences_updated: int  # the sequences in ``micro``


def update_batch(
    traces: Sequence[Trace],
    advantages: Sequence[float],
    tokenizer: Any,
    *,
    max_len: int,
    micro_batch_size: int,
    keep_zero_advantage: bool,
    questions: Sequence[str | None] | None = None,
) -> UpdateBatch:
    """The scored traces as padded micro-batches, one group's rows together, longest first.

    A sequence without model tokens is left out; so is one with advantage 0 unless
    ``keep_zero_advantage`` (with β = 0 its loss is exactly 0: its forward pass is saved).
    ``questions``: per trace, the question its completion is trained after when that is not
    what it was asked (guided tasks; see ``training_example``), else None.
    """
    asked = questions if questions is not None else [None] * len(traces)
    examples = [
        training_example(trace, tokenizer, advantage, max_len, question)
        for trace, advantage, question in zip(traces, advantages, asked, strict=True)
    ]
    num_tokens = sum(sum(e.mask) for e in examples)
    active = [e for e in examples if sum(e.mask) and (e.advantage != 0 or keep_zero_advantage)]
    # A group's rows together (their prompt runs once per micro-batch), longest first.
    active.sort(key=lambda e: (e.prompt_ids, -len(e.completion_ids)))
    pad = tokenizer.pad_token_id
    micro = [
        make_batch([e.row for e in rows], [e.advantage for e in rows], pad)
        for rows in (
            active[i : i + micro_batch_size] for i in range(0, len(active), micro_batch_size)
        )
    ]
    return UpdateBatch(micro, num_tokens, len(examples), len(active))


class LogprobCheck:
    """Recorded logprobs where they agree with the trainer's; the trainer's elsewhere.

    A sequence whose recorded values differ anywhere by more than ``tolerance`` takes the
    trainer's for every token (counted in ``logprob_fallbacks``); so does any token without a
    recorded value.
    """

    def __init__(self, tolerance: float) -> None:
        self.tolerance = tolerance
        self.diffs: list[torch.Tensor] = []
        self.fallbacks = 0
        self.sequences = 0

    def __call__(
        self, recorded: torch.Tensor, trainer: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        have = mask & ~torch.isnan(recorded)
        diff = torch.where(have, (recorded - trainer).abs(), 0.0)
        self.diffs.append(diff[have].float().cpu())
        agree = diff.amax(dim=-1) <= self.tolerance  # per sequence
        self.fallbacks += int((~agree & have.any(-1)).sum())
        self.sequences += len(agree)
        use = have & agree[:, None]
        return torch.where(use, recorded, trainer)

    def stats(self) -> dict[str, float]:
        diffs = torch.cat(self.diffs) if self.diffs else torch.zeros(0)
        return {
            "logprob_diff_max": float(diffs.max()) if len(diffs) else math.nan,
            "logprob_diff_mean": float(diffs.mean()) if len(diffs) else math.nan,
            "logprob_tokens_compared": len(diffs),
            "logprob_fallbacks": self.fallbacks,
        }
