"""TransformersSampler on the real embedded model: KV-cache reuse, token ids, stop strings."""

from __future__ import annotations

import pytest

from kernel_bridge.reasoner import Limits, Reasoner
from kernel_bridge.samplers import SampleRequest
from kernel_bridge.samplers.tokens import _partial_stop
from kernel_bridge.samplers.transformers import GenerationConfig, TransformersSampler
from kernel_bridge.trace import Segment

# One xdist worker runs every module that loads or converts the embedded model.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("embedded-model")]

QUESTION = [{"role": "user", "content": "Write a python code block that prints 17*23."}]


@pytest.fixture(scope="module")
def embedded():
    from kernel_bridge.embedded import load_embedded

    return load_embedded()


def make(embedded, **config) -> TransformersSampler:
    model, tokenizer = embedded
    return TransformersSampler(model, tokenizer, config=GenerationConfig(**config))


async def collect(sampler, request):
    deltas = [d async for d in sampler.stream(request)]
    return deltas, "".join(d.text for d in deltas)


async def test_deltas_carry_token_ids_that_decode_to_the_text(embedded):
    sampler = make(embedded, max_new_tokens=24)
    deltas, text = await collect(sampler, SampleRequest(QUESTION, max_tokens=24))
    ids = [i for d in deltas for i in d.token_ids]
    assert len(ids) == 24
    assert deltas[-1].finish_reason == "length"
    assert sampler.tokenizer.decode(ids) == text
    assert all(lp <= 0 for d in deltas for lp in d.logprobs)


@pytest.fixture(scope="module")
def embedded_float():
    """The embedded model in float32: int8 dynamic quantization scales activations per call, so
    only a float model gives the same numbers for a cached and a full prefill."""
    from kernel_bridge.embedded import load_embedded

    return load_embedded(dtype="float32")


async def test_resume_prefills_only_new_tokens_and_matches_a_fresh_run(embedded_float):
    sampler = make(embedded_float, max_new_tokens=12)
    first, text = await collect(sampler, SampleRequest(QUESTION, max_tokens=12))
    ids = [i for d in first for i in d.token_ids]
    tool_text = "```output\n391\n```\n"
    tool = Segment(kind="tool", text=tool_text, token_ids=sampler.encode(tool_text))
    segments = [Segment(kind="model", text=text, token_ids=ids), tool]
    resumed, _ = await collect(sampler, SampleRequest(QUESTION, segments, max_tokens=6))
    assert sampler.prefilled_last == len(tool.token_ids) + 1  # + the last sampled token

    fresh = make(embedded_float, max_new_tokens=6)
    restarted, _ = await collect(fresh, SampleRequest(QUESTION, segments, max_tokens=6))
    assert fresh.prefilled_last == len(fresh.context_ids(SampleRequest(QUESTION, segments)))
    # The reused cache gives what a full prefill gives: the same tokens, the same logprobs.
    reused_ids = [i for d in resumed for i in d.token_ids]
    fresh_ids = [i for d in restarted for i in d.token_ids]
    assert reused_ids == fresh_ids
    reused_lps = [lp for d in resumed for lp in d.logprobs]
    fresh_lps = [lp for d in restarted for lp in d.logprobs]
    assert max(abs(a - b) for a, b in zip(reused_lps, fresh_lps, strict=True)) < 1e-3


async def test_stop_string_ends_the_stream_before_it(embedded):
    sampler = make(embedded, max_new_tokens=64)
    deltas, text = await collect(sampler, SampleRequest(QUESTION, stop=["```"], max_tokens=64))
    assert "```" not in text
    assert deltas[-1].finish_reason == "stop"


def test_partial_stop_holds_back_only_a_possible_prefix():
    assert _partial_stop("x = 1\n``", ["```output"]) == 2
    assert _partial_stop("```\n", ["```output"]) == 0
    assert _partial_stop("text ```outp", ["```output"]) == 7


async def test_reasoner_with_the_embedded_model_runs_code_and_keeps_ids(embedded):
    sampler = make(embedded, max_new_tokens=300)
    async with Reasoner(sampler, limits=Limits(max_steps=3, max_tokens=400)) as reasoner:
        trace = await reasoner.run("Use Python to compute 123456789 * 987654321. Print the result.")
    assert trace.steps, trace.text
    assert "121932631112635269" in trace.text
    model_segments = [s for s in trace.segments if s.kind == "model"]
    first = model_segments[0]
    assert first.token_ids is not None
    assert sampler.tokenizer.decode(first.token_ids) == first.text
