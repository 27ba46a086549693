"""The token context local-tokenizer samplers share (transformers, vLLM).

The prompt is the chat template applied locally; the assistant turn so far is each segment's own
ids (recorded, else its text encoded alone), never the joined text re-tokenized.
"""

from __future__ import annotations

from typing import Any

from kernel_bridge.samplers import SampleRequest


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
