"""The Python entry points resolve names and validate exactly as the command line does."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from helpers import REPO

from dqn_jax.config import Config, ConfigError
from dqn_jax.run import presets
from dqn_jax.run import train as train_module
from dqn_jax.run.cli import parse_command, parse_config
from dqn_jax.tools import sweep


@pytest.mark.parametrize("name", ["Pong", "pong", "Pong-v5", "CartPole", "cartpole"])
def test_preset_gives_the_config_the_command_line_gives(name):
    assert presets.to_toml(presets.preset(name)) == presets.to_toml(parse_config([f"--game={name}"]))


def test_preset_of_a_lowercase_name_is_the_games_preset_and_an_unknown_name_is_refused():
    pong = presets.preset("pong")
    assert pong.game == "Pong" and pong.batch_size == 96  # Pong's preset, not the bare Nature defaults
    with pytest.raises(ConfigError, match=r"game = 'Pongg' is not an EnvPool game; did you mean Pong"):
        presets.preset("Pongg")


def test_train_refuses_an_invalid_config_before_writing_anything(tmp_path):
    config = dataclasses.replace(presets.preset("CartPole"), learning_rate=-1.0)
    with pytest.raises(ConfigError, match=r"^learning_rate = -1.0 is invalid: must be > 0$"):
        train_module.train(config, run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="is not an EnvPool game"):
        train_module.train(Config(game="Pongg"), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_readme_python_quick_start_runs_as_written(monkeypatch):
    block = re.search(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    trained = []

    def fake_train(config, run_dir=None, **_):
        trained.append((config, run_dir))
        return {"best_params_return": 500.0, "run_dir": str(run_dir)}

    monkeypatch.setattr(train_module, "train", fake_train)
    exec(compile(block, "README.md", "exec"), {})
    (config, run_dir), = trained
    assert presets.to_toml(config) == presets.to_toml(parse_config(["--game=CartPole", "--seed=3"]))
    assert Path(run_dir) == Path("runs/cartpole-s3")


def test_sweep_refuses_a_bad_training_flag_before_any_game_trains(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "train_main", lambda argv: pytest.fail("a game was trained"))
    with pytest.raises(ConfigError, match=r"learning_rate = -1.0 is invalid"):
        sweep.sweep("CartPole,Pong", tmp_path / "sweep", num_seeds=2, flags=["--learning-rate=-1"])
    with pytest.raises(ConfigError, match="did you mean Pong"):
        sweep.sweep(["CartPole", "Pongg"], tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("argv, message", [
    (["--learnin-rate=3"], "command line: unknown option --learnin-rate; did you mean --learning-rate?"),
    (["--no-progres"], "command line: unknown option --no-progres; did you mean --no-progress?"),
    (["--learning_rate=abc"], "command line: Error parsing --learning_rate: could not convert string to float"),
])
def test_flag_errors_name_the_option_as_typed_and_suggest_the_closest(argv, message):
    with pytest.raises(ConfigError) as err:
        parse_command(["--game=CartPole", *argv])
    assert str(err.value).startswith(message)


def test_a_wrong_type_in_a_toml_overlay_names_its_key(tmp_path):
    overlay = tmp_path / "mine.toml"
    overlay.write_text('total_steps = "lots"\n')
    with pytest.raises(ConfigError, match=r"config file .*mine.toml: Error parsing total_steps: invalid literal"):
        parse_config(["--game=CartPole", f"--config={overlay}"])


def test_help_names_the_config_overlays_and_resume(capsys):
    with pytest.raises(SystemExit):
        parse_command(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--config=NAME_OR_FILE.toml" in text and "--resume=RUN_DIR" in text and "cpu_atari" in text


def test_repro_help_describes_repro_and_compare(capsys):
    from dqn_jax.tools import repro

    assert repro.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Is training reproducible to the bit?") and "repro compare RUN_A RUN_B" in text
    assert "usage: python -m dqn_jax.train" not in text


def test_evaluate_score_refuses_what_the_command_refuses(tmp_path):
    from dqn_jax.run.evaluate import score

    with pytest.raises(ConfigError, match="params = 'worst': choose best"):
        score(tmp_path, "worst", 3, None, None, False)
    with pytest.raises(ConfigError, match="--episodes=0: play at least one game"):
        score(tmp_path, "best", 0, None, None, False)
    with pytest.raises(ConfigError, match="no config.toml there; pass the directory of a training run"):
        score(tmp_path, "best", 3, None, None, False)


def test_the_public_api_names_its_parts_and_importing_it_loads_no_jax():
    import subprocess
    import sys

    import dqn_jax
    from dqn_jax.agent.learner import make_learner
    from dqn_jax.run.train import train as train_function

    assert set(dqn_jax.__all__) == {"AgentState", "Config", "ConfigError", "compare", "epsilon_greedy", "load_policy",
                                    "make_learner", "make_network", "make_prioritized", "make_replay", "preset",
                                    "train"}
    assert all(getattr(dqn_jax, name) is not None for name in dqn_jax.__all__)
    assert dqn_jax.make_learner is make_learner and dqn_jax.preset("pong").game == "Pong"
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        dqn_jax.nothing  # noqa: B018
    calls = []
    original = train_module.train
    train_module.train = lambda *args, **kwargs: calls.append((args, kwargs)) or "summary"
    try:  # dqn_jax.train is the module (Python sets it once imported), callable as its train
        assert dqn_jax.train(1, run_dir="x") == "summary" and calls == [((1,), {"run_dir": "x"})]
    finally:
        train_module.train = original
    assert train_module.train is train_function
    out = subprocess.run([sys.executable, "-c", "import sys, dqn_jax; print('jax' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
