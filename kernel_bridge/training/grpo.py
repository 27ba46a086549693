"""GRPO in torch: group-normalized advantages, the clipped loss, and chunked token logprobs.

The whole objective is ``grpo_loss`` below, one screen. For one completion i of a group and one of
its model tokens t (tool tokens and padding have ``mask == 0`` and contribute nothing):

    A_i     = (r_i - mean(r_group)) / std(r_group)            advantage, shared by every token
    ratio   = exp(logp_t - old_logp_t)                         π_θ / π_old for that token
    loss_t  = -min(ratio · A_i, clip(ratio, 1-ε_low, 1+ε_high) · A_i) + β · KL_t
    loss    = Σ mask · loss_t / Σ mask                         token-level mean over the batch

``KL_t`` is the k3 estimator ``exp(ref - logp) - (ref - logp) - 1``: ≥ 0, unbiased for
KL(π_θ‖π_ref).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# The padded batch the loss is computed on is built in batch.py; its names are importable here.
from kernel_bridge.training.batch import Batch, make_batch

__all__ = ["Batch", "group_advantages", "grpo_loss", "make_batch", "token_logprobs"]


def group_advantages(
    rewards: torch.Tensor, groups: Sequence[Any], scale: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """Each reward minus its group's mean, divided by the group's std when ``scale``.

    ``groups[i]`` names the group of ``rewards[i]`` (the prompt it answered). A group whose
    rewards are all equal gets advantage 0: it says nothing about which completion was better.
    """
    advantages = torch.zeros_like(rewards, dtype=torch.float32)
    for group in dict.fromkeys(groups):
        index = torch.tensor([i for i, g in enumerate(groups) if g == group])
        r = rewards[index].float()
        centered = r - r.mean()
        if scale:
            std = r.std() if len(r) > 1 else torch.tensor(0.0)
            centered = centered / (std + eps)
        advantages[index] = centered
    return advantages


def grpo_loss(
    logprobs: torch.Tensor,  # [B, T] log π_θ of each completion token (with grad)
    old_logprobs: torch.Tensor,  # [B, T] log π_old of the same tokens (no grad)
    advantages: torch.Tensor,  # [B]
    mask: torch.Tensor,  # [B, T] 1 for model tokens; 0 for tool tokens and padding
    ref_logprobs: torch.Tensor | None = None,  # [B, T] log π_ref, needed when beta > 0
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    beta: float = 0.0,
    aggregation: str = "token",  # "token": mean over all model tokens; "sequence": per sequence
    num_tokens: float | None = None,  # the normalizer of "token" (model tokens in the whole batch)
    num_sequences: float | None = None,  # the normalizer of "sequence"
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped GRPO objective (to minimize) and a few statistics of it."""
    mask = mask.bool()
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages[:, None]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    kl = torch.zeros_like(per_token)
    if beta:
        assert ref_logprobs is not None, "beta > 0 needs the reference policy's logprobs"
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * kl
    # Tool tokens and padding: where(), not a product, so not even a NaN there can leak gradient.
    per_token = torch.where(mask, per_token, 0.0)
    if aggregation == "token":
        loss = per_token.sum() / (num_tokens or mask.sum().clamp(min=1))
    else:
        per_sequence = per_token.sum(-1) / mask.sum(-1).clamp(min=1)
        loss = per_sequence.sum() / (num_sequences or len(per_sequence))
    with torch.no_grad():
        tokens = mask.sum().clamp(min=1)
        stats = {
            "clip_fraction": float(((clipped < unclipped) & mask).sum() / tokens),
            "kl": float(torch.where(mask, kl, 0.0).sum() / tokens),
            "ratio_max": float(torch.where(mask, ratio, 0.0).max()) if mask.any() else 1.0,
        }
    return loss, stats


# -- token logprobs ------------------------------------------------------------------------------


def _head_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(-1)


def token_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    start: int = 0,
    chunk_size: int = 512,
    temperature: float = 1.0,
    shared: int = 0,
) -> torch.Tensor:
    """``log p(input_ids[:, t+1] | input_ids[:, :t+1])`` for ``t`` from ``start``: [B, T-1-start].

    ``p`` is the distribution the rollouts were sampled from: the model's at ``temperature``
    (logits divided by it; top-p is not applied, as in TRL).
    ``shared > 0``: the first ``shared`` tokens are the same in every row (the prompt of a group;
    at most ``start``): they run once, for one row, without gradient, and the rows continue from
    their keys and values. The values are the same; no gradient flows through the prompt.
    With ``chunk_size > 0`` the LM head runs on ``chunk_size`` positions at a time under activation
    checkpointing: neither the forward nor the backward pass ever holds more than
    [chunk_size × vocab] logits, instead of [batch × length × vocab].
    """
    decoder = _decoder(model)
    if shared > 0:
        assert shared <= start, "the shared prefix must end before the first scored position"
        from transformers import DynamicCache

        from kernel_bridge.samplers.tokens import cache_keyword

        cache, keyword = DynamicCache(), cache_keyword(decoder)
        with torch.no_grad():
            decoder(input_ids=input_ids[:1, :shared], use_cache=True, **{keyword: cache})
        cache.batch_repeat_interleave(input_ids.shape[0])
        hidden = decoder(
            input_ids=input_ids[:, shared:],
            attention_mask=attention_mask,
            use_cache=True,
            **{keyword: cache},
        ).last_hidden_state
        hidden = hidden[:, start - shared : -1]
    else:
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = hidden[:, start:-1]
    targets = input_ids[:, start + 1 :]
    head = model.get_output_embeddings()
    if chunk_size <= 0:
        return _head_logprobs(hidden, head.weight, head.bias, targets, temperature)
    batch, length, width = hidden.shape
    flat_hidden, flat_targets = hidden.reshape(-1, width), targets.reshape(-1)
    pieces = []
    for at in range(0, flat_hidden.shape[0], chunk_size):
        h, t = flat_hidden[at : at + chunk_size], flat_targets[at : at + chunk_size]
        if torch.is_grad_enabled():
            pieces.append(
                checkpoint(
                    _head_logprobs, h, head.weight, head.bias, t, temperature, use_reentrant=False
                )
            )
        else:
            pieces.append(_head_logprobs(h, head.weight, head.bias, t, temperature))
    return torch.cat(pieces).reshape(batch, length)


def _decoder(model: Any) -> Any:
    """The transformer body (embeddings, layers, final norm) of a causal LM, peft-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    if decoder is None:
        decoder = getattr(base, base.base_model_prefix)
    return decoder
