"""The frame-deduplicated replay against a naive buffer that stores whole transitions."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dqn_jax.agent.replay import frame_of, make_replay


class FakePool:
    """Mimics EnvPool's auto-reset: after any done comes a reset step (reward 0, action ignored).

    After a hard done (game over, time limit) the new observation is `stack` copies of a new
    frame; after a soft done (a lost life) the stack just continues. Every frame is a distinct
    integer so that any mix-up of frames shows.
    """

    def __init__(self, num_envs, stack, frame_size, rng, p_done):
        self.E, self.stack, self.size, self.rng, self.p_done = num_envs, stack, frame_size, rng, p_done
        self.counter = 0
        self.stacks = [collections.deque(maxlen=stack) for _ in range(num_envs)]
        self.dead = np.zeros(num_envs, bool)
        self.dead_hard = np.zeros(num_envs, bool)
        for e in range(num_envs):
            self._hard_reset(e)

    def _frame(self):
        self.counter += 1
        return np.full(self.size, self.counter, np.int32)

    def _hard_reset(self, e):
        frame = self._frame()
        for _ in range(self.stack):
            self.stacks[e].append(frame)

    def obs(self):
        if self.stack == 1:
            return np.stack([s[-1] for s in self.stacks])
        return np.stack([np.stack(s) for s in self.stacks])

    def step(self):
        E = self.E
        reward = np.zeros(E, np.float32)
        terminated, truncated, hard = (np.zeros(E, bool) for _ in range(3))
        for e in range(E):
            if self.dead[e]:
                if self.dead_hard[e]:
                    self._hard_reset(e)
                else:
                    self.stacks[e].append(self._frame())
                continue
            self.stacks[e].append(self._frame())
            reward[e] = self.rng.normal()
            if self.rng.random() < self.p_done:
                kind = self.rng.integers(3)  # 0 life loss, 1 game over, 2 time limit
                terminated[e] = kind < 2
                truncated[e] = kind == 2
                hard[e] = kind > 0
        self.dead, self.dead_hard = terminated | truncated, hard
        return reward, terminated, truncated, hard


def fill(replay, pool, steps, rng):
    """Runs the pool, writing the replay as the loop does and a naive buffer alongside.

    Returns the final replay state and {(global step, env): (obs, action, reward, next_obs, terminated)}.
    """
    state = replay.init()
    naive = {}
    first = np.ones(pool.E, bool)
    add = jax.jit(replay.add)
    for g in range(steps):
        obs = pool.obs()
        was_dead, was_hard = pool.dead.copy(), pool.dead_hard.copy()
        action = rng.integers(0, 4, pool.E).astype(np.int32)
        reward, terminated, truncated, hard = pool.step()
        next_obs = pool.obs()
        state = add(state, frame_of(jnp.asarray(obs), pool.stack), action, reward, terminated,
                    ~was_dead, first)
        for e in range(pool.E):
            if not was_dead[e]:
                naive[(g, e)] = (obs[e], action[e], reward[e], next_obs[e], bool(terminated[e]))
        first = was_dead & was_hard
    return state, naive


def naive_n_step(naive, g, e, n_step, gamma):
    """Returns (obs, action, n-step reward, bootstrap obs, bootstrap discount) from the naive buffer."""
    obs, action = naive[(g, e)][:2]
    total, discount = 0.0, 1.0
    for k in range(n_step):
        _, _, reward, next_obs, terminated = naive[(g + k, e)]
        total += discount * float(reward)
        if terminated:
            return obs, action, total, next_obs, 0.0
        discount *= gamma
        if (g + k + 1, e) not in naive:  # the episode ended here: its final observation bootstraps
            break
    return obs, action, total, next_obs, discount


@pytest.mark.slow  # random layouts, each compiled anew (~3 s each); the fixed cases below run by default
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    num_envs=st.integers(1, 3),
    stack=st.sampled_from([1, 4]),
    n_step=st.sampled_from([1, 3]),
    ring_steps=st.integers(8, 40),
    steps=st.integers(6, 90),
    p_done=st.sampled_from([0.0, 0.1, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_samples_equal_naive_buffer(num_envs, stack, n_step, ring_steps, steps, p_done, seed):
    check_samples_equal_naive_buffer(num_envs, stack, n_step, ring_steps, steps, p_done, seed)


@pytest.mark.parametrize("num_envs, stack, n_step, ring_steps, steps, p_done, seed", [
    (3, 4, 3, 20, 90, 0.1, 1),  # wrapped 4 times, stacks and 3-step returns across resets
    (2, 1, 1, 40, 30, 0.5, 2),  # not yet wrapped, one-frame observations, frequent dones
    (1, 4, 1, 8, 60, 0.0, 3),  # the smallest ring, no dones
])
def test_samples_equal_naive_buffer_fixed_cases(num_envs, stack, n_step, ring_steps, steps, p_done, seed):
    check_samples_equal_naive_buffer(num_envs, stack, n_step, ring_steps, steps, p_done, seed)


def check_samples_equal_naive_buffer(num_envs, stack, n_step, ring_steps, steps, p_done, seed):
    """Every sampled transition (stacks, n-step reward and discount) equals the naive buffer's."""
    rng = np.random.default_rng(seed)
    gamma = 0.9
    pool = FakePool(num_envs, stack, (3,), rng, p_done)
    replay = make_replay(ring_steps, num_envs, (3,), jnp.int32, stack, batch_size=64, gamma=gamma, n_step=n_step)
    state, naive = fill(replay, pool, steps, rng)
    if not bool(replay.can_sample(state)):
        assert steps <= stack + n_step - 1
        return
    oldest = max(0, steps - ring_steps)
    sampleable = {k for k in naive if oldest + stack - 1 <= k[0] <= steps - 1 - n_step}
    if not sampleable:
        return  # every candidate slot is a reset step: nothing to compare
    batch, index = jax.jit(replay.sample)(state, jax.random.PRNGKey(seed))
    for i, (g, e) in enumerate(zip(np.asarray(index.step), np.asarray(index.env), strict=True)):
        assert (int(g), int(e)) in sampleable, "sampled a reset step or a slot outside the ring"
        obs, action, reward, next_obs, discount = naive_n_step(naive, int(g), int(e), n_step, gamma)
        np.testing.assert_array_equal(batch.obs_tm1[i], obs)
        np.testing.assert_array_equal(batch.obs_t[i], next_obs)
        assert int(batch.action_tm1[i]) == action
        assert float(batch.reward_t[i]) == pytest.approx(reward, rel=1e-5, abs=1e-6)
        assert float(batch.discount_t[i]) == pytest.approx(discount, rel=1e-6)


