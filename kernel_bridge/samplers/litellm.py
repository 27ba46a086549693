"""LiteLLMSampler: API models (OpenAI, Anthropic, Gemini, vLLM and Ollama servers, …) via LiteLLM.

Continues the assistant turn by assistant prefill where the provider supports it, else by the
turn-based fallback (``CONTINUE_PROMPT``). Thinking that arrives in the API's reasoning channel
(``reasoning_content``, Anthropic's thinking blocks) is written into the turn as
``<think>…</think>`` text, so it parses, runs and is traced like thinking a model writes itself.
Streams asynchronously; closing the stream closes the upstream HTTP response. Transient failures
are retried only before any text was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import random
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kernel_bridge.errors import UserError
from kernel_bridge.samplers import Delta, ModelSpecError, SampleRequest, check_sampling

# The user message of the turn-based fallback, sent after the assistant turn so far.
CONTINUE_PROMPT = (
    "Continue exactly where you left off. The output of your last code block is above."
)

# Providers (LiteLLM's names) that continue a final assistant message rather than answer it.
PREFILL_PROVIDERS = frozenset(
    {"anthropic", "deepseek", "mistral", "hosted_vllm", "ollama", "ollama_chat"}
)
_PREFIX_FLAG = frozenset({"deepseek", "mistral"})  # they want {"prefix": True} on that message
_NO_TRAILING_WHITESPACE = frozenset({"anthropic", "bedrock", "vertex_ai"})  # a 400 otherwise
_VLLM_CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}
# Providers whose prefill takes the thinking so far in the message's own field (LiteLLM passes
# ``reasoning_content`` through): thinking goes back the way it came.
_REASONING_FIELD = frozenset({"deepseek"})
# Providers that cannot prefill a turn while thinking is on (Anthropic refuses it).
_NO_PREFILL_WHILE_THINKING = frozenset({"anthropic"})

# How thinking from the reasoning channel is written into the turn: the tags the profiles know.
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

# How SDKs say that no key was found (LiteLLM maps some of these to a 500).
_MISSING_KEY = re.compile(
    r"missing credentials|api_key client option must be set|"
    r"api[_ ]?key\b[^.]{0,40}\b(?:not set|missing|required)",
    re.IGNORECASE,
)

MAX_STOP_STRINGS = 4  # OpenAI's limit; the lowest common one
MAX_BACKOFF_S = 20.0


class SamplerError(UserError, RuntimeError):
    """An API call failed in a way the user must act on (key, model name, outage, broken stream)."""


def _import_litellm() -> Any:
    """Import LiteLLM quietly and offline: no cost-map download, no help banners on stdout."""
    # LiteLLM fetches its model cost map from GitHub at import unless told not to; we never use
    # costs, and the fetch stalls offline. An explicit setting by the user wins.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError as e:
        raise ModelSpecError(
            'API models need LiteLLM, which is not installed: pip install "kernel-bridge[api]" '
            f"({e})"
        ) from e
    litellm.suppress_debug_info = True
    return litellm


class LiteLLMSampler:
    """Streams the continuation of the assistant turn from any model LiteLLM can call.

    ``model`` is LiteLLM's ``provider/model`` string (``openai/gpt-4o``, ``anthropic/claude-…``,
    ``hosted_vllm/Qwen/Qwen3-8B``, ``ollama_chat/qwen2.5-coder``); keys and bases come from
    ``api_key``/``api_base`` or the provider's environment variables (``OPENAI_API_KEY``, …).

    How a turn is continued (``prefill=None`` decides by provider, ``True``/``False`` forces):

    - **prefill** (Anthropic, DeepSeek, Mistral, vLLM, Ollama): the assistant text so far is sent
      as a final assistant message that the model continues (with ``prefix: true`` for DeepSeek
      and Mistral, ``continue_final_message`` for vLLM).
    - **turn-based fallback** (OpenAI, Gemini and the rest): the text so far is sent as an
      assistant message followed by the user message ``CONTINUE_PROMPT``, "Continue exactly where
      you left off. The output of your last code block is above." The reply is a new turn; it is
      yielded as the continuation, so how seamless it reads depends on the model.

    Thinking in the reasoning channel (DeepSeek-R1, vLLM ``--reasoning-parser``, SGLang, Ollama,
    Anthropic with ``reasoning_effort``) is yielded as ``<think>\n…\n</think>\n\n`` text in order
    with the answer, and a continuation that stopped inside it goes on inside it. On a prefill it
    goes back as the model's own ``<think>`` text (DeepSeek: in the message's ``reasoning_content``,
    since it came from there); Anthropic cannot prefill a thinking turn, so ``reasoning_effort``
    switches it to the turn-based fallback. ``params()`` records which (``continuation``).

    At most ``MAX_STOP_STRINGS`` stop strings are sent (the first ones). Rate limits, timeouts,
    5xx and connection errors are retried ``retries`` times with jittered exponential backoff
    (``backoff`` seconds, doubling, at most ``MAX_BACKOFF_S``), but only before the call yielded
    text; later the call fails with ``SamplerError`` rather than repeat text. ``timeout`` bounds
    the connection and each wait for the next chunk.
    """

    def __init__(
        self,
        model: str,
        *,
        temperature: float | None = 0.0,
        top_p: float | None = None,
        max_tokens: int = 4096,
        api_base: str | None = None,
        api_key: str | None = None,
        prefill: bool | None = None,
        retries: int = 3,
        backoff: float = 1.0,
        timeout: float = 120.0,
        reasoning_effort: str | None = None,
    ) -> None:
        check_sampling(temperature, top_p, max_tokens)
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError(
                "need retries ≥ 0, backoff ≥ 0 and timeout > 0; "
                f"got {retries}, {backoff}, {timeout}"
            )
        self._litellm = _import_litellm()
        self.model = self.name = model
        self.provider = _provider(self._litellm, model, api_base)
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.api_base = api_base
        self._api_key = api_key
        self.reasoning_effort = reasoning_effort
        thinking = reasoning_effort not in (None, "none")
        if prefill is None:
            prefill = self.provider in PREFILL_PROVIDERS and not (
                thinking and self.provider in _NO_PREFILL_WHILE_THINKING
            )
        self.prefill = prefill
        # Anthropic takes no temperature but 1 while thinking (a 400 otherwise): it is not sent.
        self._send_temperature = not (thinking and self.provider == "anthropic")
        # Set once a stream delivered reasoning deltas: this server splits thinking from the
        # answer, so its answer text closes the think section and a prefill sends thinking back
        # where it came from.
        self.reasoning_channel = False
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"LiteLLMSampler({self.model!r}, prefill={self.prefill})"

    def params(self) -> dict[str, Any]:
        """The model and sampling settings for the trace (never the key)."""
        return {
            "model": self.model,
            "provider": self.provider,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "prefill": self.prefill,
            "continuation": "prefill" if self.prefill else "new_turn",
            "continue_prompt": None if self.prefill else CONTINUE_PROMPT,
            "reasoning_effort": self.reasoning_effort,
            "api_base": _public_url(self.api_base),
            "retries": self.retries,
            "timeout": self.timeout,
        }

    # -- the request -----------------------------------------------------------------------------

    def messages_for(self, request: SampleRequest) -> tuple[list[dict[str, Any]], str]:
        """The messages that continue ``request``'s assistant turn, and the trailing whitespace
        left out of a prefill (providers that reject it get it back from the model)."""
        messages = [dict(m) for m in request.messages]
        so_far = request.assistant_text
        if not so_far:
            return messages, ""
        if not self.prefill:
            return [
                *messages,
                {"role": "assistant", "content": so_far},
                {"role": "user", "content": CONTINUE_PROMPT},
            ], ""
        text = so_far.rstrip() if self.provider in _NO_TRAILING_WHITESPACE else so_far
        if not text:
            return messages, so_far
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if self.reasoning_channel and self.provider in _REASONING_FIELD:
            split = split_thinking(text)
            if split is not None:
                message["content"], message["reasoning_content"] = split[1], split[0]
        if self.provider in _PREFIX_FLAG:
            message["prefix"] = True
        return [*messages, message], so_far[len(text) :]

    def _completion_kwargs(self, request: SampleRequest) -> tuple[dict[str, Any], str]:
        messages, held_back = self.messages_for(request)
        max_tokens = self.max_tokens
        if request.max_tokens is not None:
            max_tokens = max(1, min(max_tokens, request.max_tokens))
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "max_tokens": max_tokens,
            "timeout": self.timeout,
            "num_retries": 0,  # retries are ours, and only where they cannot repeat text
            "max_retries": 0,
        }
        if self.temperature is not None and self._send_temperature:
            kwargs["temperature"] = self.temperature
        if self.reasoning_effort is not None:
            kwargs["reasoning_effort"] = self.reasoning_effort
        if self.top_p is not None:
            kwargs["top_p"] = self.top_p
        if request.stop:
            kwargs["stop"] = list(request.stop[:MAX_STOP_STRINGS])
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self._api_key:
            kwargs["api_key"] = self._api_key
        continuing = messages and messages[-1].get("role") == "assistant"
        if self.prefill and continuing and self.provider == "hosted_vllm":
            kwargs["extra_body"] = dict(_VLLM_CONTINUE)
        return kwargs, held_back

    # -- streaming -------------------------------------------------------------------------------

    async def stream(self, request: SampleRequest) -> AsyncIterator[Delta]:
        kwargs, left_out = self._completion_kwargs(request)
        attempt = 0
        while True:
            response: Any = None
            delivered = 0  # characters yielded by this attempt
            held_back = left_out
            channels = ThinkingChannel(request.assistant_text, closes=self.reasoning_channel)
            try:
                response = await self._litellm.acompletion(**kwargs)
                async for chunk in response:
                    reasoning, text, finish = _read_chunk(chunk)
                    if reasoning:
                        self.reasoning_channel = True
                    text = channels.merge(reasoning, text)
                    if held_back and text:
                        text, held_back = _skip_held_back(text, held_back)
                    if not text and finish is None:
                        continue
                    delivered += len(text)
                    yield Delta(text, finish_reason=finish)
                return
            except Exception as e:
                if delivered:
                    raise SamplerError(
                        f"{self.model}: the stream broke after {delivered} characters "
                        f"({_summary(e)}); not retried, since a retry would repeat that text"
                    ) from e
                kind = self._classify(e)
                if kind != "transient" or attempt >= self.retries:
                    raise self._error(kind, e, attempt + 1) from e
                wait = self._backoff_s(attempt, e)
            finally:
                if response is not None:
                    await _close(response)
            await asyncio.sleep(wait)
            attempt += 1

    def _classify(self, e: Exception) -> str:
        """auth, transient (retried), not_found, no_provider, bad_request or other."""
        lt = self._litellm
        status = getattr(e, "status_code", None)
        status = status if isinstance(status, int) else 0
        auth = (lt.AuthenticationError, lt.PermissionDeniedError)
        transient = (lt.RateLimitError, lt.Timeout, lt.APIConnectionError)
        if status in (401, 403) or isinstance(e, auth) or _MISSING_KEY.search(str(e)):
            return "auth"  # a missing key is raised before any request; LiteLLM may call it a 500
        if status in (408, 429) or status >= 500 or isinstance(e, transient):
            return "transient"
        if status == 404 or isinstance(e, lt.NotFoundError):
            return "not_found"
        if "LLM Provider NOT provided" in str(e):
            return "no_provider"
        if status in (400, 422) or isinstance(e, lt.BadRequestError):
            return "bad_request"
        return "other"

    def _error(self, kind: str, e: Exception, attempts: int) -> SamplerError:
        model, why = self.model, _summary(e)
        if kind == "auth":
            keys = " or ".join(_key_variables(self._litellm, self.model, self.provider))
            fix = "check the key passed as api_key=" if self._api_key else f"set {keys}"
            return SamplerError(
                f"{model}: authentication failed ({why}). LiteLLM reads the key for "
                f"'{self.provider}' models from {keys} or from api_key=; {fix}"
            )
        if kind == "not_found":
            return SamplerError(
                f"{model}: the provider '{self.provider}' has no such model ({why}); check the "
                "name after the provider prefix"
            )
        if kind == "no_provider":
            return SamplerError(f"{model}: LiteLLM knows no provider for this model ({why})")
        if kind == "bad_request":
            return SamplerError(f"{model}: the provider rejected the request ({why})")
        if kind == "transient":
            return SamplerError(
                f"{model}: still failing after {attempts} attempts ({why}); try again later, "
                "or allow more with retries="
            )
        return SamplerError(f"{model}: the call failed ({type(e).__name__}: {why})")

    def _backoff_s(self, attempt: int, e: Exception) -> float:
        """Exponential backoff with jitter; a server's Retry-After counts, within the cap."""
        delay = self.backoff * 2**attempt * random.uniform(0.5, 1.0)
        headers = getattr(getattr(e, "response", None), "headers", None) or {}
        with contextlib.suppress(TypeError, ValueError):
            delay = max(delay, float(headers.get("retry-after", 0)))
        return min(delay, MAX_BACKOFF_S)


