"""Reasoning models as they really stream: thinking in the API's reasoning channel (DeepSeek, vLLM
with a reasoning parser, Anthropic through LiteLLM) runs its code blocks through a real kernel, and
thinking models served raw start in the think section their chat template opens.

The servers are stand-ins (``tests/openai_standin.py``) speaking each API's wire format; LiteLLM
and the kernel are real.
"""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

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
from tests.test_magic import last_trace, magic_notebook, printed

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


def shown_while_running(labels: list[str]) -> list[str]:
    """``Notebook.streamed()`` with stdout that ipykernel sent in several 0.2 s batches joined,
    and without the loading display a model shows when it takes over a second to load."""
    if labels[:2] == ["loading", "clear"]:
        labels = labels[2:]
    joined: list[str] = []
    for label in labels:
        if label.startswith("stdout:") and joined and joined[-1].startswith("stdout:"):
            joined[-1] += label.removeprefix("stdout:")
        else:
            joined.append(label)
    return joined


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


async def test_block_in_vllm_reasoning_runs_and_the_prefill_carries_the_thinking(standin, kernel):
    standin.add(
        thinking_reply(),
        Reply("The answer is 42.", reasoning="So it is 42.", chunk_size=5),
    )
    sampler = LiteLLMSampler("hosted_vllm/standin", api_base=standin.base_url)
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


async def test_deepseek_prefill_sends_the_thinking_in_reasoning_content(standin, kernel):
    standin.add(
        thinking_reply(null_content=True),
        Reply("The answer is 42.", reasoning="So it is 42.", null_content=True),
    )
    sampler = LiteLLMSampler(
        "deepseek/deepseek-reasoner", api_base=standin.base_url, api_key="sk-test"
    )
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


async def test_anthropic_thinking_continues_in_a_new_turn_that_the_trace_records(anthropic, kernel):
    anthropic.add(thinking_reply(), Reply("42", reasoning="So it is 42.", chunk_size=4))
    sampler = LiteLLMSampler(
        "anthropic/claude-sonnet-4-5",
        api_base=anthropic.api_base,
        api_key="sk-ant-test",
        reasoning_effort="low",
    )
    assert sampler.prefill is False  # Anthropic cannot prefill a thinking turn
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
    standin, anthropic, server, tmp_path, kernel
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


async def test_raw_reasoning_model_starts_inside_thinking_and_its_first_block_runs(kernel):
    from kernel_bridge.samplers.vllm import VLLMServerSampler
    from tests.vllm_standin import Completion, VLLMCompletionsStandIn

    tokenizer = byte_tokenizer(R1_TEMPLATE)
    with VLLMCompletionsStandIn(tokenizer) as server:
        server.add(
            Completion(THINKING + GUESSED, eos=False, tokens_per_chunk=4, delay=0.01),
            Completion("So it is 42.\n</think>\n\nThe answer is 42.", tokens_per_chunk=4),
        )
        sampler = VLLMServerSampler(server.url, server.model, tokenizer)
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


# A ReTool-style checkpoint's template: tool results come back to it in <interpreter> tags.
RETOOL_TEMPLATE = CHATML_TEMPLATE.replace(
    "{{ m['content'] }}", "{{ m['content'] | replace('```output', '<interpreter>') }}"
)


@pytest.mark.parametrize(
    ("template", "profile"),
    [
        (RETOOL_TEMPLATE, "retool"),
        ({"default": RETOOL_TEMPLATE}, "retool"),  # named templates
        (R1_TEMPLATE, "markdown"),  # think-first is a start section, not a profile
        (CHATML_TEMPLATE, "markdown"),
        (None, "markdown"),  # no template (an API model): markdown fences
    ],
)
def test_auto_profile_comes_from_the_chat_template(template, profile):
    from kernel_bridge.parsing import get_profile

    tokenizer = byte_tokenizer(None)
    tokenizer.chat_template = template
    assert get_profile("auto", tokenizer).name == profile
    assert get_profile("markdown", tokenizer).name == "markdown"  # by hand wins


