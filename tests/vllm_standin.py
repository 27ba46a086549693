"""Stand-ins for vLLM, for tests: a ``vllm serve`` HTTP server and an in-process engine.

``VLLMCompletionsStandIn`` is a real HTTP server on 127.0.0.1 that speaks the part of vLLM's
OpenAI server the samplers use, as vLLM documents and implements it:

- ``GET /v1/models``: ``{"object": "list", "data": [{"id", "root", "max_model_len", …}]}``;
- ``POST /tokenize``: ``{"tokens", "count", "max_model_len"}``;
- ``POST /v1/completions`` with ``prompt`` as a list of token ids and ``stream: true``: server-sent
  ``data: {…}`` chunks of ``object: "text_completion"`` whose ``choices[0]`` has ``text``,
  ``logprobs`` (``tokens`` as ``"token_id:N"`` when ``return_tokens_as_token_ids``,
  ``token_logprobs``, ``top_logprobs``, ``text_offset``), ``finish_reason`` and ``stop_reason``,
  then ``data: [DONE]``; errors as ``{"error": {"message", "type", "param", "code"}}``, before
  the stream (with the HTTP status) or as a ``data:`` line inside it.

What it generates is scripted (a queue of ``Completion``s), but tokenized with a real tokenizer
and cut the way vLLM cuts: at ``max_tokens`` (``length``), at a stop string (``stop``, the text
truncated before it, the ids up to the token that completed it, ``stop_reason`` the string), or
at EOS (``stop``, the EOS id returned but not printed, ``stop_reason`` null).

``VLLMEngineStandIn`` implements what ``VLLMEngineSampler`` calls of vLLM's ``AsyncLLM``:
``generate(prompt, sampling_params, request_id)`` with ``RequestOutputKind.DELTA`` outputs, and
``abort(request_id)``; and records the calls a colocated trainer makes besides (``sleep``,
``wake_up``, ``reset_prefix_cache``, ``shutdown``). ``vllm_modules_standin()`` gives the modules
the sampler imports from.
"""

from __future__ import annotations

import asyncio
import enum
import time
import types
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from tests.http_standin import ScriptedExchange, ScriptedHandler, ScriptedServer


@dataclass
class Completion:
    """One scripted generation: ``text`` tokenized (or exactly ``token_ids``), then EOS."""

    text: str = ""
    token_ids: list[int] | None = None  # the ids to sample, when they must not be encode(text)
    eos: bool = True  # the model ends its turn after the script; else it would go on (length)
    tokens_per_chunk: int = 1
    delay: float = 0.0  # seconds before each chunk
    status: int = 200
    error_message: str = "scripted error"
    error_after: int | None = None  # send an error event after this many chunks
    drop_after: int | None = None  # hang up after this many chunks


@dataclass
class Generation:
    """What vLLM returns for one request: sampled ids, their logprobs and text, and the end."""

    ids: list[int]
    logprobs: list[float]
    texts: list[str]  # the text each token adds (empty for EOS and after a stop string)
    finish_reason: str
    stop_reason: int | str | None


def logprob_of(position: int, token_id: int) -> float:
    """A made-up but distinct logprob for each sampled token."""
    return -round(0.01 + ((token_id * 31 + position * 7) % 997) / 100, 4)


def generate(
    tokenizer: Any, completion: Completion, max_tokens: int, stop: list[str]
) -> Generation:
    """The script cut as vLLM cuts a generation (``include_stop_str_in_output`` false); the text
    that may still grow into a stop string is held back, as vLLM's detokenizer does."""
    script = (
        list(completion.token_ids)
        if completion.token_ids is not None
        else tokenizer.encode(completion.text, add_special_tokens=False)
    )
    if completion.eos:
        script.append(tokenizer.eos_token_id)
    stop = [s for s in stop if s]
    ids: list[int] = []
    texts: list[str] = []
    shown = text = ""
    finish, stop_reason = "length", None
    for token_id in script[:max_tokens]:
        ids.append(token_id)
        if token_id == tokenizer.eos_token_id:
            texts.append("")
            finish = "stop"
            break
        text = tokenizer.decode(ids, skip_special_tokens=True)
        hits = [(text.find(s), s) for s in stop if s in text]
        if hits:
            at, stop_reason = min(hits)
            text = text[:at]
            texts.append(text[len(shown) :])
            return Generation(ids, _logprobs(ids), texts, "stop", stop_reason)
        held = max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        visible = text[: len(text) - held]
        texts.append(visible[len(shown) :])
        shown = visible
    if texts:
        texts[-1] += text[len(shown) :]  # the end: what was held back goes out
    return Generation(ids, _logprobs(ids), texts, finish, stop_reason)