# -- helpers -------------------------------------------------------------------------------------


def _provider(litellm: Any, model: str, api_base: str | None) -> str:
    """LiteLLM's provider for ``model``; a ModelSpecError when it knows none."""
    if not re.match(r"[A-Za-z0-9][\w.-]*/\S", model):
        raise ModelSpecError(
            f"an API model is 'provider/model', e.g. 'openai/gpt-4o'; got {model!r}"
        )
    try:
        return str(litellm.get_llm_provider(model, api_base=api_base)[1])
    except Exception as e:
        prefix = model.split("/", 1)[0]
        raise ModelSpecError(
            f"LiteLLM knows no provider {prefix!r} (in {model!r}); see "
            "https://docs.litellm.ai/docs/providers for the names. For a Hugging Face model "
            f"run locally use 'hf:{model}'."
        ) from e


def _key_variables(litellm: Any, model: str, provider: str) -> list[str]:
    """The environment variables LiteLLM reads the key from (as far as it says)."""
    try:
        missing = list(litellm.validate_environment(model).get("missing_keys") or [])
    except Exception:
        missing = []
    return missing or [f"{provider.upper()}_API_KEY"]


class ThinkingChannel:
    """Writes a stream's reasoning channel into its text as ``<think>…</think>``, in order.

    Reasoning opens a think section (unless the turn so far left one open: then it goes on in
    it); answer text closes it when the server is known to split the two (``closes``, or this
    stream delivered reasoning), since a server that does not split sends the model's own
    ``</think>`` as text. The tags sit on lines of their own, as models write them.
    """

    def __init__(self, so_far: str, closes: bool = False) -> None:
        self.inside = ends_in_thinking(so_far)
        self.closes = closes
        self._last = so_far[-1:]  # the last character of the turn so far

    def merge(self, reasoning: str, content: str) -> str:
        parts: list[str] = []

        def add(text: str) -> None:
            if text:
                parts.append(text)
                self._last = text[-1]

        if reasoning:
            self.closes = True
            if not self.inside:
                add("\n" if self._last not in ("", "\n") else "")
                add(THINK_OPEN + ("" if reasoning.startswith("\n") else "\n"))
                self.inside = True
            add(reasoning)
        if content:
            if self.inside and self.closes:
                add("" if self._last == "\n" else "\n")
                add(THINK_CLOSE + ("" if content.startswith("\n") else "\n\n"))
                self.inside = False
            add(content)
        return "".join(parts)


