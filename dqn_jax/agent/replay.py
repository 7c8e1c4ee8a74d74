"""Uniform replay that stores each frame once, in a ring laid out `[time, env]`.

Every env step writes one time slot for all environments: the newest frame of the observation the
action was chosen from, the action, the reward that followed, whether that step was terminal for
the TD target, whether the step was a real transition, and whether the observation starts a new
frame stack. Stacks are rebuilt at sample time by walking back from a slot and stopping at the
stack's first frame, so Atari needs ~7 KB per transition instead of 28-56 KB.

EnvPool facts this layout follows (see docs/DESIGN.md, "Frames stored once"):
- the step after any done is a reset step: its action is ignored and its reward is 0. It is
  written (its frame is the terminal observation, the `next_obs` of the transition before it) but
  marked `is_transition = False`, so it is never sampled;
- after a game over or time limit (a hard reset) the new observation is 4 copies of its first
  frame: that slot is marked `first`, and stacks never reach past it;
- after a lost life (`episodic_life`) the transition is terminal but the stack continues.

A slot `g` (global time index) can be sampled when slots `g + 1 .. g + n_step` are written (the
next frames) and slots `g - stack + 1 .. g` are still in the ring.

n-step returns walk forward from `g`, summing discounted rewards, and stop at a terminal step
(no bootstrap), at the step before a reset step (the episode ended: bootstrap from its final
observation) or after `n_step` steps.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
from flax import struct

MAX_REDRAWS = 100  # each redraw halves the chance of a reset step at worst: 2**-100 is never


@struct.dataclass
class ReplayState:
    """The replay's arrays. T = ring length (time slots), E = environments."""

    frames: jax.Array  # [T, E, *frame_shape] newest frame of the observation acted on
    actions: jax.Array  # [T, E] int32
    rewards: jax.Array  # [T, E] float32, the (clipped) reward that followed the action
    terminals: jax.Array  # [T, E] bool, no bootstrapping from the next observation
    is_transition: jax.Array  # [T, E] bool, False for EnvPool's reset steps
    firsts: jax.Array  # [T, E] bool, the observation is the first of a stack (hard reset)
    total_steps: jax.Array  # [] int32, time slots written since init (global time index)


@struct.dataclass
class Transition:
    """A batch of transitions, B = batch size."""

    obs_tm1: jax.Array  # [B, *obs_shape]
    action_tm1: jax.Array  # [B] int32
    reward_t: jax.Array  # [B] float32
    discount_t: jax.Array  # [B] float32, gamma ** (steps summed), or 0 when the return ended at a terminal
    obs_t: jax.Array  # [B, *obs_shape], the observation bootstrapped from


@struct.dataclass
class SampleIndex:
    """Where each sampled transition came from."""

    step: jax.Array  # [B] int32 global time index (slot = step % T)
    env: jax.Array  # [B] int32 environment index


class Replay(NamedTuple):
    """Pure functions over `ReplayState`, with the static settings bound in."""

    init: Callable[[], ReplayState]
    add: Callable[..., ReplayState]
    sample: Callable[[ReplayState, jax.Array], tuple[Transition, SampleIndex]]
    can_sample: Callable[[ReplayState], jax.Array]
    sampleable: Callable[[ReplayState], jax.Array]
    stack_at: Callable[[ReplayState, jax.Array, jax.Array], jax.Array]
    gather: Callable[[ReplayState, jax.Array, jax.Array], Transition]
    ring_steps: int
    num_envs: int
    settings: ReplaySettings


@dataclasses.dataclass(frozen=True)
class ReplaySettings:
    """The static settings a replay's functions are bound to (see `make_replay` for each)."""

    ring_steps: int
    num_envs: int
    frame_shape: tuple[int, ...]
    frame_dtype: object
    stack: int
    batch_size: int
    gamma: float
    n_step: int


def make_replay(
    ring_steps: int,
    num_envs: int,
    frame_shape: tuple[int, ...],
    frame_dtype,
    stack: int,
    batch_size: int,
    *,
    gamma: float,
    n_step: int = 1,
) -> Replay:
    """Returns the replay functions for a ring of `ring_steps` slots of `num_envs` envs each.

    Args:
      ring_steps: time slots T; capacity in transitions is `ring_steps * num_envs`.
      num_envs: environments E written at every step.
      frame_shape: shape of one stored frame ((84, 84) for Atari, (4,) for CartPole).
      frame_dtype: dtype of the frames (uint8 for Atari).
      stack: frames per observation; 1 means the observation is the frame itself.
      batch_size: transitions per `sample` call.
      gamma: discount per env step, folded into each sampled transition's `discount_t`.
      n_step: rewards summed per transition before bootstrapping (env steps; 1 = one-step returns).

    Raises:
      ValueError: a setting is impossible.
    """
    if stack < 1:
        raise ValueError(f"stack = {stack}: must be >= 1")
    if num_envs < 1 or batch_size < 1:
        raise ValueError(f"num_envs = {num_envs}, batch_size = {batch_size}: both must be >= 1")
    if n_step < 1:
        raise ValueError(f"n_step = {n_step}: must be >= 1")
    if ring_steps < stack + n_step:
        raise ValueError(f"ring_steps = {ring_steps}: must be >= stack + n_step = {stack + n_step}")
    settings = ReplaySettings(ring_steps, num_envs, tuple(frame_shape), frame_dtype, stack, batch_size, gamma, n_step)
    bind = functools.partial
    return Replay(bind(_init, settings), bind(_add, settings), bind(_sample, settings),
                  bind(_can_sample, settings), bind(_sampleable, settings), bind(_stack_at, settings),
                  bind(_gather, settings),
                  ring_steps, num_envs, settings)


