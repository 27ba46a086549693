"""vLLM samplers: a running ``vllm serve`` (``VLLMServerSampler``) or an in-process engine for
training (``VLLMEngineSampler``).

Both apply the chat template locally and send token ids: the model sees exactly
``prompt_ids(messages)`` followed by each trace segment's own ids (recorded, else that segment's
text encoded alone), never a re-tokenization of the joined text. Both get the sampled token ids and
their logprobs back and decode the text locally from those ids, so every ``Delta``'s text is the
decoding of its ids and the trace keeps the ids the model really sampled. A resume after a tool step
sends the previous context plus the new ids, which vLLM's prefix cache serves without recomputing.

Neither class imports vLLM when this module is imported: the server sampler needs only ``httpx``
and ``transformers`` (``pip install "kernel-bridge[vllm]"``), the engine sampler imports vLLM when
it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kernel_bridge.samplers import Delta, ModelSpecError, SampleRequest, check_sampling
from kernel_bridge.samplers.litellm import SamplerError
from kernel_bridge.samplers.tokens import Detokenizer, TokenContext, TokenOutput

MODEL_PREFIX = "vllm:"
MODEL_SYNTAX = "vllm:http://HOST:PORT/v1[#MODEL]"
MODEL_EXAMPLE = "vllm:http://127.0.0.1:8000/v1#Qwen/Qwen2.5-0.5B-Instruct"
INSTALL_HINT = 'pip install "kernel-bridge[vllm]"'
# vLLM returns this many top logprobs besides the sampled token's; we read only the sampled one.
LOGPROBS = 1
_TOKEN_ID_PREFIX = "token_id:"  # how vLLM writes a token with return_tokens_as_token_ids
# Sent to /tokenize on connect: a tokenizer that differs from the server's encodes it differently.
_TOKENIZER_PROBE = "def f(x):\n    return x ** 2  # 平方 ✓ Ünïcödé \t 12345.6789"


class VLLMError(SamplerError):
    """A vLLM server or engine failed in a way the user must act on; the message says how."""


def parse_model_string(model: str) -> tuple[str, str | None]:
    """``vllm:URL[#MODEL]`` → (base URL, model or None); a ``ModelSpecError`` for anything else.

    The URL is the server's OpenAI base (``http://127.0.0.1:8000/v1``; a bare
    ``http://host:port`` gets ``/v1``). Without ``#MODEL`` the server's only model is used.
    """
    if not model.startswith(MODEL_PREFIX):
        raise ModelSpecError(f"a vLLM server model string starts with {MODEL_PREFIX!r}: {model!r}")
    url, hash_, name = model.removeprefix(MODEL_PREFIX).strip().partition("#")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelSpecError(
            f"a vLLM server is named {MODEL_SYNTAX}, e.g. {MODEL_EXAMPLE}; got {model!r}. "
            "For vLLM's chat API through LiteLLM use 'hosted_vllm/MODEL'; for an in-process "
            "engine (training) use kernel_bridge.samplers.vllm.VLLMEngineSampler"
        )
    if hash_ and not name.strip():
        raise ModelSpecError(f"{model!r}: nothing after '#'; name the model or leave out the '#'")
    return base_url(url), (name.strip() or None)


def base_url(url: str) -> str:
    """The server's OpenAI base URL: no trailing slash, ``/v1`` added to a bare host."""
    url = url.rstrip("/")
    return url if urlsplit(url).path else url + "/v1"


class _TokenIdsSampler(TokenContext):
    """What both vLLM samplers share: the local tokenizer and the exact context ids."""

    tokenizer: Any
    max_tokens: int

    def _budget(self, request: SampleRequest) -> int:
        if request.max_tokens is None:
            return self.max_tokens
        return max(1, min(self.max_tokens, request.max_tokens))

    def _decoder(self, request: SampleRequest) -> _Decoder:
        return _Decoder(self.tokenizer, request.stop)


class _Decoder:
    """Sampled tokens in, ``Delta``s out, one per token as soon as its text is known.

    The text is decoded locally from the ids (vLLM's own text lags behind and leaves out stop
    strings, so it cannot be aligned with the ids). Text that may grow into a stop string is held
    back; a stop string ends the stream and is cut, as in ``TransformersSampler``. The token that
    ended the turn (EOS or a stop token id, which vLLM returns but does not print) is not kept.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str]) -> None:
        self.out = TokenOutput(Detokenizer(tokenizer), [s for s in stops if s])
        self.special = set(getattr(tokenizer, "all_special_ids", None) or [])
        if getattr(tokenizer, "eos_token_id", None) is not None:
            self.special.add(tokenizer.eos_token_id)
        self.tokens = 0  # sampled tokens received
        self.done = False

    def feed(
        self,
        ids: list[int],
        logprobs: list[float],
        finish: str | None = None,
        stop_reason: Any = None,
    ) -> Iterable[Delta]:
        self.tokens += len(ids)
        if (
            finish == "stop"
            and ids
            and not isinstance(stop_reason, str)
            and (ids[-1] == stop_reason or ids[-1] in self.special)
        ):
            ids, logprobs = ids[:-1], logprobs[:-1]
        for token_id, logprob in zip(ids, logprobs, strict=True):
            delta = self.out.add(token_id, logprob)
            if delta.finish_reason == "stop":  # a stop string, found in the local text
                self.done = True
                yield delta
                return
            if delta.text or delta.token_ids:
                yield delta
        if finish in ("stop", "length"):
            self.done = True
            yield self.out.flush(finish)
        elif finish is not None:
            raise VLLMError(
                f"vLLM ended the request with finish_reason {finish!r} after {self.tokens} "
                "tokens (aborted by the server or the engine, e.g. on shutdown or sleep)"
            )


# -- a running `vllm serve` -----------------------------------------------------------------------


class VLLMServerSampler(_TokenIdsSampler):
    """Streams from a running ``vllm serve`` through ``POST /v1/completions`` with token ids.

    The prompt is ``context_ids(request)``, sent as a list of token ids; the request asks for
    ``logprobs`` with ``return_tokens_as_token_ids`` so each sampled token arrives as
    ``"token_id:N"`` with its logprob (vLLM's raw, pre-temperature logprob by default). The
    tokenizer must be the model's: ``connect()`` loads it from the model's name or path and
    checks it against the server's ``/tokenize``.

    ``extra_body`` is merged into every request (``top_k``, ``repetition_penalty``,
    ``ignore_eos``, ``cache_salt``, … as vLLM documents them). The key comes from ``api_key`` or
    ``$VLLM_API_KEY`` (for a server started with ``--api-key``). ``timeout`` bounds the
    connection and each wait for the next chunk. ``max_model_len`` (which ``connect()`` reads from
    the server) caps ``max_tokens`` to what is left of the model's window. There are no retries:
    a failed call raises ``VLLMError``. Closing the stream closes the HTTP connection, and vLLM
    aborts the request.
    """

    def __init__(
        self,
        url: str,
        model: str,
        tokenizer: Any,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 4096,
        seed: int | None = None,
        extra_body: dict[str, Any] | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_model_len: int | None = None,
    ) -> None:
        check_sampling(temperature, top_p, max_tokens)
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.url = base_url(url)
        self.model = model
        self.tokenizer = tokenizer
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.seed = seed
        self.extra_body = dict(extra_body or {})
        self._api_key = api_key if api_key is not None else os.environ.get("VLLM_API_KEY")
        self.timeout = timeout
        self.max_model_len = max_model_len
        self.name = f"{MODEL_PREFIX}{_public_url(self.url)}#{model}"

    def __repr__(self) -> str:
        return f"VLLMServerSampler({_public_url(self.url)!r}, {self.model!r})"

    @classmethod
    def connect(
        cls,
        url: str,
        model: str | None = None,
        *,
        tokenizer: Any = None,
        check_tokenizer: bool = True,
        api_key: str | None = None,
        timeout: float = 120.0,
        **sampling: Any,
    ) -> VLLMServerSampler:
        """Ask the server what it serves (``GET /v1/models``), load the model's tokenizer, and
        check it against the server's ``/tokenize``.

        ``model`` defaults to the server's only model. ``tokenizer`` is a tokenizer or a name or
        path for ``AutoTokenizer``; by default the model's path as the server reports it (its
        ``root``), which must be readable here: pass a local copy when the server runs elsewhere.
        ``sampling`` goes to the constructor (``temperature``, ``max_tokens``, …).
        """
        httpx = _import_httpx()
        url = base_url(url)
        key = api_key if api_key is not None else os.environ.get("VLLM_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with httpx.Client(timeout=min(timeout, 30.0), headers=headers) as client:
            cards = _served_models(client, url)
            card = _pick_model(cards, model, url)
            model = str(card["id"])
            if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
                tokenizer = _load_tokenizer(tokenizer or card.get("root") or model, model)
            if check_tokenizer:
                _check_tokenizer(client, url, model, tokenizer)
        max_len = card.get("max_model_len")
        return cls(
            url,
            model,
            tokenizer,
            api_key=api_key,
            timeout=timeout,
            max_model_len=max_len if isinstance(max_len, int) else None,
            **sampling,
        )

    def params(self) -> dict[str, Any]:
        """The server, model and sampling settings for the trace (never the key)."""
        return {
            "url": _public_url(self.url),
            "model": self.model,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            **({"extra_body": self.extra_body} if self.extra_body else {}),
        }

    def request_body(self, request: SampleRequest) -> dict[str, Any]:
        """The JSON body of ``POST /v1/completions`` for ``request``."""
        prompt = self.context_ids(request)
        budget = self._budget(request)
        if self.max_model_len is not None:  # older vLLM rejects prompt + max_tokens > window
            budget = max(1, min(budget, self.max_model_len - len(prompt)))
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "stream": True,
            "max_tokens": budget,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "logprobs": LOGPROBS,
            "return_tokens_as_token_ids": True,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if self.seed is not None:
            body["seed"] = self.seed
        body.update(self.extra_body)
        return body

    async def stream(self, request: SampleRequest) -> AsyncIterator[Delta]:
        httpx = _import_httpx()
        body = self.request_body(request)
        decoder = self._decoder(request)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        where = f"{_public_url(self.url)} ({self.model})"
        # A client per call: a pooled connection is tied to the event loop that opened it, and
        # the Reasoner may run on a different loop each time (CLI, notebook thread, trainer).
        async with httpx.AsyncClient(timeout=timeout, headers=headers) as client:
            try:
                async with client.stream("POST", f"{self.url}/completions", json=body) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise _http_error(response, where, self.model)
                    async for line in response.aiter_lines():
                        chunk = _sse_data(line)
                        if chunk is None:
                            continue
                        if chunk == "[DONE]":
                            break
                        for choice in _choices(chunk, where, decoder.tokens):
                            ids, logprobs = _sampled_tokens(choice, where)
                            finish = choice.get("finish_reason")
                            for delta in decoder.feed(
                                ids, logprobs, finish, choice.get("stop_reason")
                            ):
                                yield delta
                            if decoder.done:
                                return  # closing the response aborts anything still running
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                raise VLLMError(
                    f"cannot reach the vLLM server at {where}: {e or type(e).__name__}; is "
                    "`vllm serve` running there?"
                ) from e
            except httpx.TimeoutException as e:
                raise VLLMError(
                    f"{where}: no data for {self.timeout:g} s after {decoder.tokens} tokens "
                    f"({type(e).__name__}); raise timeout= for long prompts on a busy server"
                ) from e
            except httpx.HTTPError as e:  # the connection broke mid-stream
                raise VLLMError(
                    f"{where}: the stream broke after {decoder.tokens} tokens "
                    f"({type(e).__name__}: {e})"
                ) from e
        if not decoder.done:
            raise VLLMError(
                f"{where}: the stream ended after {decoder.tokens} tokens without a "
                "finish_reason; the server closed it early"
            )


# -- an in-process engine (training) --------------------------------------------------------------


class VLLMEngineSampler(_TokenIdsSampler):
    """Streams from an in-process vLLM engine (``vllm.v1.engine.async_llm.AsyncLLM``).

    Meant for training with vLLM colocated on the trainer's GPU: the caller owns ``engine`` and
    may call ``await sampler.engine.sleep(level)``, ``wake_up()``, ``reset_prefix_cache()`` or
    push weights between rollouts; this class only generates. Each call sends
    ``TokensPrompt(prompt_token_ids=context_ids(request))`` with ``output_kind=DELTA`` and
    ``logprobs``, and yields the sampled ids and their logprobs. Closing the stream closes the
    engine's generator, which aborts the request, and aborts it by id as well.

    ``sampling_kwargs`` go to ``vllm.SamplingParams`` as they are (``top_k``, ``ignore_eos``, …).
    """

    def __init__(
        self,
        engine: Any,
        tokenizer: Any,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 4096,
        seed: int | None = None,
        sampling_kwargs: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        check_sampling(temperature, top_p, max_tokens)
        self.engine = engine
        self.tokenizer = tokenizer
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.seed = seed
        self.sampling_kwargs = dict(sampling_kwargs or {})
        self.name = name or f"vllm-engine:{getattr(tokenizer, 'name_or_path', '') or 'model'}"

    @classmethod
    def from_engine_args(
        cls,
        model: str,
        *,
        tokenizer: Any = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 4096,
        seed: int | None = None,
        sampling_kwargs: dict[str, Any] | None = None,
        **engine_args: Any,
    ) -> VLLMEngineSampler:
        """Start an ``AsyncLLM`` for ``model`` (a name or local path) in this process.

        ``engine_args`` go to ``vllm.AsyncEngineArgs`` (``gpu_memory_utilization``,
        ``max_model_len``, ``enable_sleep_mode``, ``dtype``, …); prefix caching is on unless
        ``enable_prefix_caching=False``. The tokenizer defaults to ``AutoTokenizer`` on ``model``.
        """
        try:
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as e:
            raise ModelSpecError(
                f"the in-process vLLM engine needs vLLM, which is not installed: pip install vllm "
                f"(Linux with a CUDA GPU) ({e})"
            ) from e
        engine_args.setdefault("enable_prefix_caching", True)
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(model=model, **engine_args))
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = _load_tokenizer(tokenizer or model, model)
        return cls(
            engine,
            tokenizer,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            seed=seed,
            sampling_kwargs=sampling_kwargs,
            name=f"vllm-engine:{model}",
        )

    def params(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            **({"sampling_kwargs": self.sampling_kwargs} if self.sampling_kwargs else {}),
        }

    def sampling_params(self, request: SampleRequest) -> Any:
        """The ``vllm.SamplingParams`` of one call."""
        try:
            from vllm import SamplingParams
            from vllm.sampling_params import RequestOutputKind
        except ImportError as e:
            raise ModelSpecError(f"VLLMEngineSampler needs vLLM: pip install vllm ({e})") from e
        kwargs: dict[str, Any] = {
            "n": 1,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self._budget(request),
            "logprobs": LOGPROBS,
            "output_kind": RequestOutputKind.DELTA,
        }
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if self.seed is not None:
            kwargs["seed"] = self.seed
        kwargs.update(self.sampling_kwargs)
        return SamplingParams(**kwargs)

    async def stream(self, request: SampleRequest) -> AsyncIterator[Delta]:
        from vllm import TokensPrompt

        params = self.sampling_params(request)
        prompt = TokensPrompt(prompt_token_ids=self.context_ids(request))
        request_id = f"kernel-bridge-{uuid.uuid4().hex}"
        decoder = self._decoder(request)
        outputs = self.engine.generate(prompt, params, request_id)
        finished = False
        try:
            async for output in outputs:
                finished = bool(getattr(output, "finished", False))
                completion = output.outputs[0]
                ids = [int(i) for i in completion.token_ids]
                logprobs = _engine_logprobs(completion.logprobs, ids, decoder.tokens)
                deltas = list(
                    decoder.feed(ids, logprobs, completion.finish_reason, completion.stop_reason)
                )
                if finished:  # let the engine's generator end by itself, before the caller
                    async for _ in outputs:  # closes this stream at the last delta (no abort)
                        pass
                for delta in deltas:
                    yield delta
                if decoder.done:
                    return
            if not decoder.done:
                raise VLLMError(
                    f"the vLLM engine ended request {request_id} after {decoder.tokens} tokens "
                    "without a finish_reason"
                )
        finally:
            close = getattr(outputs, "aclose", None)  # AsyncLLM.generate aborts when closed
            if close is not None:
                await close()
            if not finished:
                with contextlib.suppress(Exception):
                    await self.engine.abort(request_id)


# -- helpers --------------------------------------------------------------------------------------


def _import_httpx() -> Any:
    try:
        import httpx
    except ImportError as e:
        raise ModelSpecError(
            f"a vLLM server needs httpx, which is not installed: {INSTALL_HINT}"
        ) from e
    return httpx


def _load_tokenizer(source: str | os.PathLike[str], model: str) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise ModelSpecError(
            f"the vLLM samplers need transformers for the tokenizer: {INSTALL_HINT}"
        ) from e
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as e:
        raise VLLMError(
            f"cannot load the tokenizer of {model!r} from {str(source)!r} "
            f"({type(e).__name__}: {_short(e)}); pass tokenizer=PATH (a local copy of the "
            "model's tokenizer files) to VLLMServerSampler.connect()"
        ) from e


def _served_models(client: Any, url: str) -> list[dict[str, Any]]:
    import httpx

    try:
        response = client.get(f"{url}/models")
    except httpx.HTTPError as e:
        raise VLLMError(
            f"cannot reach a vLLM server at {_public_url(url)} ({type(e).__name__}: {e}); start "
            "one with `vllm serve MODEL --port PORT`, or check the URL "
            f"({MODEL_SYNTAX})"
        ) from e
    if response.status_code != 200:
        raise _http_error(response, _public_url(url), None)
    try:
        cards = response.json()["data"]
        assert isinstance(cards, list) and all("id" in c for c in cards)
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        raise VLLMError(
            f"{_public_url(url)}/models did not answer as an OpenAI server does ({_short(e)}); "
            "is this a vLLM server's /v1 URL?"
        ) from e
    return cards


def _pick_model(cards: list[dict[str, Any]], model: str | None, url: str) -> dict[str, Any]:
    names = [str(c["id"]) for c in cards]
    if model is None:
        if len(cards) == 1:
            return cards[0]
        raise VLLMError(
            f"the vLLM server at {_public_url(url)} serves {len(cards)} models "
            f"({', '.join(names) or 'none'}); name one: vllm:{_public_url(url)}#MODEL"
        )
    for card in cards:
        if card["id"] == model:
            return card
    raise VLLMError(
        f"the vLLM server at {_public_url(url)} serves {', '.join(map(repr, names)) or 'nothing'}, "
        f"not {model!r}; name one of those, or start the server with that model"
    )


def _check_tokenizer(client: Any, url: str, model: str, tokenizer: Any) -> None:
    """Compare the local tokenizer with the server's on a probe text (skipped if the server has
    no ``/tokenize``): a different tokenizer would make the recorded ids another model's."""
    import httpx

    root = url.removesuffix("/v1")
    payload = {"model": model, "prompt": _TOKENIZER_PROBE, "add_special_tokens": False}
    try:
        response = client.post(f"{root}/tokenize", json=payload)
    except httpx.HTTPError:
        return
    if response.status_code != 200:
        return
    try:
        remote = [int(i) for i in response.json()["tokens"]]
    except (ValueError, KeyError, TypeError):
        return
    local = list(tokenizer.encode(_TOKENIZER_PROBE, add_special_tokens=False))
    if local != remote:
        raise VLLMError(
            f"the tokenizer loaded here ({getattr(tokenizer, 'name_or_path', type(tokenizer))}) "
            f"is not the one the server at {_public_url(url)} uses for {model!r}: they encode a "
            "test text differently, so the recorded token ids would be wrong. Pass the model's "
            "own tokenizer as tokenizer="
        )


