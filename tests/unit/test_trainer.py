"""The trainer's one-time note when an Atari run on a CPU would take days."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from dqn_jax.config import Config
from dqn_jax.run import presets
from dqn_jax.run import trainer as trainer_module
from dqn_jax.run.trainer import Trainer, small_machine_figure
from dqn_jax.tools.repro import NOT_COMPARED


@pytest.fixture(autouse=True)
def on_a_cpu(monkeypatch):
    monkeypatch.setattr(trainer_module.jax, "default_backend", lambda: "cpu")


def _trainer(game: str):
    logged = []
    fake = SimpleNamespace(config=presets.preset(game), warned_cpu_duration=False,
                           progress=SimpleNamespace(log=logged.append))
    return fake, logged


def test_an_atari_run_of_days_on_a_cpu_names_the_small_machine_preset_and_its_measured_time_once():
    fake, logged = _trainer("Pong")
    Trainer.warn_if_days_on_cpu(fake, 3 * 86_400.0)
    Trainer.warn_if_days_on_cpu(fake, 3 * 86_400.0)
    assert len(logged) == 1
    assert "about 3.0 more days" in logged[0] and "--config=cpu_atari" in logged[0]
    assert small_machine_figure() in logged[0]


MEASURED = json.loads(presets.MEASURED_FILE.read_text())


@pytest.mark.parametrize("overlay", sorted(MEASURED))
def test_a_measured_overlay_quotes_its_run_as_the_result_file_records_it(overlay):
    m = presets.measured(overlay)
    record = json.loads((Path(__file__).parents[2] / m["result"]).read_text())
    assert record["benchmark"] == "learning_curve" and record["game"] == m["game"] == "Pong"
    curve = [c for c in record["eval_curve"] if c["seed"] == m["seed"]]
    reached = [c for c in curve if c["eval_return_mean"] >= m["target_return"]]
    point = reached[0] if reached else max(curve, key=lambda c: c["eval_return_mean"])
    assert m["reached_target"] == bool(reached) and m["target_return"] == record["config"]["target_return"]
    assert (m["eval_return"], m["env_steps"]) == (point["eval_return_mean"], point["env_steps"])
    assert m["minutes"] == pytest.approx(point["wall_seconds"] / 60, abs=0.05)
    assert m["cpu"] in record["machine"]["cpu"] and m["cores"] == record["machine"]["cores"]
    if overlay == "cpu_atari":
        assert f"{m['eval_return']:.1f} at {m['env_steps'] / 1e6:.2f}M env steps" in small_machine_figure()


def test_no_note_under_a_day_for_cartpole_or_on_an_accelerator(monkeypatch):
    for game, seconds in (("Pong", 80_000.0), ("CartPole", 10 * 86_400.0)):
        fake, logged = _trainer(game)
        Trainer.warn_if_days_on_cpu(fake, seconds)
        assert logged == []
    fake, logged = _trainer("Pong")
    Trainer.warn_if_days_on_cpu(fake, None)  # no rate yet
    assert logged == []
    monkeypatch.setattr(trainer_module.jax, "default_backend", lambda: "gpu")
    fake, logged = _trainer("Pong")
    Trainer.warn_if_days_on_cpu(fake, 10 * 86_400.0)
    assert logged == []


@pytest.mark.parametrize("overlay", sorted(MEASURED))
def test_a_measured_overlay_quotes_a_run_made_with_its_settings(overlay):
    """The run a message quotes for an overlay ran with that overlay's settings, field by field (those
    that only steer a run, and fields added after it at their defaults, aside): a preset changed
    without a run of its own would quote another configuration's result."""
    m = presets.measured(overlay)
    recorded = json.loads((Path(__file__).parents[2] / m["result"]).read_text())["config"]
    ours = json.loads(json.dumps(dataclasses.asdict(presets.load_toml(presets.overlay_path(overlay),
                                                                         presets.preset(m["game"])))))
    defaults = json.loads(json.dumps(dataclasses.asdict(Config())))
    steering = set(NOT_COMPARED) | {"seed"}
    differing = {key: (value, recorded.get(key)) for key, value in ours.items()
                 if key not in steering and recorded.get(key, defaults[key]) != value}
    assert not differing
