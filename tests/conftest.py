"""Shared fixtures: strict NumPy rank promotion and a tiny CartPole config."""

from __future__ import annotations

import dataclasses

import jax
import pytest

from dqn_jax import config as config_lib

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def tiny_cartpole() -> config_lib.Config:
    """A CartPole config that trains for 2,000 env steps in a couple of seconds."""
    base = config_lib.preset("CartPole")
    return config_lib.validate(dataclasses.replace(
        base, total_steps=2_000, num_envs=4, learning_starts=400, batch_size=32, replay_capacity=4_000,
        eval_every=1_000, eval_episodes=2, chunk_steps=400, hidden_sizes=(16,), target_update_every=20,
        progress=False))