def ends_in_thinking(text: str) -> bool:
    """Whether ``text`` stops inside a think section: its last ``<think>`` is not closed."""
    start = text.rfind(THINK_OPEN)
    return start >= 0 and text.find(THINK_CLOSE, start) < 0


def split_thinking(text: str) -> tuple[str, str] | None:
    """``(thinking, answer)`` of a turn that starts with a think section, as ``ThinkingChannel``
    wrote it (the newlines it put around the tags are not part of either); else ``None``."""
    if not text.lstrip().startswith(THINK_OPEN):
        return None
    body = text[text.index(THINK_OPEN) + len(THINK_OPEN) :]
    body = body.removeprefix("\n")
    end = body.find(THINK_CLOSE)
    if end < 0:
        return body, ""
    thinking = body[:end].removesuffix("\n")
    return thinking, body[end + len(THINK_CLOSE) :].lstrip("\n")


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def _read_chunk(chunk: Any) -> tuple[str, str, Any]:
    """``(reasoning, text, finish)`` of a streamed chunk.

    Reasoning is LiteLLM's ``reasoning_content`` (DeepSeek, vLLM, SGLang, Ollama and Anthropic
    all arrive there), else the text of its Anthropic ``thinking_blocks`` (signatures and
    redacted blocks carry no text to show).
    """
    choices = getattr(chunk, "choices", None) or []
    if not choices:
        return "", "", None
    choice = choices[0]
    delta = getattr(choice, "delta", None)
    text = getattr(delta, "content", None) or ""
    reasoning = getattr(delta, "reasoning_content", None)
    if not isinstance(reasoning, str) or not reasoning:
        blocks = getattr(delta, "thinking_blocks", None) or []
        reasoning = "".join(
            _field(b, "thinking") or "" for b in blocks if _field(b, "type") == "thinking"
        )
    reason = getattr(choice, "finish_reason", None)
    finish = None if reason is None else "length" if reason == "length" else "stop"
    return reasoning, text, finish


def _skip_held_back(text: str, held_back: str) -> tuple[str, str]:
    """Drop the start of the continuation that re-creates the whitespace left out of a prefill."""
    i = 0
    while i < len(text) and i < len(held_back) and text[i] == held_back[i]:
        i += 1
    if i < len(text):
        return text[i:], ""  # the model went on differently: stop matching
    return "", held_back[i:]


async def _close(response: Any) -> None:
    """Close the upstream stream now (the HTTP response), whichever close it offers."""
    close = getattr(response, "aclose", None) or getattr(response, "close", None)
    if close is None:
        return
    try:
        result = close()
        if inspect.isawaitable(result):
            await result
    except Exception:
        pass


def _summary(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    text = re.sub(r"^litellm\.\w+:\s*", "", text)
    return text if len(text) <= 300 else text[:297] + "..."


def _public_url(url: str | None) -> str | None:
    """``url`` without credentials, query or fragment (they may carry keys)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


__all__ = [
    "CONTINUE_PROMPT",
    "PREFILL_PROVIDERS",
    "LiteLLMSampler",
    "SamplerError",
    "ThinkingChannel",
    "ends_in_thinking",
    "split_thinking",
]
