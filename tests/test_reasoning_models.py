"""Reasoning models as they really stream: thinking in the API's reasoning channel (DeepSeek, vLLM
with a reasoning parser, Anthropic through LiteLLM) runs its code blocks through a real kernel, and
thinking models served raw start in the think section their chat template opens.

The servers are stand-ins (``tests/openai_standin.py``) speaking each API's wire format; LiteLLM
and the kernel are real.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from kernel_bridge import Kernel
from kernel_bridge.parsing import TextDelta
from kernel_bridge.reasoner import Reasoner
from kernel_bridge.render import TerminalRenderer
from kernel_bridge.samplers import SampleRequest
from kernel_bridge.samplers.litellm import (
    CONTINUE_PROMPT,
    LiteLLMSampler,
    ThinkingChannel,
    split_thinking,
)
from kernel_bridge.trace import Segment, TraceStore
from tests.openai_standin import AnthropicStandIn, OpenAIStandIn, Reply

QUESTION = [{"role": "user", "content": "What is 6*7?"}]
# Thinking with a block in it, then the output the model guesses (which must never be used),
# streamed slowly so that the Reasoner closes the stream at the block's end.
THINKING = "Let me compute.\n```python\nx = 6 * 7\nprint(x)\n```\n"
GUESSED = "```output\n41\n```\n" + "and so on " * 20
THOUGHT = "<think>\n" + THINKING + "```output\n42\n```\n"  # the turn when the block has run


@pytest.fixture(autouse=True)
def offline_litellm(monkeypatch):
    """LiteLLM would fetch its cost map from the internet at import without this."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def standin():
    with OpenAIStandIn() as server:
        yield server


@pytest.fixture
def anthropic():
    with AnthropicStandIn() as server:
        yield server


def thinking_reply(**kw) -> Reply:
    """A first reply that thinks with a block, then goes on with a made-up output."""
    pieces = [THINKING] + [GUESSED[i : i + 10] for i in range(0, len(GUESSED), 10)]
    return Reply(reasoning_chunks=pieces, delay=0.05, **kw)


def request(so_far: str = "") -> SampleRequest:
    return SampleRequest(QUESTION, [Segment(kind="model", text=so_far)] if so_far else [])


async def collect_text(sampler, req) -> str:
    return "".join([d.text async for d in sampler.stream(req)])


async def run_recorded(reasoner: Reasoner, question: str):
    """Run ``question`` through the CLI's renderer; return the trace, the events and the screen."""
    screen = io.StringIO()
    renderer = TerminalRenderer(color=False, console=Console(file=screen, width=200))
    events = []
    async for event in reasoner.stream(question):
        events.append(event)
        renderer.handle(event)
    return reasoner.trace, events, screen.getvalue()


def think_text(events) -> str:
    return "".join(e.raw for e in events if isinstance(e, TextDelta) and e.section == "think")


# -- the reasoning channel, as each server sends it ----------------------------------------------


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        ("deepseek/deepseek-reasoner", {"null_content": True}),  # content: null beside it
        ("hosted_vllm/standin", {}),  # vLLM --reasoning-parser: reasoning_content
        ("hosted_vllm/standin", {"reasoning_key": "reasoning"}),  # newer vLLM, Ollama
    ],
)
async def test_reasoning_deltas_stream_as_thinking_before_the_answer(standin, model, shape):
    standin.add(Reply("The answer is 42.", reasoning="Six sevens.\nThat is 42.", **shape))
    sampler = LiteLLMSampler(model, api_base=standin.base_url, api_key="sk-test")
    text = await collect_text(sampler, request())
    assert text == "<think>\nSix sevens.\nThat is 42.\n</think>\n\nThe answer is 42."
    assert sampler.reasoning_channel


async def test_anthropic_thinking_blocks_stream_as_thinking(anthropic):
    anthropic.add(Reply("The answer is 42.", reasoning="Six sevens.", chunk_size=3))
    sampler = LiteLLMSampler(
        "anthropic/claude-sonnet-4-5",
        api_base=anthropic.api_base,
        api_key="sk-ant-test",
        reasoning_effort="low",
    )
    text = await collect_text(sampler, request())
    assert text == "<think>\nSix sevens.\n</think>\n\nThe answer is 42."
    body = anthropic.bodies[0]
    assert body["thinking"]["type"] == "enabled"  # reasoning_effort turned thinking on
    assert "temperature" not in body  # Anthropic takes none but 1 while thinking


@pytest.mark.parametrize(
    ("model", "effort", "continuation"),
    [
        ("anthropic/claude-sonnet-4-5", "low", "new_turn"),  # no prefill while thinking
        ("anthropic/claude-sonnet-4-5", None, "prefill"),
        ("anthropic/claude-sonnet-4-5", "none", "prefill"),  # thinking off
        ("deepseek/deepseek-reasoner", "high", "prefill"),
        ("hosted_vllm/Qwen/Qwen3-8B", "low", "prefill"),
        ("openai/o4-mini", "low", "new_turn"),
    ],
)
def test_continuation_mode_by_provider_and_thinking(model, effort, continuation):
    params = LiteLLMSampler(model, reasoning_effort=effort).params()
    assert params["continuation"] == continuation
    assert params["continue_prompt"] == (CONTINUE_PROMPT if continuation == "new_turn" else None)