def _init(c: ReplaySettings) -> ReplayState:
    """Returns an empty replay."""
    T, E = c.ring_steps, c.num_envs
    # Separate buffers per field: donation rejects one buffer passed twice.
    return ReplayState(
        frames=jnp.zeros((T, E, *c.frame_shape), c.frame_dtype),
        actions=jnp.zeros((T, E), jnp.int32),
        rewards=jnp.zeros((T, E), jnp.float32),
        terminals=jnp.zeros((T, E), bool),
        is_transition=jnp.zeros((T, E), bool),
        firsts=jnp.zeros((T, E), bool),
        total_steps=jnp.zeros((), jnp.int32),
    )


def _add(c: ReplaySettings, state: ReplayState, frame, action, reward, terminal, is_transition, first) -> ReplayState:
    """Writes one env step of every environment (all arguments lead with [E])."""
    chex.assert_shape(frame, (c.num_envs, *c.frame_shape))
    chex.assert_shape([action, reward, terminal, is_transition, first], (c.num_envs,))
    slot = state.total_steps % c.ring_steps

    def put(array, value):
        return jax.lax.dynamic_update_index_in_dim(array, value.astype(array.dtype), slot, 0)

    return state.replace(
        frames=put(state.frames, frame),
        actions=put(state.actions, action),
        rewards=put(state.rewards, reward),
        terminals=put(state.terminals, terminal),
        is_transition=put(state.is_transition, is_transition),
        firsts=put(state.firsts, first),
        total_steps=state.total_steps + 1,
    )


def _stack_at(c: ReplaySettings, state: ReplayState, step: jax.Array, env: jax.Array) -> jax.Array:
    """Returns the observations at global steps `step` [B] of envs `env` [B]: [B, *obs_shape]."""
    T = c.ring_steps
    slot = step % T
    if c.stack == 1:
        return state.frames[slot, env]
    slots = [slot]
    for _ in range(c.stack - 1):
        # Walk back one slot unless the current one starts the stack; then repeat it.
        slot = jnp.where(state.firsts[slot, env], slot, (slot - 1) % T)
        slots.append(slot)
    ordered = jnp.stack(slots[::-1], axis=1)  # [B, stack], oldest first
    return state.frames[ordered, env[:, None]]


def _written(c: ReplaySettings, state: ReplayState) -> jax.Array:
    return jnp.minimum(state.total_steps, c.ring_steps)


def _sampleable_steps(c: ReplaySettings, state: ReplayState) -> tuple[jax.Array, jax.Array]:
    """Returns `(first, last)` [] int32: the global steps that can be sampled are first ... last —
    a whole stack in the ring before them and their next `n_step` frames written (reset steps
    among them excepted). Empty (last < first) until enough steps are written."""
    first = state.total_steps - _written(c, state) + c.stack - 1
    return first, state.total_steps - 1 - c.n_step


def _can_sample(c: ReplaySettings, state: ReplayState) -> jax.Array:
    """Returns True when at least one slot has its whole stack and its next `n_step` frames."""
    first, last = _sampleable_steps(c, state)
    return last >= first


def _sampleable(c: ReplaySettings, state: ReplayState) -> jax.Array:
    """Returns [T, E] bool by slot: the transitions `sample` may draw (a whole stack, the next
    `n_step` frames written, not a reset step)."""
    T = c.ring_steps
    steps = state.total_steps - 1 - jnp.arange(T)  # the slots' global steps, newest first
    first, last = _sampleable_steps(c, state)
    by_slot = jnp.zeros((T,), bool).at[steps % T].set((steps >= first) & (steps <= last))
    return by_slot[:, None] & state.is_transition