def _logprobs(ids: list[int]) -> list[float]:
    return [logprob_of(i, t) for i, t in enumerate(ids)]


# -- the HTTP server ------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Exchange(ScriptedExchange):
    """One completions request: its body, what was sent back, and how it ended."""

    completion: Completion
    generation: Generation | None = None
    sent_ids: list[int] = field(default_factory=list)
    sent_logprobs: list[float] = field(default_factory=list)

    @property
    def prompt(self) -> list[int]:
        return list(self.body["prompt"])


class _Handler(ScriptedHandler):
    server_standin: VLLMCompletionsStandIn

    def do_GET(self) -> None:
        s = self.server_standin
        if self.path.rstrip("/") == "/v1/models":
            card = {
                "id": s.model,
                "object": "model",
                "created": int(time.time()),
                "owned_by": "vllm",
                "root": s.root,
                "parent": None,
                "max_model_len": s.max_model_len,
            }
            self._send_json(200, {"object": "list", "data": [card]})
        elif self.path == "/health":
            self._send_json(200, {})
        else:
            self._send_json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        s = self.server_standin
        body = self._read_json()
        if self.path == "/tokenize" and s.tokenize_route:
            tokens = s.tokenizer.encode(
                body["prompt"], add_special_tokens=body.get("add_special_tokens", True)
            )
            reply = {"count": len(tokens), "max_model_len": s.max_model_len, "tokens": tokens}
            self._send_json(200, reply)
            return
        if self.path != "/v1/completions":
            self._send_json(404, {"detail": "Not Found"})
            return
        error = self._invalid(body)
        if error is not None:
            self._send_json(error[0], self._error_body(*error))
            return
        exchange = Exchange(body=body, completion=s._next_script())
        self._serve(exchange, exchange.completion, lambda: self._stream_completion(exchange))

    def _invalid(self, body: dict[str, Any]) -> tuple[int, str] | None:
        s = self.server_standin
        if body.get("model") not in (None, s.model):
            return 404, f"The model `{body.get('model')}` does not exist."
        prompt = body.get("prompt")
        if not (isinstance(prompt, list) and all(isinstance(i, int) for i in prompt)):
            return 400, "the stand-in takes prompts as a list of token ids"
        if any(not 0 <= i < len(s.tokenizer) for i in prompt):
            return 400, "Token id out of vocabulary"
        if len(prompt) >= s.max_model_len:
            return 400, (
                f"This model's maximum context length is {s.max_model_len} tokens. However, "
                f"your request has {len(prompt)} input tokens."
            )
        if not body.get("stream"):
            return 400, "the stand-in only streams"
        return None

    def _stream_completion(self, exchange: Exchange) -> None:
        s, body, completion = self.server_standin, exchange.body, exchange.completion
        max_tokens = body.get("max_tokens") or 16
        max_tokens = min(max_tokens, s.max_model_len - len(body["prompt"]))
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        generation = generate(s.tokenizer, completion, max_tokens, stop)
        exchange.generation = generation
        self._start_events()
        n = max(1, completion.tokens_per_chunk)
        starts = range(0, len(generation.ids), n)
        offset = 0
        for k, start in enumerate(starts):
            if completion.drop_after is not None and k == completion.drop_after:
                self._drop()
                return
            if completion.error_after is not None and k == completion.error_after:
                self._event(self._error_body(500, completion.error_message))
                self._write(b"data: [DONE]\n\n")
                self._end()
                exchange.completed = True
                return
            self._pause(completion.delay)
            end = start + n
            last = end >= len(generation.ids)
            ids = generation.ids[start:end]
            logprobs = generation.logprobs[start:end]
            text = "".join(generation.texts[start:end])
            choice = {
                "index": 0,
                "text": text,
                "logprobs": self._logprobs(ids, logprobs, offset, body),
                "finish_reason": generation.finish_reason if last else None,
                "stop_reason": generation.stop_reason if last else None,
            }
            offset += len(text)
            self._event(self._completion_chunk(choice))
            exchange.sent_ids.extend(ids)
            exchange.sent_logprobs.extend(logprobs)
            exchange.sent_at.append(time.monotonic())
        self._write(b"data: [DONE]\n\n")
        self._end()
        exchange.completed = True

    def _logprobs(
        self, ids: list[int], logprobs: list[float], offset: int, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        if body.get("logprobs") is None:
            return None
        as_ids = body.get("return_tokens_as_token_ids")
        tok = self.server_standin.tokenizer
        tokens = [f"token_id:{i}" if as_ids else tok.decode([i]) for i in ids]
        offsets = []
        for token in tokens:
            offsets.append(offset)
            offset += len(token)
        return {
            "text_offset": offsets,
            "token_logprobs": logprobs,
            "tokens": tokens,
            "top_logprobs": [{t: lp} for t, lp in zip(tokens, logprobs, strict=True)],
        }

    def _completion_chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "cmpl-standin",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.server_standin.model,
            "choices": [choice],
        }

    @staticmethod
    def _error_body(status: int, message: str) -> dict[str, Any]:
        kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
        return {"error": {"message": message, "type": kind, "param": None, "code": status}}