def test_thinking_channel_goes_on_inside_an_open_think_section():
    # A continuation: the turn so far stopped inside thinking, after an output block.
    channel = ThinkingChannel(THOUGHT, closes=True)
    assert channel.merge("So it is 42.", "") == "So it is 42."
    assert channel.merge("", "42") == "\n</think>\n\n42"
    # A server that does not split sends the model's own tags as text: nothing is added.
    plain = ThinkingChannel(THOUGHT, closes=False)
    assert plain.merge("", "So 42.\n</think>\n42") == "So 42.\n</think>\n42"


def test_split_thinking_undoes_what_the_channel_wrote():
    assert split_thinking(THOUGHT) == (THINKING + "```output\n42\n```\n", "")
    assert split_thinking("<think>\nab\n</think>\n\nThe answer") == ("ab", "The answer")
    assert split_thinking("no thinking here") is None


# -- a block inside API thinking runs, and the turn continues ------------------------------------


async def test_block_in_vllm_reasoning_runs_and_the_prefill_carries_the_thinking(standin):
    standin.add(
        thinking_reply(),
        Reply("The answer is 42.", reasoning="So it is 42.", chunk_size=5),
    )
    sampler = LiteLLMSampler("hosted_vllm/standin", api_base=standin.base_url)
    async with Kernel(timeout=60) as kernel:
        trace, events, screen = await run_recorded(Reasoner(sampler, kernel), "What is 6*7?")
        assert (await kernel.execute("x")).output_text == "42"  # it really ran there
    assert [s.output_text for s in trace.steps] == ["42"]
    assert trace.finish_reason == "answer" and trace.answer == "The answer is 42."
    assert (await standin.done(0)).disconnected  # the pause closed the first request early
    second = standin.bodies[1]
    assert second["continue_final_message"] is True and second["add_generation_prompt"] is False
    assert second["messages"][-1] == {"role": "assistant", "content": THOUGHT}
    assert trace.text == THOUGHT + "So it is 42.\n</think>\n\nThe answer is 42."
    # The thinking is thinking everywhere: the trace's spans, the events, the terminal.
    spans = [(s.kind, seg.text[s.start : s.end]) for seg in trace.segments for s in seg.spans or []]
    assert ("think", "\nLet me compute.\n") in spans and ("code", "x = 6 * 7\nprint(x)\n") in spans
    assert ("think", "So it is 42.\n") in spans
    assert think_text(events) == "\nLet me compute.\nSo it is 42.\n"
    assert "Let me compute." in screen and "So it is 42." in screen and "42" in screen
    assert trace.sampler["params"]["continuation"] == "prefill"


async def test_deepseek_prefill_sends_the_thinking_in_reasoning_content(standin):
    standin.add(
        thinking_reply(null_content=True),
        Reply("The answer is 42.", reasoning="So it is 42.", null_content=True),
    )
    sampler = LiteLLMSampler(
        "deepseek/deepseek-reasoner", api_base=standin.base_url, api_key="sk-test"
    )
    async with Kernel(timeout=60) as kernel:
        trace = await Reasoner(sampler, kernel).run("What is 6*7?")
    assert [s.output_text for s in trace.steps] == ["42"]
    assert trace.answer == "The answer is 42."
    # DeepSeek's chat prefix completion: the thinking goes back where it came from.
    assert standin.bodies[1]["messages"][-1] == {
        "role": "assistant",
        "content": "",
        "reasoning_content": THINKING + "```output\n42\n```\n",
        "prefix": True,
    }
    assert trace.text == THOUGHT + "So it is 42.\n</think>\n\nThe answer is 42."


async def test_anthropic_thinking_continues_in_a_new_turn_that_the_trace_records(anthropic):
    anthropic.add(thinking_reply(), Reply("42", reasoning="So it is 42.", chunk_size=4))
    sampler = LiteLLMSampler(
        "anthropic/claude-sonnet-4-5",
        api_base=anthropic.api_base,
        api_key="sk-ant-test",
        reasoning_effort="low",
    )
    assert sampler.prefill is False  # Anthropic cannot prefill a thinking turn
    async with Kernel(timeout=60) as kernel:
        trace, events, _ = await run_recorded(Reasoner(sampler, kernel), "What is 6*7?")
    assert [s.output_text for s in trace.steps] == ["42"]
    assert trace.answer == "42"
    # The fallback: the thinking and the real output as the assistant's turn, then a user turn.
    second = anthropic.bodies[1]
    assistant, user = second["messages"][-2:]
    assert assistant["role"] == "assistant" and user["role"] == "user"
    assert "".join(part["text"] for part in assistant["content"]) == THOUGHT
    assert "".join(part["text"] for part in user["content"]) == CONTINUE_PROMPT
    assert second["thinking"]["type"] == "enabled"
    # The new turn's thinking goes on in the same think section.
    assert trace.text == THOUGHT + "So it is 42.\n</think>\n\n42"
    assert think_text(events) == "\nLet me compute.\nSo it is 42.\n"
    params = trace.sampler["params"]
    assert params["continuation"] == "new_turn" and params["continue_prompt"] == CONTINUE_PROMPT
    assert params["reasoning_effort"] == "low"


