"""One base for kernel-bridge's errors; user errors are one line, anything else is a bug."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import kernel_bridge
from kernel_bridge.cli import main
from kernel_bridge.errors import KernelBridgeError, UserError

# Raised inside the kernel by the import guard, where the model's code catches ImportError.
INSIDE_THE_KERNEL = {"kernel_bridge.tools.guard.ImportRefusedError"}
# Signals that stop running code, like KeyboardInterrupt (which they derive from or stand beside):
# BaseExceptions on purpose, so that no `except Exception` in the code they stop swallows them.
STOPS = {"kernel_bridge.execution.shell.BlockTimeout", "kernel_bridge.loading.LoadStopped"}


def defined_errors() -> dict[str, type[BaseException]]:
    found = {}
    for info in pkgutil.walk_packages(kernel_bridge.__path__, "kernel_bridge."):
        if info.name.rsplit(".", 1)[-1].startswith("_") or ".adapters" in info.name:
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional extra (vllm, trl) that is not installed
            continue
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and not issubclass(value, Warning)
                and value.__module__ == info.name
            ):
                found[f"{info.name}.{name}"] = value
    return found


def test_every_error_of_the_package_derives_from_one_base():
    errors = defined_errors()
    assert len(errors) >= 15  # the walk found the package's errors
    outside = sorted(
        name
        for name, error in errors.items()
        if not issubclass(error, KernelBridgeError) and name not in INSIDE_THE_KERNEL | STOPS
    )
    assert outside == []
    assert all(not issubclass(errors[name], Exception) for name in STOPS)


def test_user_errors_keep_their_builtin_base():
    from kernel_bridge.samplers import ModelSpecError
    from kernel_bridge.trace import TraceStoreError
    from kernel_bridge.training.config import ConfigError

    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)
    assert issubclass(ModelSpecError, UserError) and issubclass(ModelSpecError, ValueError)
    assert issubclass(TraceStoreError, UserError) and issubclass(TraceStoreError, OSError)


def test_a_user_error_from_deep_inside_is_one_line(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('model = "local"\nlearning_rate = -1\n')
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kernel-bridge: error: ")
    assert "learning_rate" in err and "Traceback" not in err


def test_a_bug_shows_its_traceback_and_says_it_is_a_bug(tmp_path, capsys, monkeypatch):
    import kernel_bridge.cli

    def broken_show(args):  # a stand-in for a bug in kernel-bridge
        return {}["missing"]

    monkeypatch.setattr(kernel_bridge.cli, "_traces_show", broken_show)
    assert main(["traces", "show", str(tmp_path / "t.jsonl")]) == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'missing'" in err
    assert "kernel-bridge: bug: this is a bug in kernel-bridge" in err


@pytest.mark.parametrize("error", [ValueError("x"), RuntimeError("y")])
def test_builtin_errors_are_no_longer_taken_for_bad_input(error, capsys, monkeypatch):
    import kernel_bridge.cli

    def raises(args):
        raise error

    monkeypatch.setattr(kernel_bridge.cli, "_traces_show", raises)
    assert main(["traces", "show", "t.jsonl"]) == 70
    assert "Traceback" in capsys.readouterr().err
