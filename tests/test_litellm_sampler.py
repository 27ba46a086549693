"""LiteLLMSampler against a real local HTTP server that stands in for OpenAI and vLLM."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading

import pytest

from kernel_bridge.reasoner import Reasoner
from kernel_bridge.samplers import ModelSpecError, SampleRequest, make_sampler
from kernel_bridge.samplers.litellm import (
    CONTINUE_PROMPT,
    LiteLLMSampler,
    SamplerError,
    _skip_held_back,
)
from kernel_bridge.trace import Segment
from tests.openai_standin import OpenAIStandIn, Reply

QUESTION = [{"role": "user", "content": "What is 6*7?"}]
SO_FAR = "<think>Let me compute.\n```python\nprint(6*7)\n```\n```output\n42\n```\n"


@pytest.fixture(autouse=True)
def offline_litellm(monkeypatch):
    """LiteLLM would fetch its cost map from the internet at import without this."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def standin():
    with OpenAIStandIn() as server:
        yield server


def openai_sampler(server: OpenAIStandIn, **kw) -> LiteLLMSampler:
    kw.setdefault("backoff", 0.01)
    return LiteLLMSampler("openai/standin", api_base=server.base_url, api_key="sk-test", **kw)


def vllm_sampler(server: OpenAIStandIn, **kw) -> LiteLLMSampler:
    return LiteLLMSampler("hosted_vllm/standin", api_base=server.base_url, **kw)


def request(so_far: str = "", stop: list[str] | None = None, max_tokens: int | None = None):
    segments = [Segment(kind="model", text=so_far)] if so_far else []
    return SampleRequest(QUESTION, segments, stop=stop or [], max_tokens=max_tokens)


async def collect(sampler, req) -> list:
    return [d async for d in sampler.stream(req)]


# -- streaming ------------------------------------------------------------------------------------


async def test_streams_deltas_in_order(standin):
    standin.add(Reply("The answer is forty-two.", chunk_size=3))
    deltas = await collect(openai_sampler(standin), request())
    assert "".join(d.text for d in deltas) == "The answer is forty-two."
    assert [d.text for d in deltas[:3]] == ["The", " an", "swe"]
    assert [d.finish_reason for d in deltas].count("stop") == 1
    assert deltas[-1].finish_reason == "stop"
    assert all(d.token_ids is None for d in deltas)  # an API gives text, not ids


async def test_length_limit_is_reported_and_max_tokens_sent(standin):
    standin.add(Reply("cut sho", finish_reason="length"))
    sampler = openai_sampler(standin, max_tokens=500)
    deltas = await collect(sampler, request(max_tokens=7))
    assert deltas[-1].finish_reason == "length"
    assert standin.bodies[0]["max_tokens"] == 7  # the Reasoner's remaining budget is smaller


async def test_chunks_arrive_as_the_server_sends_them(standin):
    # The server sends each chunk only once the caller has the one before: a sampler that
    # buffered would hold chunk 1 while the server waits, and the gate would be missed.
    gates = [threading.Event() for _ in range(4)]
    standin.add(Reply(chunks=["one ", "two ", "three ", "four"], gates=gates))
    received = []
    async for delta in openai_sampler(standin).stream(request()):
        if delta.text:
            gates[len(received)].set()
            received.append(delta.text)
    exchange = await standin.done()
    assert received == ["one ", "two ", "three ", "four"]
    assert exchange.gates_missed == 0


async def test_closing_the_stream_drops_the_connection(standin):
    standin.add(Reply("x" * 200, chunk_size=5, delay=0.1))
    stream = openai_sampler(standin).stream(request())
    first = await anext(stream)
    await stream.aclose()
    exchange = await standin.done(timeout=5)
    assert first.text == "xxxxx"
    assert exchange.disconnected and not exchange.completed
    assert len(exchange.sent_at) < 40  # the server stopped early instead of sending every chunk


# -- continuing the assistant turn ----------------------------------------------------------------


async def test_first_call_sends_only_the_conversation(standin):
    standin.add(Reply("ok"))
    await collect(vllm_sampler(standin), request())
    body = standin.bodies[0]
    assert body["messages"] == QUESTION
    assert "continue_final_message" not in body


async def test_continuation_prefills_the_assistant_turn_for_vllm(standin):
    standin.add(Reply("The answer is 42."))
    sampler = vllm_sampler(standin)
    deltas = await collect(sampler, request(SO_FAR))
    body = standin.bodies[0]
    assert body["messages"] == [*QUESTION, {"role": "assistant", "content": SO_FAR}]
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False
    assert "".join(d.text for d in deltas) == "The answer is 42."
    assert sampler.params()["prefill"] is True