def test_unknown_profile_names_auto_among_the_choices():
    from kernel_bridge.parsing import get_profile

    with pytest.raises(ValueError, match="unknown profile 'tags'; choose one of: auto, markdown"):
        get_profile("tags")


async def test_retool_checkpoint_served_raw_gets_its_tags_and_its_block_runs(kernel):
    from kernel_bridge.samplers.vllm import VLLMServerSampler
    from tests.vllm_standin import Completion, VLLMCompletionsStandIn

    tokenizer = byte_tokenizer(RETOOL_TEMPLATE)
    with VLLMCompletionsStandIn(tokenizer) as server:
        server.add(
            Completion("<code>\nprint(6 * 7)\n</code>\n", eos=False, tokens_per_chunk=4),
            Completion("<answer>42</answer>", tokens_per_chunk=4),
        )
        sampler = VLLMServerSampler(server.url, server.model, tokenizer)
        trace, _, _ = await run_recorded(Reasoner(sampler, kernel), "6*7?")
    assert trace.profile == "retool"
    assert [s.output_text for s in trace.steps] == ["42"]
    assert "<interpreter>\n42\n</interpreter>" in trace.segments[1].text
    assert trace.answer == "42"


# -- gguf:PATH: any local GGUF file ---------------------------------------------------------------

GGUF_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
GGUF_MERGES = ["h e", "Ġ t", "i n"]
# A thinking model's template (Qwen3-Thinking, R1 distills): the generation prompt opens <think>.
GGUF_TEMPLATE = CHATML_TEMPLATE.replace("assistant\n{% endif %}", "assistant\n<think>\n{% endif %}")