def _sse_data(line: str) -> Any:
    """The JSON (or ``"[DONE]"``) of a server-sent ``data:`` line; None for other lines."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return data
    try:
        return json.loads(data)
    except ValueError as e:
        raise VLLMError(f"the server sent a line that is not JSON: {_short(data)!r}") from e


def _choices(chunk: Any, where: str, tokens: int) -> list[dict[str, Any]]:
    if not isinstance(chunk, dict):
        raise VLLMError(f"{where}: unexpected stream data {_short(chunk)!r}")
    message = _error_message(chunk)
    if message is not None:
        raise VLLMError(f"{where}: the server reported an error after {tokens} tokens: {message}")
    return [c for c in chunk.get("choices") or [] if c.get("index", 0) == 0]


def _sampled_tokens(choice: dict[str, Any], where: str) -> tuple[list[int], list[float]]:
    """The sampled ids and their logprobs in one streamed choice (``"token_id:N"`` tokens)."""
    logprobs = choice.get("logprobs")
    if logprobs is None:
        if choice.get("text"):
            raise VLLMError(
                f"{where}: the server streamed text without logprobs; VLLMServerSampler needs "
                "vLLM's /v1/completions (logprobs with return_tokens_as_token_ids)"
            )
        return [], []
    tokens = logprobs.get("tokens") or []
    values = logprobs.get("token_logprobs") or []
    ids = []
    for token in tokens:
        if not (isinstance(token, str) and token.startswith(_TOKEN_ID_PREFIX)):
            raise VLLMError(
                f"{where}: the server sent the token {token!r}, not 'token_id:N'; "
                "VLLMServerSampler needs a vLLM server (return_tokens_as_token_ids)"
            )
        ids.append(int(token.removeprefix(_TOKEN_ID_PREFIX)))
    if len(values) != len(ids):
        raise VLLMError(f"{where}: {len(ids)} tokens but {len(values)} logprobs in one chunk")
    # vLLM writes a logprob below -9999 as -9999 (JSON has no -inf); a missing one likewise.
    return ids, [-9999.0 if v is None else float(v) for v in values]


def _engine_logprobs(logprobs: Any, ids: list[int], before: int) -> list[float]:
    """The sampled tokens' logprobs from a vLLM ``CompletionOutput`` (a list of
    ``{token_id: Logprob}`` per position, or vLLM's list-like ``FlatLogprobs``)."""
    if logprobs is None or len(logprobs) != len(ids):
        got = "none" if logprobs is None else len(logprobs)
        raise VLLMError(
            f"the vLLM engine returned {len(ids)} tokens with {got} logprobs (after {before} "
            "tokens); SamplingParams must ask for logprobs"
        )
    return [float(logprobs[i][token_id].logprob) for i, token_id in enumerate(ids)]