async def test_continuation_falls_back_to_a_user_turn_for_openai(standin):
    standin.add(Reply("The answer is 42."))
    sampler = openai_sampler(standin)
    deltas = await collect(sampler, request(SO_FAR))
    body = standin.bodies[0]
    assert body["messages"] == [
        *QUESTION,
        {"role": "assistant", "content": SO_FAR},
        {"role": "user", "content": CONTINUE_PROMPT},
    ]
    assert "continue_final_message" not in body
    assert CONTINUE_PROMPT == (
        "Continue exactly where you left off. The output of your last code block is above."
    )
    assert "".join(d.text for d in deltas) == "The answer is 42."  # yielded as the continuation


async def test_prefill_can_be_forced_off(standin):
    standin.add(Reply("ok"))
    await collect(vllm_sampler(standin, prefill=False), request(SO_FAR))
    assert standin.bodies[0]["messages"][-1] == {"role": "user", "content": CONTINUE_PROMPT}
    assert "continue_final_message" not in standin.bodies[0]


@pytest.mark.parametrize(
    ("model", "prefill"),
    [
        ("anthropic/claude-sonnet-4-5", True),
        ("deepseek/deepseek-chat", True),
        ("mistral/mistral-large-latest", True),
        ("hosted_vllm/Qwen/Qwen3-8B", True),
        ("ollama_chat/qwen2.5-coder", True),
        ("openai/gpt-4o", False),
        ("gemini/gemini-2.0-flash", False),
    ],
)
def test_prefill_is_decided_by_provider(model, prefill):
    assert LiteLLMSampler(model).prefill is prefill


def test_mistral_and_deepseek_mark_the_prefix_message():
    for model in ("mistral/mistral-large-latest", "deepseek/deepseek-chat"):
        messages, _ = LiteLLMSampler(model).messages_for(request(SO_FAR))
        assert messages[-1] == {"role": "assistant", "content": SO_FAR, "prefix": True}


def test_anthropic_prefill_leaves_out_trailing_whitespace():
    messages, held_back = LiteLLMSampler("anthropic/claude-sonnet-4-5").messages_for(
        request(SO_FAR)
    )
    assert messages[-1] == {"role": "assistant", "content": SO_FAR.rstrip()}
    assert held_back == "\n"
    # The model's continuation starts by re-creating that newline; it is not doubled.
    assert _skip_held_back("\nThe answer", "\n") == ("The answer", "")
    assert _skip_held_back("The answer", "\n") == ("The answer", "")


async def test_stop_strings_are_sent_at_most_four(standin):
    standin.add(Reply("ok"), Reply("ok"))
    await collect(openai_sampler(standin), request(stop=["```output"]))
    await collect(openai_sampler(standin), request(stop=["a", "b", "c", "d", "e", "f"]))
    assert standin.bodies[0]["stop"] == ["```output"]
    assert standin.bodies[1]["stop"] == ["a", "b", "c", "d"]


# -- failures -------------------------------------------------------------------------------------


async def test_rate_limit_is_retried_then_succeeds(standin):
    standin.add(Reply(status=429, error_message="Rate limit reached"), Reply("fine"))
    deltas = await collect(openai_sampler(standin), request())
    assert "".join(d.text for d in deltas) == "fine"
    assert len(standin.exchanges) == 2  # no retries inside LiteLLM or the OpenAI SDK


async def test_server_errors_are_retried_until_retries_run_out(standin):
    standin.add(Reply(status=500), Reply(status=503), Reply("recovered"))
    deltas = await collect(openai_sampler(standin, retries=3), request())
    assert "".join(d.text for d in deltas) == "recovered"
    standin.add(*[Reply(status=500)] * 3)
    with pytest.raises(SamplerError, match="after 3 attempts"):
        await collect(openai_sampler(standin, retries=2), request())
    assert len(standin.exchanges) == 3 + 3


async def test_a_stalled_stream_times_out_and_is_retried(standin):
    standin.add(Reply(chunks=["too late"], delay=3.0), Reply("fine"))
    deltas = await collect(openai_sampler(standin, timeout=0.5), request())
    assert "".join(d.text for d in deltas) == "fine"
    first = await standin.done(0)
    assert first.disconnected and first.sent_at == []  # gave up before the late chunk


async def test_rejected_key_fails_at_once_naming_the_variable(standin):
    standin.add(Reply(status=401, error_message="Incorrect API key provided: sk-test."))
    with pytest.raises(SamplerError, match="OPENAI_API_KEY") as info:
        await collect(openai_sampler(standin), request())
    assert "openai/standin" in str(info.value) and "api_key=" in str(info.value)
    assert len(standin.exchanges) == 1