def test_n_step_return_stops_at_terminal_and_at_episode_end():
    # One env, stack 1; frames are step numbers. Steps 0-2 reward 1, 2, 4; step 2 is terminal, step 3
    # is the reset step; steps 4-5 reward 8, 16 and step 5 is truncated (no terminal), step 6 resets.
    replay = make_replay(16, 1, (1,), jnp.float32, 1, batch_size=512, gamma=0.5, n_step=3)
    state = replay.init()
    rewards = [1, 2, 4, 0, 8, 16, 0, 1, 1, 1, 1]
    terminals = [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    is_transition = [1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1]
    for g in range(len(rewards)):
        state = replay.add(state, jnp.array([[float(g)]]), jnp.zeros(1, jnp.int32),
                           jnp.array([rewards[g]], jnp.float32), jnp.array([bool(terminals[g])]),
                           jnp.array([bool(is_transition[g])]), jnp.array([False]))
    batch, index = jax.jit(replay.sample)(state, jax.random.PRNGKey(0))
    expected = {  # step: (reward, discount, bootstrap frame)
        0: (1 + 0.5 * 2 + 0.25 * 4, 0.0, 3.0),  # ends at the terminal step 2
        1: (2 + 0.5 * 4, 0.0, 3.0),
        2: (4, 0.0, 3.0),
        4: (8 + 0.5 * 16, 0.25, 6.0),  # the episode was cut at step 5: bootstrap from its final frame
        5: (16, 0.5, 6.0),
        7: (1 + 0.5 + 0.25, 0.125, 10.0),  # three whole steps
    }
    steps = np.asarray(index.step)
    assert set(steps.tolist()) == set(expected)
    for i, g in enumerate(steps.tolist()):
        reward, discount, frame = expected[g]
        assert float(batch.reward_t[i]) == pytest.approx(reward)
        assert float(batch.discount_t[i]) == pytest.approx(discount)
        assert float(batch.obs_t[i, 0]) == frame


def test_reset_steps_are_never_sampled():
    # Every other step of env 0 is a reset step (p_done = 1): half its slots are not transitions.
    rng = np.random.default_rng(0)
    pool = FakePool(2, 4, (3,), rng, p_done=1.0)
    replay = make_replay(64, 2, (3,), jnp.int32, 4, batch_size=4096, gamma=0.99)
    state, naive = fill(replay, pool, 60, rng)
    _, index = jax.jit(replay.sample)(state, jax.random.PRNGKey(1))
    sampled = set(zip(np.asarray(index.step).tolist(), np.asarray(index.env).tolist(), strict=True))
    assert sampled <= set(naive)
    reset_steps = {(g, e) for g in range(60) for e in range(2)} - set(naive)
    assert len(reset_steps) >= 50 and not sampled & reset_steps


def test_sampling_is_uniform_over_transitions():
    rng = np.random.default_rng(3)
    pool = FakePool(2, 1, (1,), rng, p_done=0.0)
    replay = make_replay(16, 2, (1,), jnp.int32, 1, batch_size=20_000, gamma=0.99)
    state, _ = fill(replay, pool, 12, rng)
    _, index = jax.jit(replay.sample)(state, jax.random.PRNGKey(0))
    counts = collections.Counter(zip(np.asarray(index.step).tolist(), np.asarray(index.env).tolist(), strict=True))
    assert set(counts) == {(g, e) for g in range(11) for e in range(2)}  # step 11 has no next frame yet
    expected = 20_000 / 22
    assert all(abs(c - expected) < 5 * expected**0.5 for c in counts.values())


def test_invalid_settings_raise():
    with pytest.raises(ValueError, match="ring_steps"):
        make_replay(3, 1, (84, 84), jnp.uint8, 4, 32, gamma=0.99)
    with pytest.raises(ValueError, match="stack"):
        make_replay(10, 1, (4,), jnp.float32, 0, 32, gamma=0.99)
    with pytest.raises(ValueError, match="n_step"):
        make_replay(10, 1, (4,), jnp.float32, 1, 32, gamma=0.99, n_step=0)