def _error_message(payload: Any) -> str | None:
    """The message of a vLLM error body: ``{"error": {...}}`` (current) or
    ``{"object": "error", "message": ...}`` (older releases); FastAPI's ``{"detail": ...}``."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if isinstance(error, str):
        return error
    if payload.get("object") == "error":
        return str(payload.get("message") or payload)
    if "detail" in payload:
        return str(payload["detail"])
    return None


def _http_error(response: Any, where: str, model: str | None) -> VLLMError:
    status = response.status_code
    try:
        message = _error_message(response.json()) or response.text
    except ValueError:
        message = response.text
    message = _short(message) or f"HTTP {status}"
    if status in (401, 403):
        return VLLMError(
            f"{where}: the server wants an API key ({message}); set VLLM_API_KEY or pass api_key="
        )
    if status == 404 and model is not None:
        return VLLMError(
            f"{where}: the server has no model {model!r} ({message}); "
            "VLLMServerSampler.connect() lists what it serves"
        )
    if status in (400, 422):
        return VLLMError(f"{where}: the server rejected the request ({message})")
    return VLLMError(f"{where}: HTTP {status} ({message})")


def _public_url(url: str) -> str:
    """``url`` without credentials, query or fragment (they may carry keys)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _short(value: Any, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "VLLMEngineSampler",
    "VLLMError",
    "VLLMServerSampler",
    "base_url",
    "parse_model_string",
]
