"""The frame-deduplicated replay on real Atari games: rebuilt stacks equal EnvPool's observations,
and the loop's games are the games EnvPool played, a game over inside a soft reset's no-ops included."""

from __future__ import annotations

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ConstantQ

from dqn_jax.config import validate
from dqn_jax.loop import envs
from dqn_jax.loop.loop import agent_keys, build_loop
from dqn_jax.loop.schedule import ChunkSchedule, run_chunks
from dqn_jax.run import presets

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
        self.games = collections.defaultdict(list)  # env -> raw returns of its games, in order
        self.game_return = self.lives = self.dead = self.hard = None

    def _end_games(self, where):
        for e in np.flatnonzero(where):
            self.games[int(e)].append(float(self.game_return[e]))
        self.game_return[where] = 0.0

    def __getattr__(self, name):
        return getattr(self.pool, name)

    def reset(self):
        obs, info = self.pool.reset()
        self.obs.append(obs.copy())
        self.game_return = np.zeros(len(obs))
        self.lives, self.dead, self.hard = info["lives"].copy(), np.zeros(len(obs), bool), np.zeros(len(obs), bool)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.pool.step(action)
        if len(self.obs) == self.obs.maxlen:
            self.start += 1
        self.steps.append((np.array(action), reward.copy(), terminated.copy()))
        self.obs.append(obs.copy())
        game_over = info["terminated"] == 1
        # After a lost life EnvPool's reset runs its no-ops; a game over among them restarts the
        # game, and only the lives (back up to the game's start) show it.
        new_game = self.dead & ~self.hard & (info["lives"] > self.lives)
        self._end_games(new_game)
        real = ~self.dead
        self.game_return[real] += info["reward"][real]
        self._end_games(real & (game_over | truncated))
        self.counts.update(life_loss=int((terminated & ~game_over).sum()), game_over=int(game_over.sum()),
                           truncation=int(truncated.sum()), new_game_in_noops=int(new_game.sum()))
        self.lives, self.dead, self.hard = info["lives"].copy(), terminated | truncated, game_over | truncated
        return obs, reward, terminated, truncated, info


# (game, its actions, no-ops, time limit, the fewest boundaries of each kind the run must cross)
GAMES = {
    "breakout": ("Breakout", 4, 30, 200, dict(life_loss=100, game_over=20, truncation=5)),
    # 600 no-ops (2,400 idle frames) after each lost life: the invaders win games in them. (Not many
    # more: after 2,000 one new game in ~50 had lost a life too before the agent acted, and its
    # lives, the only sign, did not go up.)
    "space_invaders_long_noops": ("SpaceInvaders", 6, 600, 2_000, dict(life_loss=30, new_game_in_noops=5)),
}


@pytest.mark.parametrize("case", GAMES)
def test_rebuilt_stacks_and_games_are_envpools(monkeypatch, case):
    game, num_actions, noop_max, max_episode_steps, least = GAMES[case]
    config = validate(dataclasses.replace(
        presets.preset(game),
        num_envs=NUM_ENVS, loop="host", replay_capacity=400 * NUM_ENVS, learning_starts=400 * NUM_ENVS,
        batch_size=512, train_every=NUM_ENVS * 10**6,  # never learns: this test is about the data
        epsilon_start=1.0, epsilon_end=1.0, noop_max=noop_max, max_episode_steps=max_episode_steps,
        progress=False))
    recorders = []
    make = envs.make_train_pool
    monkeypatch.setattr(envs, "make_train_pool",
                        lambda *args, **kw: recorders.append(RecordingPool(make(*args, **kw), keep=CHECK_EVERY + 8))
                        or recorders[-1])
    loop = build_loop(config, network=ConstantQ(num_actions=num_actions))  # ε = 1: acting never needs a real network
    (recorder,) = recorders
    replay = loop.replay
    state = loop.init(agent_keys(config))
    stack_at = jax.jit(replay.stack_at)
    sample = jax.jit(replay.sample)
    checked_stacks = checked_samples = 0
    games = collections.defaultdict(list)  # env -> the loop's raw returns of the games that ended

    schedule = ChunkSchedule(NUM_ENVS, chunk_iterations=CHECK_EVERY, total_iterations=VECTOR_STEPS)
    for chunk in run_chunks(loop, state, schedule):
        replay_state = jax.tree.map(lambda x: x[0], chunk.state.agents.replay)
        experience = chunk.records.experience
        for k, e in zip(*np.nonzero(np.asarray(experience.episode_done)[:, 0]), strict=True):
            games[int(e)].append(float(experience.episode_return[k, 0, e]))
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
    for kind, fewest in least.items():
        assert recorder.counts[kind] > fewest, recorder.counts
    assert games == recorder.games  # the same games, in the same order, with the same returns
    assert checked_stacks == VECTOR_STEPS * NUM_ENVS
    assert checked_samples > 1_000
