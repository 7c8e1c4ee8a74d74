"""Config presets, overrides and validation errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dqn_jax import config as config_lib
from dqn_jax.config import ConfigError
from dqn_jax.train import parse_config


def test_preset_then_command_line_overrides():
    config = parse_config(["--game=cartpole", "--seed=3", "--total-steps=50000", "--hidden-sizes", "32", "32"])
    preset = config_lib.preset("CartPole")
    assert config.game == "CartPole" and config.seed == 3 and config.total_steps == 50_000
    assert config.hidden_sizes == (32, 32)
    assert config.learning_rate == preset.learning_rate  # untouched fields keep the preset's value


def test_atari_games_use_their_preset_or_atari_toml():
    assert config_lib.preset_path("Pong").name == "pong.toml"
    assert config_lib.preset_path("MsPacman").name == "atari.toml"
    config = parse_config(["--game=MsPacman-v5"])
    assert config.game == "MsPacman" and config.torso == "nature_cnn"


def test_config_toml_round_trip(tmp_path):
    config = parse_config(["--game=CartPole", "--seed=7"])
    path = tmp_path / "config.toml"
    path.write_text(config_lib.to_toml(config))
    assert config_lib.load_toml(path) == config


@pytest.mark.parametrize("args, message", [
    (["--learning-rate=0"], "learning_rate = 0.0 is invalid: must be > 0"),
    (["--learning-rate=-1e-3"], "learning_rate = -0.001 is invalid: must be > 0"),
    (["--batch-size=512", "--replay-capacity=256", "--learning-starts=100"], "batch_size = 512"),
    (["--learning-starts=10", "--batch-size=32"], "learning_starts = 10 is invalid: must be at least batch_size"),
    (["--game=Pongg"], "did you mean Pong"),
    (["--game=breakuot"], "did you mean Breakout"),
    (["--epsilon-end=1.5"], "epsilon_end = 1.5 is invalid"),
    (["--train-every=3"], "train_every = 3 is invalid"),
])
def test_invalid_values_name_field_value_and_fix(args, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_config(["--game=CartPole", *args] if not args[0].startswith("--game") else args)


def test_unknown_field_in_toml_suggests_the_right_one(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("learning_rte = 0.1\n")
    with pytest.raises(ConfigError, match="unknown config field 'learning_rte'; did you mean 'learning_rate'"):
        config_lib.load_toml(path)


def test_wrong_type_in_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('batch_size = "big"\n')
    with pytest.raises(ConfigError, match="batch_size"):
        config_lib.load_toml(path)


def test_cli_config_error_is_one_line_without_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "dqn_jax.train", "--game=CartPole", "--learning-rate=-1"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: learning_rate = -1.0 is invalid: must be > 0"]
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_unknown_game_suggests_names():
    result = subprocess.run([sys.executable, "-m", "dqn_jax.train", "--game=SpaceInvader"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "did you mean SpaceInvaders" in result.stderr
    assert "Traceback" not in result.stderr
