"""Exploration: the linear ε schedule and ε-greedy action selection from `jax.random` keys."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax

from dqn_jax.config import Config


def epsilon_schedule(config: Config) -> optax.Schedule:
    """Returns ε as a function of env steps: `epsilon_start` → `epsilon_end` linearly over
    `epsilon_decay_steps`, then flat; the decay starts at env step 0, or, with
    `epsilon_hold_until_learning`, at `learning_starts` (ε = `epsilon_start` until then)."""
    return optax.linear_schedule(
        init_value=config.epsilon_start,
        end_value=config.epsilon_end,
        transition_steps=max(1, config.epsilon_decay_steps),
        transition_begin=config.learning_starts if config.epsilon_hold_until_learning else 0,
    )


def epsilon_greedy(key: jax.Array, q_values: jax.Array, epsilon: jax.Array) -> jax.Array:
    """Returns one action per row of `q_values` [E, A]: random with probability ε, else argmax.

    Returns:
      int32 actions [E].
    """
    chex.assert_rank(q_values, 2)
    explore_key, action_key = jax.random.split(key)
    num_envs, num_actions = q_values.shape
    greedy = jnp.argmax(q_values, axis=-1).astype(jnp.int32)
    random_actions = jax.random.randint(action_key, (num_envs,), 0, num_actions, jnp.int32)
    explore = jax.random.uniform(explore_key, (num_envs,)) < epsilon
    return jnp.where(explore, random_actions, greedy)