def _draw_indices(c: ReplaySettings, state: ReplayState, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns `(step, env)` [B] drawn uniformly from the sampleable slots, reset steps redrawn."""
    first, last = _sampleable_steps(c, state)

    def draw(key):
        step_key, env_key = jax.random.split(key)
        step = first + jax.random.randint(step_key, (c.batch_size,), 0, last - first + 1)
        env = jax.random.randint(env_key, (c.batch_size,), 0, c.num_envs)
        return step, env

    def bad(step, env):
        return ~state.is_transition[step % c.ring_steps, env]

    def redraw(carry):
        key, step, env, rounds = carry
        key, draw_key = jax.random.split(key)
        new_step, new_env = draw(draw_key)
        retry = bad(step, env)
        return key, jnp.where(retry, new_step, step), jnp.where(retry, new_env, env), rounds + 1

    def keep_going(carry):
        _, step, env, rounds = carry
        return jnp.any(bad(step, env)) & (rounds < MAX_REDRAWS)

    key, first_key = jax.random.split(key)
    step, env = draw(first_key)
    _, step, env, _ = jax.lax.while_loop(keep_going, redraw, (key, step, env, 0))
    return step, env


def _sample(c: ReplaySettings, state: ReplayState, key: jax.Array) -> tuple[Transition, SampleIndex]:
    """Returns `batch_size` transitions drawn uniformly from the sampleable ones."""
    step, env = _draw_indices(c, state, key)
    return _gather(c, state, step, env), SampleIndex(step=step, env=env)


def _gather(c: ReplaySettings, state: ReplayState, step: jax.Array, env: jax.Array) -> Transition:
    """Returns the transitions at global steps `step` [B] of envs `env` [B] (sampleable ones), their
    stacks rebuilt and their n-step returns summed."""
    reward, discount, steps_summed = _n_step_return(c, state, step, env)
    return Transition(
        obs_tm1=_stack_at(c, state, step, env),
        action_tm1=state.actions[step % c.ring_steps, env],
        reward_t=reward,
        discount_t=discount,
        obs_t=_stack_at(c, state, step + steps_summed, env),
    )


def _n_step_return(c: ReplaySettings, state: ReplayState, step: jax.Array, env: jax.Array):
    """Returns (discounted reward sum [B], bootstrap discount [B], steps summed [B] int32)."""
    T = c.ring_steps
    reward = jnp.zeros(step.shape, jnp.float32)
    discount = jnp.ones(step.shape, jnp.float32)
    summing = jnp.ones(step.shape, bool)
    steps_summed = jnp.zeros(step.shape, jnp.int32)
    for k in range(c.n_step):
        slot = (step + k) % T
        reward = reward + jnp.where(summing, discount * state.rewards[slot, env], 0.0)
        terminal = state.terminals[slot, env]
        discount = jnp.where(summing, jnp.where(terminal, 0.0, discount * c.gamma), discount)
        steps_summed = steps_summed + summing
        # Go on only through a real transition of the same episode.
        if k + 1 < c.n_step:
            summing = summing & ~terminal & state.is_transition[(slot + 1) % T, env]
    return reward, discount, steps_summed


def end_in_flight(state: ReplayState) -> ReplayState:
    """Returns the replay with its newest slot marked as no transition, for every env.

    Use when the environments restart without a done (resuming from a checkpoint): the newest
    slot's next frame was never written, and the next slot will hold a new episode's first frame.
    """
    newest = (state.total_steps - 1) % state.is_transition.shape[0]
    is_transition = state.is_transition.at[newest].set(False)
    return state.replace(is_transition=jnp.where(state.total_steps > 0, is_transition, state.is_transition))


def frame_of(obs: jax.Array, stack: int) -> jax.Array:
    """Returns the part of a batch of observations [E, ...] that is new at this step."""
    return obs[:, -1] if stack > 1 else obs


def bytes_per_transition(state: ReplayState) -> float:
    """Returns the replay's memory per stored transition (bytes), all arrays included."""
    leaves = jax.tree.leaves(state)
    total = sum(leaf.size * leaf.dtype.itemsize for leaf in leaves)
    return total / (state.actions.shape[0] * state.actions.shape[1])


def fill_with_random_steps(replay: Replay, state: ReplayState, steps: int, key: jax.Array,
                           num_actions: int, done_probability: float = 0.01) -> ReplayState:
    """Returns `state` with `steps` env steps of random frames, actions and dones written (one agent).

    For measuring or testing the learner without an environment: frames are uniform in [0, 255)
    (integer frames) or standard normal (float frames), every reward is 1, and each step ends an
    episode with `done_probability` (terminal, never a reset step).
    """
    E = replay.num_envs
    frame_shape, dtype = state.frames.shape[2:], state.frames.dtype

    def add_one(replay_state, step_key):
        frame_key, action_key, end_key = jax.random.split(step_key, 3)
        if jnp.issubdtype(dtype, jnp.integer):
            frame = jax.random.randint(frame_key, (E, *frame_shape), 0, 255).astype(dtype)
        else:
            frame = jax.random.normal(frame_key, (E, *frame_shape), dtype)
        action = jax.random.randint(action_key, (E,), 0, num_actions)
        terminal = jax.random.uniform(end_key, (E,)) < done_probability
        return replay.add(replay_state, frame, action, jnp.ones((E,)), terminal, jnp.ones((E,), bool),
                          jnp.zeros((E,), bool)), None

    return jax.lax.scan(add_one, state, jax.random.split(key, steps))[0]