async def test_missing_key_fails_before_any_request(standin, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    sampler = LiteLLMSampler("openai/standin", api_base=standin.base_url, backoff=0.01)
    with pytest.raises(SamplerError, match="set OPENAI_API_KEY"):
        await collect(sampler, request())
    assert standin.exchanges == []


async def test_unknown_model_is_a_clear_error(standin):
    standin.add(Reply(status=404, error_message="The model `standin` does not exist."))
    with pytest.raises(SamplerError, match="no such model"):
        await collect(openai_sampler(standin), request())
    assert len(standin.exchanges) == 1


def test_unknown_provider_is_rejected_up_front():
    with pytest.raises(ModelSpecError, match="no provider 'nosuchprovider'"):
        make_sampler("nosuchprovider/some-model")
    with pytest.raises(ModelSpecError, match=re.escape("hf:Qwen/Qwen2.5-0.5B")):
        make_sampler("Qwen/Qwen2.5-0.5B")  # a Hugging Face id: the hint says how to run it


@pytest.mark.parametrize("failure", ["error_after", "drop_after"])
async def test_error_mid_stream_is_not_retried(standin, failure):
    standin.add(Reply("abcdefghijkl", chunk_size=4, **{failure: 2}), Reply("must not be used"))
    deltas = []
    with pytest.raises(SamplerError, match="broke after 8 characters"):
        async for delta in openai_sampler(standin).stream(request()):
            deltas.append(delta)
    assert "".join(d.text for d in deltas) == "abcdefgh"  # delivered once, never repeated
    assert len(standin.exchanges) == 1


# -- the model string and the trace ---------------------------------------------------------------


def test_make_sampler_sends_provider_models_to_litellm():
    sampler = make_sampler("hosted_vllm/Qwen/Qwen3-8B")
    assert isinstance(sampler, LiteLLMSampler)
    assert sampler.name == "hosted_vllm/Qwen/Qwen3-8B"
    assert sampler.provider == "hosted_vllm"
    assert isinstance(make_sampler("openai/gpt-4o"), LiteLLMSampler)


def test_params_name_the_model_and_never_the_key():
    sampler = LiteLLMSampler(
        "openai/gpt-4o",
        api_key="sk-secret",
        api_base="https://user:pw@example.invalid/v1?key=sk-secret",
        temperature=0.7,
        top_p=0.9,
    )
    params = sampler.params()
    assert params["model"] == "openai/gpt-4o" and params["temperature"] == 0.7
    assert params["top_p"] == 0.9 and params["prefill"] is False
    assert params["api_base"] == "https://example.invalid/v1"
    text = json.dumps(params) + repr(sampler)
    assert "sk-secret" not in text and "pw" not in text


def test_missing_litellm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "litellm", None)  # makes `import litellm` fail
    with pytest.raises(ModelSpecError, match=r'pip install "kernel-bridge\[api\]"'):
        make_sampler("openai/gpt-4o")


# -- end to end -----------------------------------------------------------------------------------


async def test_reasoner_runs_the_block_and_prefills_its_real_output(standin, kernel):
    # The stand-in ignores stop strings: after the block it goes on with a made-up output and
    # more text, slowly, so the Reasoner has to close the stream at the block's end.
    first = "<think>Let me compute.\n```python\nx = 6 * 7\nprint(x)\n```\n"
    guessed = "```output\n41\n```\n" + "and so on " * 20
    tail = [guessed[i : i + 10] for i in range(0, len(guessed), 10)]
    standin.add(
        Reply(chunks=[first, *tail], delay=0.05),
        Reply("So it is 42.</think>\n<answer>42</answer>", chunk_size=6),
    )
    trace = await Reasoner(vllm_sampler(standin), kernel).run("What is 6*7?")
    assert (await kernel.execute("x")).output_text == "42"  # it really ran there
    assert trace.finish_reason == "answer" and trace.answer == "42"
    assert [s.output_text for s in trace.steps] == ["42"]
    assert (await standin.done(0)).disconnected  # the pause closed the first request early
    second = standin.bodies[1]
    assert second["continue_final_message"] is True
    assistant = second["messages"][-1]
    assert assistant["role"] == "assistant"
    assert assistant["content"] == first + "```output\n42\n```\n"
    assert "41" not in assistant["content"]
    assert trace.sampler["params"]["model"] == "hosted_vllm/standin"
    assert trace.text.endswith("So it is 42.</think>\n<answer>42</answer>")


async def test_cancelling_a_run_aborts_the_request(standin, kernel):
    standin.add(Reply("<think>" + "thinking " * 200, chunk_size=9, delay=0.05))
    reasoner = Reasoner(vllm_sampler(standin), kernel)
    task = asyncio.create_task(reasoner.run("q"))
    while not standin.exchanges or not standin.exchanges[0].sent_at:
        await asyncio.sleep(0.02)
    # Python 3.11's asyncio.wait_for (the Reasoner's per-delta deadline) drops a cancel that
    # lands just as a delta arrives, so cancel until the task ends, as Ctrl-C twice would.
    for _ in range(100):
        if task.done():
            break
        task.cancel()
        await asyncio.sleep(0.05)
    with pytest.raises(asyncio.CancelledError):
        await task
    exchange = await standin.done(0, timeout=5)
    assert exchange.disconnected and not exchange.completed
    assert reasoner.trace is not None and reasoner.trace.finish_reason == "interrupted"
