"""Careless and hostile input that used to slip through: each test names what it once did."""

from __future__ import annotations

import pytest

from kernel_bridge.training.config import ConfigError, config_from_dict


@pytest.mark.parametrize(
    "data, message",
    [
        ({"step_timeout": float("nan")}, "step_timeout must be a finite number, got nan"),
        ({"learning_rate": float("inf")}, "learning_rate must be a finite number, got inf"),
        ({"beta": float("nan")}, "beta must be a finite number"),
        ({"top_p": float("nan")}, "top_p must be a finite number"),
        ({"rewards": {"correct": float("nan")}}, "rewards.correct must be a finite number"),
    ],
)
def test_training_config_numbers_must_be_finite(data, message):
    # TOML writes nan and inf; NaN slipped through every `<` and `<=` check of validate().
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, where="run.toml")
