"""The fast CPU rollout path: streams decoded together (BatchedSampler), rollouts from an int8 copy
of the current weights, and the shared prompt run once in the update. The policy is the tiny
random Qwen2 built from a config (no download); the int8 layer is checked on random matrices."""

from __future__ import annotations

import asyncio

import pytest
import torch

from kernel_bridge.embedded import int8_copy, int8_linear, quantize_linear, refresh_int8_copy
from kernel_bridge.samplers import SampleRequest
from kernel_bridge.samplers.batched import BatchedSampler
from kernel_bridge.samplers.transformers import GenerationConfig, TransformersSampler
from kernel_bridge.trace import Segment
from kernel_bridge.training.config import TrainConfig
from kernel_bridge.training.grpo import make_batch, token_logprobs
from kernel_bridge.training.policy import add_lora, tiny_policy

QUESTIONS = ["add 2 and 3", "what is 7 * 6?", "name a prime", "sum of digits of 2**20?"]


@pytest.fixture
def tiny():
    model, tokenizer = tiny_policy(seed=3)
    return model.float().eval(), tokenizer


def _request(question: str, segments=(), max_tokens: int = 24) -> SampleRequest:
    messages = [{"role": "user", "content": question}]
    return SampleRequest(messages=messages, segments=segments, max_tokens=max_tokens)


async def _collect(sampler, request) -> tuple[list[int], list[float], str]:
    ids: list[int] = []
    logprobs: list[float] = []
    async for delta in sampler.stream(request):
        ids += delta.token_ids or []
        logprobs += delta.logprobs or []
    return ids, logprobs, sampler.tokenizer.decode(ids)


# -- batched decoding ----------------------------------------------------------------------------


async def test_batched_greedy_gives_each_stream_the_tokens_it_gets_alone(tiny):
    model, tokenizer = tiny
    greedy = GenerationConfig(temperature=0.0)
    alone = []
    for question in QUESTIONS:
        sampler = TransformersSampler(model, tokenizer, config=greedy)  # fresh: no shared cache
        alone.append(await _collect(sampler, _request(question)))
    batched = BatchedSampler(model, tokenizer, config=greedy, max_batch=8)
    together = await asyncio.gather(*[_collect(batched, _request(q)) for q in QUESTIONS])
    for (ids, logprobs, _), (bids, blogprobs, _) in zip(alone, together, strict=True):
        assert ids == bids
        assert blogprobs == pytest.approx(logprobs, abs=1e-4)
    # One pass per token for all four streams, not one per stream and token.
    assert batched.passes < sum(len(ids) for ids, _, _ in alone) / 2


async def test_a_resumed_stream_continues_its_row_and_matches_a_fresh_decode(tiny):
    """After a 'tool step' (its text plus an output appended), the stream continues from its own
    cached row: only the new tokens run, and the tokens equal decoding the whole context fresh."""
    model, tokenizer = tiny
    greedy = GenerationConfig(temperature=0.0)
    batched = BatchedSampler(model, tokenizer, config=greedy, max_batch=8)
    first = await asyncio.gather(
        *[_collect(batched, _request(q, max_tokens=12)) for q in QUESTIONS]
    )
    resumed = []
    for (ids, logprobs, text), question in zip(first, QUESTIONS, strict=True):
        output = "```output\n42\n```\n"
        segments = [
            Segment("model", text, token_ids=ids, logprobs=logprobs),
            Segment("tool", output, token_ids=tokenizer.encode(output, add_special_tokens=False)),
        ]
        resumed.append(_request(question, segments, max_tokens=12))
    before = batched.prefilled
    again = await asyncio.gather(*[_collect(batched, r) for r in resumed])
    new_tokens = sum(len(ids) for ids, _, _ in again)
    output_tokens = len(tokenizer.encode("```output\n42\n```\n", add_special_tokens=False))
    # Per stream: the last sampled token, the output, then one token per new token (the last
    # new token is sampled, not run).
    assert batched.prefilled - before <= len(QUESTIONS) * (1 + output_tokens) + new_tokens
    for request, (ids, _, _) in zip(resumed, again, strict=True):
        fresh = TransformersSampler(model, tokenizer, config=greedy)
        assert (await _collect(fresh, request))[0] == ids


async def test_streams_of_one_prompt_share_its_prefill(tiny):
    model, tokenizer = tiny
    sampler = BatchedSampler(
        model, tokenizer, config=GenerationConfig(temperature=1.0, seed=0), max_batch=8
    )
    request = _request("a question that every rollout of the group shares", max_tokens=4)
    prompt = len(sampler.context_ids(request))
    results = await asyncio.gather(*[_collect(sampler, request) for _ in range(4)])
    sampled = sum(len(ids) for ids, _, _ in results)
    # The prompt runs once; the three copies run only its last token (they need its logits).
    assert sampler.prefilled <= prompt + 3 + sampled
    assert len({tuple(ids) for ids, _, _ in results}) > 1  # sampled, so they differ


