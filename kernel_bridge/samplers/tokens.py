"""What the local-tokenizer samplers (transformers, vLLM) share: token ids in and out.

In, the context: the chat template applied locally, then each segment's own ids (recorded, else
its text encoded alone), never the joined text re-tokenized. Out, the sampled ids: decoded locally
into ``Delta``s whose text is the decoding of their ids, held back at a possible stop string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kernel_bridge.samplers import Delta, SampleRequest


def cache_keyword(model: Any) -> str:
    """The name under which ``model.forward`` takes a KV cache: ``cache`` in transformers ≥ 5.2x
    (``past_key_values`` still works there but warns), ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids that end a turn: the model's generation config's and the tokenizer's."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class TokenContext:
    """Mixin: needs ``self.tokenizer`` (a Hugging Face tokenizer)."""

    tokenizer: Any

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        """The chat template applied locally, with the assistant turn opened."""
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True
        )
        return [int(i) for i in (ids["input_ids"] if hasattr(ids, "keys") else ids)]

    def context_ids(self, request: SampleRequest) -> list[int]:
        """Prompt ids + each segment's own ids (recorded, else its text encoded alone)."""
        ids = self.prompt_ids(request.messages)
        for segment in request.segments:
            ids.extend(
                segment.token_ids if segment.token_ids is not None else self.encode(segment.text)
            )
        return ids


class Detokenizer:
    """Turns token ids into text incrementally without splitting multi-byte characters.

    Decodes a short window (from ``prefix`` to the end) and emits what became stable, so the cost
    per token is constant.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # decode from here to give the tokenizer left context
        self.read = 0  # ids before this have been emitted

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self.tokenizer.decode(self.ids[self.prefix : self.read])
        after = self.tokenizer.decode(self.ids[self.prefix :])
        if after.endswith("\ufffd") or len(after) <= len(before):
            return ""  # an incomplete character: wait for the next token
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before) :]


class TokenOutput:
    """Text and ids on their way out: holds back a tail that may grow into a stop string.

    A token's id leaves with the delta that completes its text, so ids and text stay aligned; text
    cut at a stop string leaves without ids when a token straddles the cut.
    """

    def __init__(self, detok: Detokenizer, stops: list[str]) -> None:
        self.detok = detok
        self.stops = stops
        self.text = ""  # produced but not yet emitted
        self.tokens: list[tuple[int, float, int]] = []  # (id, logprob, end offset in self.text)

    def add(self, token_id: int, logprob: float) -> Delta:
        self.text += self.detok.add(token_id)
        self.tokens.append((token_id, logprob, len(self.text)))
        for stop in self.stops:
            at = self.text.find(stop)
            if at >= 0:
                return self._emit(at, "stop", drop_rest=True)
        return self._emit(len(self.text) - _partial_stop(self.text, self.stops))

    def flush(self, reason: str, last: Delta | None = None) -> Delta:
        rest = self._emit(len(self.text), reason)
        if last is None:
            return rest
        ids = (
            None
            if last.token_ids is None or rest.token_ids is None
            else [*last.token_ids, *rest.token_ids]
        )
        lps = None if ids is None else [*(last.logprobs or []), *(rest.logprobs or [])]
        return Delta(last.text + rest.text, token_ids=ids, logprobs=lps, finish_reason=reason)  # type: ignore[arg-type]

    def _emit(self, upto: int, reason: str | None = None, drop_rest: bool = False) -> Delta:
        done = [t for t in self.tokens if t[2] <= upto]
        rest = self.tokens[len(done) :]
        straddles = drop_rest and rest and (done[-1][2] if done else 0) < upto
        text, self.text = self.text[:upto], self.text[upto:]
        self.tokens = [] if drop_rest else [(i, lp, end - upto) for i, lp, end in rest]
        ids = None if straddles else [t[0] for t in done]
        lps = None if straddles else [t[1] for t in done]
        return Delta(text, token_ids=ids, logprobs=lps, finish_reason=reason)  # type: ignore[arg-type]


def _partial_stop(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for stop in stops:
        for k in range(min(len(text), len(stop) - 1), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best