@pytest.mark.parametrize("server", ["openai", "anthropic"])
async def test_interrupted_thinking_stream_is_saved_in_the_trace(
    standin, anthropic, server, tmp_path
):
    # The server hangs up mid-thought: what was thought is kept, and why the run ended.
    thought = ["Six sevens", " are forty", "-two, I am", " fairly sure"]
    reply = Reply(reasoning_chunks=thought, drop_after=3)
    if server == "openai":
        standin.add(reply)
        sampler = LiteLLMSampler("hosted_vllm/standin", api_base=standin.base_url)
    else:
        anthropic.add(reply)
        sampler = LiteLLMSampler(
            "anthropic/claude-sonnet-4-5",
            api_base=anthropic.api_base,
            api_key="sk-ant-test",
            reasoning_effort="low",
            retries=0,
        )
    store = TraceStore(tmp_path / "traces.jsonl")
    async with Kernel(timeout=60) as kernel:
        trace = await Reasoner(sampler, kernel, store=store).run("What is 6*7?")
    assert trace.finish_reason == "error" and "broke after" in (trace.error or "")
    (saved,) = store.load()
    assert saved.id == trace.id and saved.finish_reason == "error"
    assert saved.text == "<think>\nSix sevens are forty-two, I am"
    assert [s.kind for s in saved.segments[0].spans or []] == ["markup", "think"]


# -- thinking models served raw: the chat template opens <think> ---------------------------------

# DeepSeek-R1's template, cut down: earlier thinking is dropped, the generation prompt opens it.
R1_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
    "{% else %}<｜Assistant｜>{{ m['content'].split('</think>')[-1] }}<｜end▁of▁sentence｜>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}"
)
# Qwen2.5's shape: the generation prompt opens the turn only.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen3 with enable_thinking=False: an empty think section, already closed.
NO_THINKING_TEMPLATE = CHATML_TEMPLATE.replace(
    "assistant\n{% endif %}", "assistant\n<think>\n\n</think>\n\n{% endif %}"
)


def byte_tokenizer(chat_template: str | None):
    """A real Hugging Face tokenizer built here: byte-level, no merges, the R1 special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core)
    tokenizer.add_special_tokens(
        {
            "eos_token": "<｜end▁of▁sentence｜>",
            "additional_special_tokens": ["<｜User｜>", "<｜Assistant｜>"],
        }
    )
    tokenizer.chat_template = chat_template
    return tokenizer


@pytest.mark.parametrize(
    ("template", "profile", "section"),
    [
        (R1_TEMPLATE, "markdown", "think"),
        (R1_TEMPLATE, "retool", "think"),
        (R1_TEMPLATE, "plain", None),  # a profile without think tags has no think section
        (CHATML_TEMPLATE, "markdown", None),
        (NO_THINKING_TEMPLATE, "markdown", None),
        (None, "markdown", None),  # no template: nothing to go by
    ],
)
def test_start_section_comes_from_the_generation_prompt(template, profile, section):
    from kernel_bridge.parsing import get_profile, template_start_section

    tokenizer = byte_tokenizer(template)
    assert template_start_section(tokenizer, QUESTION, get_profile(profile)) == section


async def test_raw_reasoning_model_starts_inside_thinking_and_its_first_block_runs():
    from kernel_bridge.samplers.vllm import VLLMServerSampler
    from tests.vllm_standin import Completion, VLLMCompletionsStandIn

    tokenizer = byte_tokenizer(R1_TEMPLATE)
    with VLLMCompletionsStandIn(tokenizer) as server:
        server.add(
            Completion(THINKING + GUESSED, eos=False, tokens_per_chunk=4, delay=0.01),
            Completion("So it is 42.\n</think>\n\nThe answer is 42.", tokens_per_chunk=4),
        )
        sampler = VLLMServerSampler(server.url, server.model, tokenizer)
        async with Kernel(timeout=60) as kernel:
            trace, events, screen = await run_recorded(Reasoner(sampler, kernel), "6*7?")
        prompt = tokenizer.decode(server.exchanges[0].prompt)
    assert prompt.endswith("<｜Assistant｜><think>\n")  # the template opened the section
    assert [s.output_text for s in trace.steps] == ["42"]
    assert trace.answer == "The answer is 42."
    first = trace.segments[0]
    spans = [(s.kind, first.text[s.start : s.end], s.step) for s in first.spans or []]
    assert spans[0] == ("think", "Let me compute.\n", None)  # thinking from the first token
    assert ("code", "x = 6 * 7\nprint(x)\n", 0) in spans
    assert think_text(events) == "Let me compute.\nSo it is 42.\n"
    assert "Let me compute." in screen