async def test_more_streams_than_rows_wait_their_turn(tiny):
    model, tokenizer = tiny
    greedy = GenerationConfig(temperature=0.0)
    small = BatchedSampler(model, tokenizer, config=greedy, max_batch=2)
    large = BatchedSampler(model, tokenizer, config=greedy, max_batch=8)
    a = await asyncio.gather(*[_collect(small, _request(q, max_tokens=8)) for q in QUESTIONS])
    b = await asyncio.gather(*[_collect(large, _request(q, max_tokens=8)) for q in QUESTIONS])
    assert [ids for ids, _, _ in a] == [ids for ids, _, _ in b]


async def test_closing_a_stream_early_leaves_the_others_running(tiny):
    model, tokenizer = tiny
    sampler = BatchedSampler(model, tokenizer, config=GenerationConfig(temperature=0.0))

    async def first_delta_only():
        stream = sampler.stream(_request(QUESTIONS[0]))
        delta = await anext(stream)
        await stream.aclose()
        return delta

    early, rest = await asyncio.gather(
        first_delta_only(), _collect(sampler, _request(QUESTIONS[1], max_tokens=16))
    )
    assert early.text or early.token_ids
    assert len(rest[0]) == 16


# -- int8 ----------------------------------------------------------------------------------------


def test_int8_linear_quantizes_each_token_on_its_own():
    """A token's output does not depend on the other tokens of the call: batched decoding gives
    each sequence exactly what decoding it alone gives."""
    torch.manual_seed(0)
    weight, bias = torch.randn(48, 32), torch.randn(48)
    layer = int8_linear(*quantize_linear(weight), bias)
    x = torch.randn(5, 32)
    x[3] *= 100  # an outlier token: with one range per call it would cost the others precision
    together = layer(x)
    for i in range(5):
        assert torch.equal(layer(x[i : i + 1])[0], together[i])
    exact = x @ weight.T + bias
    relative = (together - exact).norm(dim=-1) / exact.norm(dim=-1)
    assert float(relative.max()) < 0.03


def _logprobs(model, ids):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return logits.log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)


def test_an_int8_copy_follows_the_lora_weights_after_each_update(tiny):
    model, tokenizer = tiny_policy(seed=4, hidden_size=128)
    model = add_lora(model.float(), TrainConfig(model="tiny", lora=True, lora_rank=4))
    ids = tokenizer.encode("```python\nprint(2 + 3)\n```\n", add_special_tokens=False)
    copy = int8_copy(model)
    assert float((_logprobs(copy, ids) - _logprobs(model, ids)).abs().mean()) < 0.02
    with torch.no_grad():  # an "update": the LoRA B matrices move away from zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    trained = _logprobs(model, ids)
    stale = float((_logprobs(copy, ids) - trained).abs().mean())
    refresh_int8_copy(copy, model)
    fresh = float((_logprobs(copy, ids) - trained).abs().mean())
    assert fresh < 0.02 < stale
    # The embeddings are the trainer's own tensors, not copies.
    assert copy.get_input_embeddings().weight.data_ptr() == (
        model.get_base_model().get_input_embeddings().weight.data_ptr()
    )


# -- the update: the shared prompt once, without gradient ---------------------------------------


def test_a_shared_prompt_run_once_gives_the_same_logprobs_and_a_gradient(tiny):
    model, tokenizer = tiny_policy(seed=5)
    model = add_lora(model.float(), TrainConfig(model="tiny", lora=True, lora_rank=4)).train()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "add 2 and 3"}], add_generation_prompt=True, tokenize=True
    )
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    rows = []
    for text in ("```python\n2+3\n```\n", "it is 5", "5"):
        completion = tokenizer.encode(text, add_special_tokens=False)
        rows.append((prompt, completion, [1] * len(completion), [float("nan")] * len(completion)))
    batch = make_batch(rows, [1.0, -1.0, 0.5], tokenizer.pad_token_id)
    assert batch.shared == batch.start == len(prompt) - 1
    full = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.start, 0)
    once = token_logprobs(
        model, batch.input_ids, batch.attention_mask, batch.start, 0, shared=batch.shared
    )
    assert torch.allclose(full[batch.mask], once[batch.mask], atol=1e-5)
    once[batch.mask].sum().backward()
    lora = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert all(g is not None for g in lora) and any(float(g.abs().sum()) > 0 for g in lora)
