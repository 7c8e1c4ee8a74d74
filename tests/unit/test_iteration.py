"""The loop's learning schedule counted on the host: `updates_after` against the loop's own rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dqn_jax.loop.iteration import learning_period, updates_after


def updates_by_the_loops_rule(config, env_steps: int) -> int:
    """Counts, iteration by iteration, the rounds `learn_if_due` runs (its `due`, written as there)."""
    rounds = 0
    for iteration in range(1, env_steps // config.num_envs + 1):
        period = int(np.asarray(learning_period(config, iteration)))
        rounds += iteration % period == 0 and iteration * config.num_envs >= config.learning_starts
    return rounds * config.updates_per_vector_step


@pytest.mark.parametrize("settings", [
    dict(),  # one update every vector step
    dict(train_every=2),  # two updates in each round
    dict(train_every=12, learning_starts=30),  # every third vector step, from a start between iterations
    dict(train_every=8, train_every_late=16, train_every_late_start=1_000),  # half the updates late
    dict(train_every=8, train_every_late=4, train_every_late_start=1_002),  # more, from between iterations
    dict(train_every=8, train_every_late=12, train_every_late_start=100),  # late before learning starts
])
def test_updates_after_counts_the_rounds_the_loop_runs(tiny_cartpole, settings):
    config = dataclasses.replace(tiny_cartpole, **settings)
    for env_steps in (0, 3, 396, 400, 404, 997, 1_000, 1_004, 1_600, 2_003):
        assert updates_after(config, env_steps) == updates_by_the_loops_rule(config, env_steps), env_steps
