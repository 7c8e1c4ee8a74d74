"""Environments: seeds derived from the run seed, pools that repeat, and EnvPool's done semantics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dqn_jax import games
from dqn_jax.config import ConfigError
from dqn_jax.loop import envs
from dqn_jax.run import presets


def test_env_seeds_are_hashed_not_consecutive():
    a, b = envs.env_seeds(0, 8, stream=0), envs.env_seeds(1, 8, stream=0)
    assert len(set(a)) == 8 and not set(a) & set(b)  # EnvPool's own seed + i would share 7 of 8
    assert envs.env_seeds(0, 8, stream=0) == a  # repeatable
    assert not set(envs.env_seeds(0, 8, stream=1)) & set(a)  # evaluation envs are others
    assert not set(envs.env_seeds(0, 8, stream=(0, 4000))) & set(a)  # so are envs restarted on resume


def test_game_names():
    assert games.canonical_game("cartpole-v1") == "CartPole" and games.canonical_game("pong-v5") == "Pong"
    assert games.task_id("Pong") == "Pong-v5" and games.task_id("CartPole") == "CartPole-v1"
    assert "MsPacman" in games.atari_games() and len(games.atari_games()) > 50
    with pytest.raises(ConfigError, match="did you mean Breakout"):
        games.canonical_game("Breakot")
    # EnvPool's MuJoCo tasks share the `-v5` suffix; they are not Atari games.
    assert not {"Ant", "Hopper", "HalfCheetah"} & set(games.atari_games())
    with pytest.raises(ConfigError, match="not an EnvPool game"):
        games.canonical_game("Ant")
    assert games.ale_name("MsPacman") == "ms_pacman" and games.ale_name("CartPole") is None


ACTIONS = np.random.default_rng(0).integers(0, 2, (60, 6))  # [steps, envs] for up to 6 envs


def _trajectory(config, actions):
    pool = envs.make_train_pool(config)
    obs, _ = pool.reset()
    out = [obs]
    for action in actions:
        out.append(pool.step(action)[0])
    pool.close()
    return np.stack(out)


def test_training_pools_repeat_and_agents_own_blocks_of_envs():
    config = dataclasses.replace(presets.preset("CartPole"), num_envs=3, num_seeds=2)
    first, again = _trajectory(config, ACTIONS), _trajectory(config, ACTIONS)
    np.testing.assert_array_equal(first, again)
    # Agent 1 of the pool (envs 3-5) plays what a one-agent pool of seed 1 plays.
    alone = _trajectory(dataclasses.replace(config, num_seeds=1, seed=1), ACTIONS[:, 3:])
    np.testing.assert_array_equal(first[:, 3:], alone)


def test_done_semantics_hard_done_and_raw_reward():
    terminated, truncated = np.array([True, True, False, False]), np.array([False, False, True, False])
    info = {"terminated": np.array([0, 1, 0, 0]), "reward": np.array([2.0, -5.0, 0.0, 1.0])}
    # A lost life (terminated, not info["terminated"]) is not a hard done; a game over and a time limit are.
    np.testing.assert_array_equal(envs.hard_done(terminated, truncated, info), [False, True, True, False])
    np.testing.assert_array_equal(envs.hard_done(terminated, truncated, {}), [True, True, True, False])
    np.testing.assert_array_equal(envs.raw_reward(np.sign(info["reward"]), info), info["reward"])


def test_cartpole_facts():
    facts = envs.facts(envs.make_eval_pool(dataclasses.replace(presets.preset("CartPole"), eval_episodes=2)))
    assert facts.obs_shape == (4,) and facts.num_actions == 2 and facts.frame_shape == (4,)
    assert envs.EnvFacts((4, 84, 84), np.dtype(np.uint8), 6).frame_shape == (84, 84)


def _spec(pool) -> dict:
    keys = ("noop_max", "use_fire_reset", "repeat_action_probability", "full_action_space", "episodic_life",
            "reward_clip", "max_episode_steps")
    return {key: pool.config[key] for key in keys}


@pytest.mark.parametrize("flipped", [False, True])
def test_every_atari_setting_reaches_the_training_and_the_evaluation_pool(flipped):
    # Each setting away from EnvPool's default in one case and at it in the other, so a setting
    # that is dropped on its way to a pool shows in one of the two.
    config = dataclasses.replace(
        presets.preset("Breakout"), num_envs=2, eval_episodes=2, noop_max=7 if flipped else 30,
        fire_reset=flipped, repeat_action_probability=0.25 if flipped else 0.0, full_action_space=flipped,
        episodic_life=not flipped, reward_clip=not flipped, max_episode_steps=1_234 if flipped else 27_000,
        eval_max_episode_steps=4_321 if flipped else 27_000)
    train, evaluation = envs.make_train_pool(config), envs.make_eval_pool(config)
    shared = dict(noop_max=config.noop_max, use_fire_reset=config.fire_reset,
                  repeat_action_probability=config.repeat_action_probability,
                  full_action_space=config.full_action_space)
    assert _spec(train) == dict(shared, episodic_life=config.episodic_life, reward_clip=config.reward_clip,
                                max_episode_steps=config.max_episode_steps)
    # Evaluation plays whole games for raw scores: no lost-life terminal, no clipping, its own cap.
    assert _spec(evaluation) == dict(shared, episodic_life=False, reward_clip=False,
                                     max_episode_steps=config.eval_max_episode_steps)
    assert envs.facts(train).num_actions == envs.facts(evaluation).num_actions == (18 if flipped else 4)
    train.close()
    evaluation.close()


def test_fire_reset_is_off_by_default_as_in_dqn_zoo_and_dopamine():
    assert not presets.preset("Breakout").fire_reset and not presets.preset("Pong").fire_reset
    pool = envs.make_eval_pool(dataclasses.replace(presets.preset("Breakout"), eval_episodes=1))
    assert pool.config["use_fire_reset"] is False  # EnvPool's own default is True
    pool.close()