def write_tiny_gguf(path, architecture: str = "qwen2", tensors: bool = True, seed: int = 0):
    """A tiny random model as a GGUF file, written the way llama.cpp's converter writes one
    (float32 tensors, a byte-level BPE vocabulary, the chat template); returns its embedding."""
    import gguf
    import numpy as np
    from tokenizers import pre_tokenizers

    rng = np.random.default_rng(seed)
    tokens = [
        *sorted(pre_tokenizers.ByteLevel.alphabet()),
        *(m.replace(" ", "") for m in GGUF_MERGES),
        *GGUF_SPECIAL,
    ]
    hidden, ffn, heads, kv, layers = 32, 64, 4, 2, 2
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny")
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_block_count(layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    normal = len(tokens) - len(GGUF_SPECIAL)
    writer.add_token_types(
        [gguf.TokenType.NORMAL] * normal + [gguf.TokenType.CONTROL] * len(GGUF_SPECIAL)
    )
    writer.add_token_merges(GGUF_MERGES)
    writer.add_bos_token_id(len(tokens) - 3)
    writer.add_eos_token_id(len(tokens) - 1)
    writer.add_chat_template(GGUF_TEMPLATE)
    written = {}

    def tensor(name, *shape):
        written[name] = (rng.standard_normal(shape) * 0.2).astype(np.float32)
        if tensors:
            writer.add_tensor(name, written[name])

    tensor("token_embd.weight", len(tokens), hidden)
    for i in range(layers):
        for name, shape in [
            ("attn_norm.weight", (hidden,)),
            ("attn_q.weight", (hidden, hidden)),
            ("attn_q.bias", (hidden,)),
            ("attn_k.weight", (kv * hidden // heads, hidden)),
            ("attn_k.bias", (kv * hidden // heads,)),
            ("attn_v.weight", (kv * hidden // heads, hidden)),
            ("attn_v.bias", (kv * hidden // heads,)),
            ("attn_output.weight", (hidden, hidden)),
            ("ffn_norm.weight", (hidden,)),
            ("ffn_gate.weight", (ffn, hidden)),
            ("ffn_up.weight", (ffn, hidden)),
            ("ffn_down.weight", (hidden, ffn)),
        ]:
            tensor(f"blk.{i}.{name}", *shape)
    tensor("output_norm.weight", hidden)
    tensor("output.weight", len(tokens), hidden)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return written["token_embd.weight"]


@pytest.fixture
def gguf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("KERNEL_BRIDGE_CACHE", str(cache))
    return cache


async def test_gguf_file_is_converted_once_and_generates_in_int8(tmp_path, gguf_cache, capfd):
    import torch

    from kernel_bridge.gguf import load_gguf
    from kernel_bridge.parsing import MARKDOWN, template_start_section
    from kernel_bridge.samplers import make_sampler
    from kernel_bridge.samplers.transformers import TransformersSampler

    path = tmp_path / "tiny-thinker.gguf"
    embedding = write_tiny_gguf(path)
    sampler = make_sampler(f"gguf:{path}")
    assert isinstance(sampler, TransformersSampler) and sampler.name == f"gguf:{path}"
    assert "converting tiny-thinker.gguf once" in capfd.readouterr().err
    model = sampler.model
    linears = {type(m).__name__ for n, m in model.named_modules() if n.endswith("proj")}
    assert linears == {"Int8Linear"}  # the embedded model's CPU path
    got = model.get_input_embeddings().weight.float()
    assert torch.allclose(got, torch.from_numpy(embedding), atol=1e-2)  # the file's own weights
    (converted,) = set((gguf_cache / "gguf").iterdir()) - {gguf_cache / "gguf" / "sha256.json"}
    assert len(converted.name) == 64  # keyed by the file's sha256
    # The template came along: its generation prompt opens <think>, so the turn starts in it.
    assert template_start_section(sampler.tokenizer, QUESTION, MARKDOWN) == "think"
    request = SampleRequest(QUESTION, max_tokens=8)
    first = [d async for d in sampler.stream(request)]
    assert sum(len(d.token_ids or []) for d in first) == 8  # random weights: never ends early
    # A second load reads the conversion: no notice, the same greedy tokens.
    again = make_sampler(f"gguf:{path}")
    assert "converting" not in capfd.readouterr().err
    second = [d async for d in again.stream(request)]
    assert [d.token_ids for d in second] == [d.token_ids for d in first]
    # bfloat16 (a GPU's default) from the same conversion: plain linear layers.
    plain, _ = load_gguf(path, dtype="bfloat16")
    assert plain.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"GGUF" + bytes(range(256)) * 4, "a damaged GGUF file, its header does not read"),
        (b"<!DOCTYPE html><html>Not found</html>", "not a GGUF file (it starts with b'<!DO'"),
        (b"", "not a GGUF file"),
    ],
)
def test_corrupt_or_foreign_file_is_one_clear_line(tmp_path, gguf_cache, content, message):
    from kernel_bridge.gguf import GGUFError
    from kernel_bridge.samplers import make_sampler

    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(GGUFError) as info:
        make_sampler(f"gguf:{path}")
    text = str(info.value)
    assert message in text and "\n" not in text and str(path) in text


def test_architecture_transformers_cannot_load_is_one_clear_line(tmp_path, gguf_cache):
    from kernel_bridge.gguf import GGUFError
    from kernel_bridge.samplers import make_sampler

    path = tmp_path / "deepseek-v3.gguf"
    write_tiny_gguf(path, architecture="deepseek2", tensors=False)
    with pytest.raises(GGUFError, match="cannot load the GGUF architecture 'deepseek2'") as info:
        make_sampler(f"gguf:{path}")
    assert "\n" not in str(info.value) and "qwen2" in str(info.value)  # what it can load


def test_missing_gguf_file_says_so(tmp_path):
    from kernel_bridge.gguf import GGUFError
    from kernel_bridge.samplers import make_sampler

    with pytest.raises(GGUFError, match="no such file"):
        make_sampler(f"gguf:{tmp_path / 'nothing.gguf'}")


# -- reasoning effort from the front ends -------------------------------------------------------


def test_cli_reasoning_effort_turns_an_api_models_thinking_on(anthropic, tmp_path):
    import os
    import subprocess
    import sys

    anthropic.add(Reply("42", reasoning="Six sevens are 42.", chunk_size=4))
    env = {
        **os.environ,
        "KERNEL_BRIDGE_HOME": str(tmp_path),
        "ANTHROPIC_API_BASE": anthropic.api_base,
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "NO_COLOR": "1",
    }
    model = "anthropic/claude-sonnet-4-5"
    out = subprocess.run(
        [sys.executable, "-m", "kernel_bridge.cli", "reason", "6*7?", "--model", model,
         "--reasoning-effort", "low"],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert anthropic.bodies[0]["thinking"]["type"] == "enabled"
    (trace,) = TraceStore(tmp_path / "traces.jsonl").load()
    assert trace.sampler["params"]["reasoning_effort"] == "low"
    assert trace.text == "<think>\nSix sevens are 42.\n</think>\n\n42"


@pytest.mark.slow
def test_reason_magic_shows_api_thinking_in_the_cell_and_the_comm(anthropic, tmp_path, monkeypatch):
    # %%reason in a real notebook kernel, which reaches the stand-in through the variables it
    # inherits; --reasoning-effort turns Anthropic's thinking on, and its block runs there.
    anthropic.add(thinking_reply(), Reply("42", reasoning="So it is 42.", chunk_size=4))
    monkeypatch.setenv("ANTHROPIC_API_BASE", anthropic.api_base)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    trace_file = tmp_path / "traces.jsonl"
    model = "anthropic/claude-sonnet-4-5"
    with magic_notebook(tmp_path) as notebook:
        cell = notebook.reason(
            f"--model {model} --reasoning-effort low --trace {trace_file}", "What is 6*7?"
        )
        # (The log also has the closing of the loading display's widgets: events have a type.)
        streamed, events = notebook.streamed(), [e for e in notebook.comm_log if "type" in e]
        assert printed(notebook.run("print(x)")) == "42\n"  # the block ran in the notebook
    assert [body["thinking"]["type"] for body in anthropic.bodies] == ["enabled", "enabled"]
    trace = last_trace(trace_file)
    assert trace.sampler["params"]["reasoning_effort"] == "low"
    assert [(s.status, s.output_text) for s in trace.steps] == [("ok", "42")]
    assert trace.answer == "42"
    spans = [(s.kind, seg.text[s.start : s.end]) for seg in trace.segments for s in seg.spans or []]
    assert ("think", "\nLet me compute.\n") in spans and ("think", "So it is 42.\n") in spans
    # While it ran, the cell streamed the thinking, the block, its output, then the answer;
    # the finished cell keeps one view of it all and the trace.
    streamed = shown_while_running(streamed)
    assert streamed[:4] == ["stdout:Let me compute.\n", "code", "stdout:42\n", "step:ok"]
    assert re.fullmatch(r"stdout:So it is 42\.\n+42\n", streamed[4])  # then the answer
    assert streamed[5:] == ["clear", "trace"]
    view, _ = cell.outputs
    assert "Let me compute." in view.data["text/html"] and "So it is 42." in view.data["text/html"]
    # The comm carried the same thinking, and the block's end.
    think = "".join(e["text"] for e in events if e["type"] == "text" and e["section"] == "think")
    assert think == "\nLet me compute.\nSo it is 42.\n"
    code = [(e["section"], e["code"], e["runs"]) for e in events if e["type"] == "code"]
    assert code == [("think", "x = 6 * 7\nprint(x)\n", True)]
    assert [e["status"] for e in events if e["type"] == "step_finished"] == ["ok"]
    assert events[-1]["type"] == "finished" and events[-1]["finish_reason"] == "answer"


@pytest.mark.parametrize(
    ("model", "effort", "message"),
    [
        ("local", "high", "reasoning effort applies to API models (PROVIDER/MODEL), not 'local'"),
        ("vllm:http://127.0.0.1:9/v1", "low", "not 'vllm:http://127.0.0.1:9/v1'"),
        ("openai/gpt-4o", "extreme", "choose one of none, low, medium, high"),
    ],
)
def test_reasoning_effort_is_refused_where_it_cannot_apply(model, effort, message):
    from kernel_bridge.samplers import ModelSpecError, make_sampler

    with pytest.raises(ModelSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_sampler(model, reasoning_effort=effort)
