"""The policy being trained: a transformers causal LM and its tokenizer, optionally with LoRA.

``load_policy(config)`` reads ``config.model``: ``local``, ``local-base``, ``local:PATH`` (the
embedded Qwen2.5-Coder-0.5B in float weights, with the shipped adapter, without, or with yours),
``hf:ID_OR_PATH``, or ``tiny`` — a random 2-layer Qwen2 with a character tokenizer, built
from a config with no download, for tests and smoke runs where the reward is synthetic.
"""

from __future__ import annotations

import string
from typing import Any

import torch

from kernel_bridge.training.config import ConfigError, TrainConfig

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ConfigError(f"dtype must be 'auto' or a floating torch dtype, got {dtype!r}")
    return resolved


def char_tokenizer() -> Any:
    """A character-level tokenizer with Qwen's chat markers: printable ASCII, 100 ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    chars = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
    vocab = {token: i for i, token in enumerate(specials + chars)}
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    model.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=model,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def tiny_policy(
    seed: int = 0, hidden_size: int = 64, layers: int = 2, heads: int = 4
) -> tuple[Any, Any]:
    """A randomly initialized small Qwen2 and the character tokenizer (no files, no download)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = char_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.name_or_path = "tiny"
    return model, tokenizer


def load_policy(config: TrainConfig) -> tuple[Any, Any]:
    """The model (on its device, float weights, LoRA and checkpointing as configured), tokenizer."""
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    if config.model == "tiny":
        model, tokenizer = tiny_policy(config.seed)
        model = model.to(dtype)
    elif config.model in ("local", "local-base") or config.model.startswith("local:"):
        from kernel_bridge.embedded import embedded_adapter, load_embedded

        # local: training continues from the shipped adapter (merged); local-base: from the
        # untouched model; local:PATH: from that adapter or run.
        model, tokenizer = load_embedded(dtype=dtype, adapter=embedded_adapter(config.model))
        model.name_or_path = config.model
    elif config.model.startswith("hf:"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        name = config.model.removeprefix("hf:")
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    else:
        raise ConfigError(
            "model must be 'local', 'local-base', 'local:PATH', 'tiny' or 'hf:ID_OR_PATH', got "
            f"{config.model!r}"
        )
    model = model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.lora:
        model = add_lora(model, config)
    model.eval()  # generation mode; the trainer switches to train() for the update
    return model, tokenizer


def add_lora(model: Any, config: TrainConfig) -> Any:
    """Wrap ``model`` with LoRA adapters (peft); only the adapters train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError('lora = true needs peft: pip install "kernel-bridge[train]"') from None
    target: Any = config.lora_target
    if target != "all-linear":
        target = [name.strip() for name in target.split(",") if name.strip()]
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    if config.lora_init:
        init_lora(model, config.lora_init)
    return model


def init_lora(model: Any, source: str) -> None:
    """Copy the LoRA A/B weights of a trained adapter (file, checkpoint or run directory) into
    ``model``'s fresh adapters; every adapted layer must be found with the same shapes."""
    from kernel_bridge.embedded import EmbeddedModelError, read_lora_weights

    try:
        weights = read_lora_weights(source)
    except EmbeddedModelError as e:
        raise ConfigError(f"lora_init: {e}") from None
    params = {
        name.removeprefix("base_model.model.").replace(".default.weight", ""): p
        for name, p in model.named_parameters()
        if ".lora_A." in name or ".lora_B." in name
    }
    missing = sorted(set(params) - set(weights))
    unknown = sorted(set(weights) - set(params))
    if missing or unknown:
        raise ConfigError(
            f"lora_init: {source} does not fit this model's adapters ({len(missing)} missing, "
            f"e.g. {missing[:1]}; {len(unknown)} unknown, e.g. {unknown[:1]}): same lora_target?"
        )
    with torch.no_grad():
        for name, p in params.items():
            if weights[name].shape != p.shape:
                raise ConfigError(
                    f"lora_init: {name} is {tuple(weights[name].shape)} in {source}, "
                    f"{tuple(p.shape)} here: same lora_rank?"
                )
            p.copy_(weights[name].to(p.dtype))


def trainable_parameters(model: Any) -> dict[str, torch.Tensor]:
    """The parameters the optimizer updates, by name (each tied weight once)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}
