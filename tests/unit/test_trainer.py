"""The trainer's one-time note when an Atari run on a CPU would take days."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dqn_jax import presets
from dqn_jax import trainer as trainer_module
from dqn_jax.trainer import Trainer


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
    assert "18.0 after 1.9M env steps and 7.4 hours" in logged[0]  # docs/results.md, pong_cpu_atari_s0.json


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
