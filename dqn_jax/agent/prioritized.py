"""Prioritized experience replay (Schaul et al. 2016, proportional variant) on the `[time, env]` ring.

A transition is a slot of the ring: leaf `slot * E + env` of a sum tree (`sum_tree.py`) holds its
priority `(|δ| + ε) ** α`, or exactly 0 while the slot cannot be sampled. The leaves follow the
uniform replay's rule of what can be sampled (`replay.py`): after the write of global step t,

- the slot of step `t - n_step` gets its next n_step frames, so it enters at the largest priority
  written so far — or 0 when it is one of EnvPool's reset steps (not a transition);
- the slot of step `t - T + stack - 1` loses the oldest frame of its stack to the ring's overwrite,
  so it leaves (priority 0). Slots older than it left in earlier writes.

Draws are stratified (one uniform target in each of B equal segments of the total), the
importance weights `(N · P(i)) ** -β` are normalized by the batch's largest (so N cancels), and
the updates write `(|δ| + ε) ** α` back for the slots they sampled.

The state is kept apart from `ReplayState` (in `AgentState.priorities`): the updates write it
while the ring's frames stay read-only in them.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
from flax import struct

from dqn_jax.agent import sum_tree
from dqn_jax.agent.replay import Replay, ReplayState, SampleIndex, Transition


@struct.dataclass
class PriorityState:
    """One agent's priorities."""

    nodes: jax.Array  # [2P] float32 sum tree over the ring's slots (leaf slot * E + env): priority ** α
    max_priority: jax.Array  # [] float32, the largest priority ** α written so far; new transitions enter with it


class PrioritizedSample(NamedTuple):
    """A prioritized batch and what the update needs besides the transitions."""

    transition: Transition
    index: SampleIndex
    weights: jax.Array  # [B] float32 importance weights, the batch's largest = 1
    probabilities: jax.Array  # [B] float32 P(i) of each drawn slot


class Prioritized(NamedTuple):
    """Pure functions over one replay's ring and its `PriorityState` (see `make_prioritized`), in
    flashbax's manner: `add` writes a step and keeps "positive leaves = sampleable slots" itself,
    `sample` draws with the importance weights, `update` writes the TD errors' priorities."""

    init: Callable[[], PriorityState]
    add: Callable[..., tuple[ReplayState, PriorityState]]
    sample: Callable[[ReplayState, PriorityState, jax.Array, jax.Array], PrioritizedSample]
    update: Callable[[PriorityState, SampleIndex, jax.Array], PriorityState]
    stats: Callable[[PriorityState, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def make_prioritized(replay: Replay, *, exponent: float, epsilon: float) -> Prioritized:
    """Returns the prioritized sampler of `replay`'s ring.

    Args:
      replay: the uniform replay whose ring the priorities index (its `gather` builds the batch).
      exponent: α, how much the TD error counts (0: uniform over the sampleable slots).
      epsilon: ε added to |δ| so that a transition with zero error can still be drawn.
    """
    c = replay.settings
    T, E = c.ring_steps, c.num_envs
    capacity = T * E
    lanes = jnp.arange(E, dtype=jnp.int32)

    def init() -> PriorityState:
        """Returns the priorities of an empty replay: every leaf 0, the first maximum 1."""
        return PriorityState(nodes=sum_tree.init(capacity), max_priority=jnp.ones((), jnp.float32))

    def after_add(state: PriorityState, replay_state: ReplayState) -> PriorityState:
        # The priorities after `replay.add` wrote global step t = `total_steps - 1`.
        t = replay_state.total_steps - 1
        entering, leaving = t - c.n_step, t - T + c.stack - 1
        # Negative steps name rows not written yet (t < T): their leaves are 0 and stay 0.
        enters = (entering >= c.stack - 1) & replay_state.is_transition[entering % T]
        index = jnp.concatenate([(leaving % T) * E + lanes, (entering % T) * E + lanes])
        values = jnp.concatenate([jnp.zeros((E,), jnp.float32), jnp.where(enters, state.max_priority, 0.0)])
        return state.replace(nodes=sum_tree.set_values(state.nodes, index, values))

    def add(replay_state: ReplayState, state: PriorityState, *step) -> tuple[ReplayState, PriorityState]:
        """Returns `(replay_state, priorities)` after `replay.add(replay_state, *step)`: the step
        written, the slot it completes entered at the largest priority, the slot it overwrote left."""
        replay_state = replay.add(replay_state, *step)
        return replay_state, after_add(state, replay_state)

    def step_of(replay_state: ReplayState, slot: jax.Array) -> jax.Array:
        newest = replay_state.total_steps - 1
        return newest - (newest - slot) % T

    def sample(replay_state: ReplayState, state: PriorityState, key: jax.Array, beta: jax.Array) -> PrioritizedSample:
        """Returns `batch_size` transitions drawn in proportion to their priorities (stratified),
        with importance weights for exponent `beta` []."""
        B = c.batch_size
        total = sum_tree.total(state.nodes)
        targets = (jnp.arange(B, dtype=jnp.float32) + jax.random.uniform(key, (B,))) * (total / B)
        leaf = sum_tree.find(state.nodes, targets)
        step, env = step_of(replay_state, leaf // E), leaf % E
        probabilities = sum_tree.get(state.nodes, leaf) / total
        weights = (jnp.min(probabilities) / probabilities) ** beta
        return PrioritizedSample(replay.gather(replay_state, step, env), SampleIndex(step=step, env=env),
                                 weights, probabilities)

    def update(state: PriorityState, index: SampleIndex, td_errors: jax.Array) -> PriorityState:
        """Returns the priorities with `(|td_errors| + ε) ** α` [B] written at the sampled slots."""
        chex.assert_equal_shape([index.step, td_errors])
        priority = (jnp.abs(td_errors) + epsilon) ** exponent
        # A NaN in the tree would break the descent's guarantees; the health rules report the NaN.
        priority = jnp.where(jnp.isfinite(priority), priority, state.max_priority).astype(jnp.float32)
        nodes = sum_tree.set_values(state.nodes, (index.step % T) * E + index.env, priority)
        return PriorityState(nodes=nodes, max_priority=jnp.maximum(state.max_priority, jnp.max(priority)))

    def stats(state: PriorityState, probabilities: jax.Array, beta: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns `(effective fraction, largest importance weight)`: the effective sample size of
        the sampling distribution, (Σp)² / Σp², over the number of sampleable slots; and the batch's
        largest weight before normalization, (N · min P(i)) ** -β. Both float32 []."""
        values = sum_tree.leaves(state.nodes)
        count = jnp.sum(values > 0).astype(jnp.float32)
        values = values / jnp.maximum(jnp.max(values), 1e-30)  # in [0, 1]: the squares cannot overflow
        effective = jnp.square(jnp.sum(values)) / jnp.maximum(jnp.sum(jnp.square(values)), 1e-30)
        fraction = effective / jnp.maximum(count, 1.0)
        largest_weight = (count * jnp.min(probabilities)) ** -beta
        return fraction, largest_weight

    return Prioritized(init, add, sample, update, stats)


def importance_exponent(start: float, end: float, begin_step: int, end_step: int) -> Callable[[jax.Array], jax.Array]:
    """Returns β as a function of the env step: `start` until `begin_step`, then linear to `end` at
    `end_step` (DQN Zoo anneals from when learning starts to the end of training)."""
    span = max(1, end_step - begin_step)

    def beta(env_steps: jax.Array) -> jax.Array:
        progress = jnp.clip((env_steps - begin_step) / span, 0.0, 1.0)
        return jnp.asarray(start + (end - start) * progress, jnp.float32)

    return beta
