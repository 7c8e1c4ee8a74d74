"""The frame-deduplicated replay on real Breakout: rebuilt stacks equal EnvPool's observations."""

from __future__ import annotations

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ConstantQ

from dqn_jax import envs, presets
from dqn_jax.config import validate
from dqn_jax.loop import agent_keys, build_loop
from dqn_jax.schedule import ChunkSchedule, run_chunks

NUM_ENVS = 8
VECTOR_STEPS = 2_000
CHECK_EVERY = 250  # vector steps between checks; the ring holds 400, so it wraps 5 times


class RecordingPool:
    """Passes calls to an EnvPool pool and keeps the last steps' observations, actions and flags."""

    def __init__(self, pool, keep: int):
        self.pool = pool
        self.obs = collections.deque(maxlen=keep)  # obs[g] = the observation acted on at step g
        # (action, reward, terminated) of step g; one fewer: the newest observation has no step yet
        self.steps = collections.deque(maxlen=keep - 1)
        self.start = 0  # global step of obs[0]
        self.counts = collections.Counter()

    def __getattr__(self, name):
        return getattr(self.pool, name)

    def reset(self):
        obs, info = self.pool.reset()
        self.obs.append(obs.copy())
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.pool.step(action)
        if len(self.obs) == self.obs.maxlen:
            self.start += 1
        self.steps.append((np.array(action), reward.copy(), terminated.copy()))
        self.obs.append(obs.copy())
        game_over = info["terminated"] == 1
        self.counts.update(life_loss=int((terminated & ~game_over).sum()),
                           game_over=int(game_over.sum()), truncation=int(truncated.sum()))
        return obs, reward, terminated, truncated, info


def test_rebuilt_stacks_equal_envpool_observations_on_breakout(monkeypatch):
    config = validate(dataclasses.replace(
        presets.preset("Breakout"),
        num_envs=NUM_ENVS, loop="host", replay_capacity=400 * NUM_ENVS, learning_starts=400 * NUM_ENVS,
        batch_size=512, train_every=NUM_ENVS * 10**6,  # never learns: this test is about the data
        epsilon_start=1.0, epsilon_end=1.0, max_episode_steps=200, progress=False))
    recorders = []
    make = envs.make_train_pool
    monkeypatch.setattr(envs, "make_train_pool",
                        lambda *args, **kw: recorders.append(RecordingPool(make(*args, **kw), keep=CHECK_EVERY + 8))
                        or recorders[-1])
    loop = build_loop(config, network=ConstantQ(num_actions=4))  # ε = 1: acting never needs a real network
    (recorder,) = recorders
    replay = loop.replay
    state = loop.init(agent_keys(config))
    stack_at = jax.jit(replay.stack_at)
    sample = jax.jit(replay.sample)
    checked_stacks = checked_samples = 0

    schedule = ChunkSchedule(NUM_ENVS, chunk_iterations=CHECK_EVERY, total_iterations=VECTOR_STEPS)
    for chunk in run_chunks(loop, state, schedule):
        replay_state = jax.tree.map(lambda x: x[0], chunk.state.agents.replay)
        total = int(replay_state.total_steps)
        assert total == chunk.end_iteration

        # Every slot written in this chunk (the stack's reach included) against EnvPool's obs.
        first_step = max(recorder.start, total - CHECK_EVERY)
        steps = np.repeat(np.arange(first_step, total), NUM_ENVS)
        envs_ = np.tile(np.arange(NUM_ENVS), total - first_step)
        rebuilt = np.asarray(stack_at(replay_state, jnp.asarray(steps), jnp.asarray(envs_)))
        expected = np.stack([recorder.obs[g - recorder.start][e] for g, e in zip(steps, envs_, strict=True)])
        np.testing.assert_array_equal(rebuilt, expected)
        checked_stacks += len(steps)

        # Sampled transitions against what a buffer of whole stacks returns for the same indices.
        batch, index = sample(replay_state, jax.random.PRNGKey(chunk.end_iteration))
        batch = jax.device_get(batch)
        for i, (g, e) in enumerate(zip(np.asarray(index.step), np.asarray(index.env), strict=True)):
            if g < recorder.start:
                continue  # older than what the recorder keeps
            action, reward, terminated = recorder.steps[g - recorder.start]
            np.testing.assert_array_equal(batch.obs_tm1[i], recorder.obs[g - recorder.start][e])
            np.testing.assert_array_equal(batch.obs_t[i], recorder.obs[g + 1 - recorder.start][e])
            assert batch.action_tm1[i] == action[e]
            assert batch.reward_t[i] == reward[e]
            assert batch.discount_t[i] == pytest.approx(0.0 if terminated[e] else loop.config.gamma)
            checked_samples += 1

    # The run must have crossed every kind of boundary, or the test proved little.
    assert recorder.counts["life_loss"] > 100, recorder.counts
    assert recorder.counts["game_over"] > 20, recorder.counts
    assert recorder.counts["truncation"] > 5, recorder.counts
    assert checked_stacks == VECTOR_STEPS * NUM_ENVS
    assert checked_samples > 1_000