class VLLMCompletionsStandIn(ScriptedServer[Completion, Exchange]):
    """The server; use as a context manager. ``url`` is the OpenAI base, ending in ``/v1``."""

    handler = _Handler

    def __init__(
        self,
        tokenizer: Any,
        *,
        model: str = "standin/qwen",
        root: str | None = None,
        max_model_len: int = 32768,
        tokenize_route: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.root = root or model
        self.max_model_len = max_model_len
        self.tokenize_route = tokenize_route
        super().__init__()

    @property
    def url(self) -> str:
        """``base_url``, under the name ``VLLMServerSampler`` gives it."""
        return self.base_url

    @property
    def completions(self) -> deque[Completion]:
        """The completions not yet generated, next first."""
        return self.script

    def _unscripted(self) -> Completion:
        return Completion(status=500, error_message="the stand-in has no script left")


# -- the in-process engine ------------------------------------------------------------------------


class RequestOutputKind(enum.Enum):
    """vllm.sampling_params.RequestOutputKind."""

    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass
class SamplingParams:
    """The fields of vllm.SamplingParams that the samplers set (any other keyword is an error,
    as in vLLM for an unknown one)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    logprobs: int | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE


class TokensPrompt(TypedDict, total=False):
    """vllm.TokensPrompt (a TypedDict there too)."""

    prompt_token_ids: list[int]
    cache_salt: str


@dataclass
class Logprob:
    """vllm.logprobs.Logprob."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    """vllm.outputs.CompletionOutput (the fields the samplers read)."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    """vllm.outputs.RequestOutput (the fields the samplers read)."""

    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool


@dataclass
class EngineCall:
    prompt: dict[str, Any]
    params: SamplingParams
    request_id: str
    generation: Generation | None = None
    yielded: int = 0  # outputs the caller received


class VLLMEngineStandIn:
    """``generate()`` and ``abort()`` as vLLM's ``AsyncLLM`` has them, generating scripts."""

    def __init__(self, tokenizer: Any, completions: list[Completion] | None = None) -> None:
        self.tokenizer = tokenizer
        self.completions: deque[Completion] = deque(completions or [])
        self.calls: list[EngineCall] = []
        self.closed: list[str] = []  # requests whose generator was closed before the end
        self.aborted: list[str] = []  # abort(request_id) calls
        self.events: list[str] = []  # sleep, wake_up, reset_prefix_cache, shutdown
        self.engine_args: Any = None
        # (prompt ids, sampled ids, temperature) -> their logprobs; made-up values if None
        self.score: Callable[[list[int], list[int], float], list[float]] | None = None

    async def generate(
        self, prompt: dict[str, Any], sampling_params: SamplingParams, request_id: str
    ) -> Any:
        if sampling_params.output_kind is not RequestOutputKind.DELTA:
            raise NotImplementedError("the stand-in engine streams DELTA outputs only")
        call = EngineCall(dict(prompt), sampling_params, request_id)
        self.calls.append(call)
        completion = self.completions.popleft()
        generation = generate(
            self.tokenizer,
            completion,
            sampling_params.max_tokens or 16,
            list(sampling_params.stop or []),
        )
        if self.score is not None:
            generation.logprobs = self.score(
                list(prompt["prompt_token_ids"]), generation.ids, sampling_params.temperature
            )
        call.generation = generation
        n = max(1, completion.tokens_per_chunk)
        try:
            for start in range(0, len(generation.ids), n):
                await asyncio.sleep(completion.delay)
                end = start + n
                last = end >= len(generation.ids)
                ids = generation.ids[start:end]
                logprobs = None
                if sampling_params.logprobs is not None:
                    logprobs = [
                        {t: Logprob(lp, rank=1)}
                        for t, lp in zip(ids, generation.logprobs[start:end], strict=True)
                    ]
                output = CompletionOutput(
                    0,
                    "".join(generation.texts[start:end]),
                    ids,
                    logprobs,
                    generation.finish_reason if last else None,
                    generation.stop_reason if last else None,
                )
                call.yielded += 1
                yield RequestOutput(request_id, prompt["prompt_token_ids"], [output], last)
        except (GeneratorExit, asyncio.CancelledError):
            self.closed.append(request_id)  # AsyncLLM.generate aborts the request here
            raise

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    # What a colocated trainer (and benchmarks/gpu_vllm.py) calls besides; recorded only.

    async def sleep(self, level: int = 1) -> None:
        self.events.append(f"sleep({level})")

    async def wake_up(self, tags: list[str] | None = None) -> None:
        self.events.append("wake_up")

    async def reset_prefix_cache(self) -> bool:
        self.events.append("reset_prefix_cache")
        return True

    def shutdown(self) -> None:
        self.events.append("shutdown")


class _ModelStandIn:
    """What a vLLM model class offers its worker: ``load_weights`` of (Hugging Face name, tensor)
    pairs, each name one the checkpoint has (tied weights under one name), else an error."""

    def __init__(self, hf_model: Any) -> None:
        self.hf = hf_model
        self.loads: list[list[str]] = []  # the names of each load_weights call

    def load_weights(self, weights: Any) -> set[str]:
        import torch

        state = self.hf.state_dict()  # shares storage with the parameters
        loaded: set[str] = set()
        with torch.no_grad():
            for name, tensor in weights:
                if name not in state:
                    raise KeyError(f"the model has no weight named {name!r}")
                state[name].copy_(tensor)
                loaded.add(name)
        self.loads.append(sorted(loaded))
        return loaded


class _WorkerStandIn:
    """vLLM's GPU worker as an extension sees it: ``device`` and ``model_runner.model``."""

    def __init__(self, hf_model: Any) -> None:
        import torch

        self.device = torch.device("cpu")
        self.model_runner = types.SimpleNamespace(model=_ModelStandIn(hf_model))


class ColocatedEngineStandIn(VLLMEngineStandIn):
    """``VLLMEngineStandIn`` plus what a colocated trainer uses of ``AsyncLLM`` besides generating.

    The engine holds its own copy of the model (``hf_model``, other weights than the trainer's),
    changed only by ``collective_rpc`` calls on a worker built the way vLLM builds it: the class
    named by ``worker_extension_cls`` in the engine arguments mixed into the worker, the call's
    arguments pickled on the way as they are to vLLM's worker processes. ``sleep(level=2)``
    discards the weights (NaN, as freed memory holds anything) and generating while asleep fails.
    Logprobs are scored by the engine's copy (after the temperature with
    ``logprobs_mode="processed_logprobs"``), so a missed or wrong weight push shows up as a
    difference from the trainer's logprobs. CPU tensors travel as shared memory, not CUDA IPC.
    ``take_weights=False`` makes an engine that ignores every push after the first.
    """

    def __init__(
        self,
        tokenizer: Any,
        hf_model: Any,
        completions: list[Completion] | None = None,
        *,
        take_weights: bool = True,
    ) -> None:
        super().__init__(tokenizer, completions)
        self.hf_model = hf_model.eval()
        self.take_weights = take_weights
        self.asleep = False
        self.pushes = 0  # collective_rpc calls
        self.score = self._score
        self._worker: Any = None

    @property
    def worker(self) -> Any:
        if self._worker is None:
            import importlib

            path = self.engine_args.kwargs["worker_extension_cls"]
            module, _, name = path.rpartition(".")
            extension = getattr(importlib.import_module(module), name)
            worker_cls = type("WorkerWithExtension", (_WorkerStandIn, extension), {})
            self._worker = worker_cls(self.hf_model)
        return self._worker

    async def collective_rpc(
        self,
        method: str,
        timeout: float | None = None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> list[Any]:
        import pickle
        from multiprocessing.reduction import ForkingPickler

        self.events.append(f"collective_rpc({method})")
        args, kwargs = pickle.loads(ForkingPickler.dumps((args, kwargs or {})))
        self.pushes += 1
        if not self.take_weights and self.pushes > 1:
            return [0]
        return [getattr(self.worker, method)(*args, **kwargs)]

    async def sleep(self, level: int = 1, mode: str = "abort") -> None:
        import torch

        self.events.append(f"sleep({level})")
        self.asleep = True
        if level >= 2 and self.take_weights:
            with torch.no_grad():
                for parameter in self.hf_model.parameters():
                    parameter.fill_(float("nan"))

    async def wake_up(self, tags: list[str] | None = None) -> None:
        self.events.append(f"wake_up({','.join(tags or ['all'])})")
        if tags is None or "kv_cache" in tags:
            self.asleep = False

    async def generate(
        self, prompt: dict[str, Any], sampling_params: SamplingParams, request_id: str
    ) -> Any:
        if self.asleep:
            raise RuntimeError("the engine is asleep: wake it up before generating")
        async for output in super().generate(prompt, sampling_params, request_id):
            yield output

    def _score(self, prompt_ids: list[int], ids: list[int], temperature: float) -> list[float]:
        """Logprobs as vLLM returns them: raw, or after the temperature ("processed_logprobs";
        top-p is not modelled)."""
        import torch

        if self.engine_args.kwargs.get("logprobs_mode") != "processed_logprobs" or not temperature:
            temperature = 1.0
        with torch.no_grad():
            logits = self.hf_model(torch.tensor([prompt_ids + ids])).logits[0].float()
            logprobs = (logits[len(prompt_ids) - 1 : -1] / temperature).log_softmax(-1)
            return logprobs.gather(-1, torch.tensor(ids)[:, None])[:, 0].tolist()


class AsyncEngineArgs:
    """vllm.AsyncEngineArgs: records its keywords."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


def vllm_modules_standin(engine: VLLMEngineStandIn | None = None) -> dict[str, types.ModuleType]:
    """``sys.modules`` entries that make ``import vllm`` (and the submodules the samplers import
    from) give the stand-ins; ``AsyncLLM.from_engine_args`` returns ``engine``."""

    class AsyncLLM:
        @classmethod
        def from_engine_args(cls, engine_args: AsyncEngineArgs) -> VLLMEngineStandIn:
            if engine is None:
                raise RuntimeError("no stand-in engine was given")
            engine.engine_args = engine_args
            return engine

    modules = {
        name: types.ModuleType(name)
        for name in (
            "vllm",
            "vllm.sampling_params",
            "vllm.v1",
            "vllm.v1.engine",
            "vllm.v1.engine.async_llm",
        )
    }
    modules["vllm"].SamplingParams = SamplingParams  # type: ignore[attr-defined]
    modules["vllm"].TokensPrompt = TokensPrompt  # type: ignore[attr-defined]
    modules["vllm"].AsyncEngineArgs = AsyncEngineArgs  # type: ignore[attr-defined]
    modules["vllm.sampling_params"].SamplingParams = SamplingParams  # type: ignore[attr-defined]
    modules["vllm.sampling_params"].RequestOutputKind = RequestOutputKind  # type: ignore[attr-defined]
    modules["vllm.v1.engine.async_llm"].AsyncLLM = AsyncLLM  # type: ignore[attr-defined]
    for name, module in modules.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
    return modules
