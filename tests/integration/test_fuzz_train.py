"""The fuzz's accepted command lines train: no traceback, no halt, no hang (a time limit bounds each)."""

from __future__ import annotations

from fuzz import combinations
from helpers import TINY_FLAGS

from dqn_jax.config import ConfigError
from dqn_jax.run import preflight
from dqn_jax.run.cli import parse_command
from dqn_jax.run.train import train


def test_accepted_edge_values_train(tmp_path):
    """The first two accepted combinations of one seed train a few chunks (tiny CartPole underneath)."""
    trained = 0
    for args in combinations(60, seed=11):
        try:
            config, _ = parse_command([*TINY_FLAGS, *args[2:], "--total-steps=1200", "--time-limit-minutes=0.5"])
            preflight.check(config)
        except ConfigError:
            continue
        summary = train(config, run_dir=tmp_path / str(trained))
        assert summary["env_steps"] > 0 and summary["halted"] is None, (args, summary)
        trained += 1
        if trained == 2:
            break
    assert trained == 2
