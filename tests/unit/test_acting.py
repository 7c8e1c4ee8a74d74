"""The ε schedule and ε-greedy selection."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqn_jax.agent.acting import epsilon_greedy, epsilon_schedule
from dqn_jax.config import Config


def test_epsilon_schedule_values():
    schedule = epsilon_schedule(dataclasses.replace(
        Config(), epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=1_000, epsilon_hold_until_learning=False))
    for step, expected in [(0, 1.0), (250, 0.775), (500, 0.55), (1_000, 0.1), (50_000, 0.1)]:
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-6)


def test_epsilon_held_until_learning_starts_then_decays_by_default():
    # The published protocol (DeepMind's released code, DQN Zoo, Dopamine) holds ε until learning starts.
    assert Config().epsilon_hold_until_learning and Config().epsilon_decay_steps == 1_000_000
    schedule = epsilon_schedule(dataclasses.replace(
        Config(), epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=100, learning_starts=50_000))
    assert float(schedule(0)) == float(schedule(50_000)) == 1.0
    assert float(schedule(50_050)) == pytest.approx(0.55) and float(schedule(50_100)) == pytest.approx(0.1)


def test_epsilon_zero_is_greedy_and_one_is_uniform():
    q = jnp.tile(jnp.array([[0.0, 3.0, 1.0]]), (4000, 1))
    greedy = epsilon_greedy(jax.random.PRNGKey(0), q, 0.0)
    assert np.all(np.asarray(greedy) == 1)
    uniform = np.asarray(epsilon_greedy(jax.random.PRNGKey(0), q, 1.0))
    counts = np.bincount(uniform, minlength=3)
    assert np.all(np.abs(counts - 4000 / 3) < 120)


def test_epsilon_greedy_explores_at_the_given_rate():
    q = jnp.tile(jnp.array([[0.0, 3.0]]), (20_000, 1))
    actions = np.asarray(jax.jit(epsilon_greedy)(jax.random.PRNGKey(1), q, 0.3))
    # Random actions hit the greedy one half the time: P(non-greedy) = 0.3 / 2.
    assert np.mean(actions == 0) == pytest.approx(0.15, abs=0.01)


def test_same_key_same_actions_different_key_different_actions():
    q = jax.random.normal(jax.random.PRNGKey(5), (256, 6))
    a = epsilon_greedy(jax.random.PRNGKey(2), q, 0.5)
    b = epsilon_greedy(jax.random.PRNGKey(2), q, 0.5)
    c = epsilon_greedy(jax.random.PRNGKey(3), q, 0.5)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
