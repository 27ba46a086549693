"""Checkpoints of a training run: ``out_dir/checkpoints/step-NNNNNN/``.

A checkpoint holds the trainable weights (``weights.safetensors``), the optimizer, scheduler and
RNG state (``optimizer.pt``) and ``state.json`` (the step, the model, and with LoRA what an
adapter file needs). It is written to a temporary directory and renamed, so a crash never leaves
half a checkpoint; the last ``keep_checkpoints`` are kept.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from kernel_bridge.training.config import ConfigError, TrainConfig


def save(
    out_dir: Path,
    step: int,
    params: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
) -> Path:
    """Write the trainable weights, optimizer, scheduler and RNG state of ``step``; keep the last
    ``config.keep_checkpoints``."""
    from safetensors.torch import save_file

    root = out_dir / "checkpoints"
    path = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {n: p.detach().cpu().contiguous() for n, p in params.items()}
    save_file(weights, str(tmp / "weights.safetensors"))
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    torch.save(state, tmp / "optimizer.pt")
    info: dict[str, Any] = {"step": step, "model": config.model, "lora": config.lora}
    if config.lora:  # what an adapter file needs (kernel_bridge.embedded.save_adapter)
        info.update(
            lora_rank=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_target=config.lora_target,
        )
    (tmp / "state.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    for old in sorted(root.glob("step-*"))[: -config.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def load(
    path: str | Path,
    params: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
    device: torch.device,
) -> int:
    """Restore a checkpoint of the same model into ``params``, ``optimizer`` and ``scheduler``;
    returns its step."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        info = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is not a training checkpoint ({e})") from None
    if (info.get("model"), info.get("lora")) != (config.model, config.lora):
        raise ConfigError(
            f"{path} was written for model={info.get('model')!r}, lora={info.get('lora')}, "
            f"not model={config.model!r}, lora={config.lora}; point out_dir "
            "elsewhere or set resume = false"
        )
    weights = load_file(str(path / "weights.safetensors"))
    if set(weights) != set(params):
        raise ConfigError(f"{path} holds other parameters than this model trains")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    state = torch.load(path / "optimizer.pt", map_location=device)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"].cpu())
    return int(info["step"])


def latest(out_dir: str | Path) -> Path | None:
    """The checkpoint of the highest step in ``out_dir``, if any."""
    found = sorted(Path(out_dir).glob("checkpoints/step-*/state.json"))
    return found[-1].parent if found else None


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines of steps after ``step`` (they are run again after a resume)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:
            continue
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
