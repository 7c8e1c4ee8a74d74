"""Config: the Nature defaults, game presets as overlays, command-line and TOML overrides on one typed path."""

from __future__ import annotations

import dataclasses

import pytest

from dqn_jax.config import Config, ConfigError, validate
from dqn_jax.run import presets
from dqn_jax.run.cli import parse_command, parse_config


def test_preset_then_command_line_overrides():
    config = parse_config(["--game=cartpole", "--seed=3", "--total-steps=50000", "--hidden-sizes", "32", "32"])
    preset = presets.preset("CartPole")
    assert config.game == "CartPole" and config.seed == 3 and config.total_steps == 50_000
    assert config.hidden_sizes == (32, 32)
    assert config.learning_rate == preset.learning_rate  # untouched fields keep the preset's value


def test_the_defaults_are_the_nature_atari_settings_and_games_layer_overlays():
    nature = Config()
    assert (nature.torso, nature.batch_size, nature.replay_capacity, nature.target_update_every) == (
        "nature_cnn", 32, 1_000_000, 2_500)
    assert validate(nature) == nature  # the defaults alone are a valid Atari run
    assert presets.preset("MsPacman") == dataclasses.replace(nature, game="MsPacman")
    # Pong and Breakout share one overlay stating only what differs from Nature.
    pong, breakout = presets.preset("Pong"), presets.preset("Breakout")
    assert dataclasses.replace(breakout, game="Pong") == pong
    differ = {f for f in Config.__dataclass_fields__ if getattr(pong, f) != getattr(nature, f)}
    assert differ == {"batch_size", "learning_rate", "learning_rate_end", "learning_rate_decay_steps",
                      "learning_starts", "epsilon_hold_until_learning"}
    assert presets.preset("CartPole").torso == "mlp"
    assert parse_config(["--game=MsPacman-v5"]).game == "MsPacman"


def test_overlays_by_name_by_path_and_by_their_old_configs_path(tmp_path):
    machado = parse_config(["--game=Pong", "--config=machado"])
    assert (machado.repeat_action_probability, machado.episodic_life, machado.full_action_space) == (0.25, False, True)
    assert parse_config(["--game=Pong", "--config=configs/machado.toml"]) == machado
    mine = tmp_path / "mine.toml"
    mine.write_text("batch_size = 48\nhidden_sizes = [8, 8]\ndouble_dqn = true\n")
    config = parse_config(["--game=CartPole", f"--config={mine}", "--seed=2"])
    assert (config.batch_size, config.hidden_sizes, config.double_dqn, config.seed) == (48, (8, 8), True, 2)
    assert set(presets.shipped_overlays()) >= {"cartpole", "machado", "vanilla_dqn", "breakout_cpu_1h"}


def test_config_toml_round_trip(tmp_path):
    config = parse_config(["--game=CartPole", "--seed=7", "--no-episodic-life"])
    path = tmp_path / "config.toml"
    path.write_text(presets.to_toml(config))
    assert presets.load_toml(path) == config


def test_resume_reads_the_runs_own_config(tmp_path):
    config = parse_config(["--game=CartPole", "--seed=5"])
    (tmp_path / "config.toml").write_text(presets.to_toml(config))
    resumed, run_dir = parse_command([f"--resume={tmp_path}", "--total-steps=90000"])
    assert run_dir == tmp_path and resumed.seed == 5 and resumed.total_steps == 90_000
    with pytest.raises(ConfigError, match="--run-dir cannot be combined with --resume"):
        parse_command([f"--resume={tmp_path}", "--run-dir=elsewhere"])
    with pytest.raises(ConfigError, match="no config.toml there"):
        parse_command([f"--resume={tmp_path / 'missing'}"])


@pytest.mark.parametrize("args, message", [
    (["--learning-rate=0"], "learning_rate = 0.0 is invalid: must be > 0"),
    (["--learning-rate=-1e-3"], "learning_rate = -0.001 is invalid: must be > 0"),
    (["--batch-size=512", "--replay-capacity=256", "--learning-starts=100"], "batch_size = 512"),
    (["--learning-starts=10", "--batch-size=32"], "learning_starts = 10 is invalid: must be at least batch_size"),
    (["--game=Pongg"], "did you mean Pong"),
    (["--game=breakuot"], "did you mean Breakout"),
    (["--epsilon-end=1.5"], "epsilon_end = 1.5 is invalid"),
    (["--bootstrap-epsilon=-0.05"], "bootstrap_epsilon = -0.05 is invalid: must be a probability in [0, 1]"),
    (["--train-every=3"], "train_every = 3 is invalid"),
    (["--train-every-late=16"], "train_every = 2 is invalid: must be a multiple of num_envs (8) when "
                                "train_every_late is set"),
    (["--train-every=8", "--train-every-late=12"], "train_every_late = 12 is invalid: must be a multiple of "
                                                   "num_envs (8)"),
    (["--train-every-late=-8"], "train_every_late = -8 is invalid"),
    (["--train-every-late-start=600000"], "train_every_late_start = 600000 is invalid: has no effect without "
                                          "train_every_late"),
    (["--batch-size=big"], "command line: Error parsing --batch-size"),
    (["--loss=hub"], "invalid choice 'hub' for argument '--loss'"),
    (["--torso=nips_cnn"], "torso = 'nips_cnn' is invalid: CartPole observations are vectors: use torso = 'mlp'"),
    (["--game=Pong", "--torso=mlp"], "torso = 'mlp' is invalid: Atari frames need a convolutional torso: "
                                     "one of nature_cnn, nips_cnn"),
    (["--config=no_such_overlay"], "config file no_such_overlay does not exist (shipped overlays: "),
    (["--time-limit-minutes=-5"], "time_limit_minutes = -5.0 is invalid: must be a finite number >= 0"),
    (["--target-return=nan"], "target_return = nan is invalid: must be a number"),
    (["--seed=-1"], "seed = -1 is invalid: must be in [0, 2,147,483,647]"),
    (["--n-step=1000"], "n_step = 1000 is invalid: must be at most 64"),
    (["--hidden-sizes", "1000000"], "hidden_sizes = (1000000,) is invalid: layers wider than 65,536"),
    (["--num-seeds=100000"], "= 800,000 environments in one pool, over the limit of 16,384"),
    (["--learning-rate=inf"], "learning_rate = inf is invalid: must be a finite number"),
    (["--learning-rate-end=1e300"], "learning_rate_end = 1e+300 is invalid: must be a finite number"),
    (["--replay-capacity=3000000000"], "replay_capacity = 3000000000 is invalid: must be at most 2,147,483,647"),
    (["--num-envs=256", "--chunk-steps=2048"], "learning_starts = 1000 is invalid: must be at least 1,792 = "
                                               "(frame_stack 1 + n_step 5 + 1) × num_envs 256"),
])
def test_invalid_values_name_field_value_and_fix(args, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(["--game=CartPole", *args] if not args[0].startswith("--game") else args)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("text, message", [
    ("learning_rte = 0.1\n", "unknown config field 'learning_rte'; did you mean 'learning_rate'"),
    ('batch_size = "big"\n', "Error parsing batch_size:"),
    ("batch_size = 1.5\n", "Error parsing batch_size:"),
    ("double_dqn = 3\n", "field 'double_dqn' = 3 has the wrong type: write true or false"),
    ('loss = "hub"\n', "invalid choice 'hub'"),
    ("batch_size = \n", "is not valid TOML"),
    ("[section]\nx = 1\n", "unknown config field 'section'"),
])
def test_toml_values_are_checked_as_flags_are(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        presets.load_toml(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
