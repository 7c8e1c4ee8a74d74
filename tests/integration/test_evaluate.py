"""Evaluation: videos, and games cut by the evaluation cap (scoring a run: test_train.py's tiny run)."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
from helpers import ConstantQ

from dqn_jax.run.evaluate import write_video
from dqn_jax.run.metrics import read_metrics


def test_write_video_round_trip(tmp_path):
    frames = [np.full((84, 84), 8 * i, np.uint8) for i in range(30)]
    path = write_video(frames, tmp_path / "episode")
    reader = imageio.get_reader(path)
    first, last = reader.get_data(0), reader.get_data(29)
    assert first.shape[:2] == (336, 336)  # upscaled 4x
    assert abs(int(first.mean()) - 0) <= 4 and abs(int(last.mean()) - 8 * 29) <= 4


def test_record_video_writes_the_best_evaluation_game(tmp_path):
    import dataclasses

    from dqn_jax.config import validate
    from dqn_jax.run import presets
    from dqn_jax.run.checkpoint import load_best_params
    from dqn_jax.run.train import train

    config = validate(dataclasses.replace(
        presets.preset("Breakout"), total_steps=800, num_envs=4, replay_capacity=1_000, learning_starts=1_000,
        batch_size=32, eval_every=800, eval_episodes=1, max_episode_steps=300, eval_max_episode_steps=300,
        chunk_steps=400,
        record_video=True, progress=False))
    train(config, run_dir=tmp_path, network=ConstantQ(num_actions=4))  # never learns: 800 < learning_starts
    reader = imageio.get_reader(tmp_path / "best_eval.mp4")
    assert reader.count_frames() > 20  # one whole (capped) game
    _, meta = load_best_params(tmp_path, seed=0)
    assert meta["env_steps"] == 800
    (row,) = read_metrics(tmp_path, "eval")
    assert row["eval_truncated"] == 1 and row["eval_length_mean"] == 300  # a paddle that never moves: cut

    assert row["eval_q_start"] == 0.0 and row["eval_value_realized"] == 0.0  # no serve, no point, Q = 0


def test_evaluation_measures_q_at_the_first_state_against_the_discounted_reward_that_followed(tiny_cartpole):
    import dataclasses

    import jax.numpy as jnp

    from dqn_jax.run.evaluate import Evaluator, training_rewards

    config = dataclasses.replace(tiny_cartpole, num_seeds=2, eval_episodes=3, reward_scale=0.5)
    params = {"params": {"bias": jnp.array([[2.0, 7.0], [-1.0, -3.0]])}}  # [S=2, actions]
    result = Evaluator(config, ConstantQ(num_actions=2)).run(params, env_steps=0)
    np.testing.assert_array_equal(result.q_start, [[7.0] * 3, [-1.0] * 3])
    # CartPole pays 1 per step: the realized value of a game of L steps is 0.5 * (1 - γ^L) / (1 - γ).
    gamma = config.gamma
    np.testing.assert_allclose(result.value_realized, 0.5 * (1 - gamma ** result.lengths) / (1 - gamma), rtol=1e-9)
    pong = dataclasses.replace(config, game="Pong")
    np.testing.assert_array_equal(training_rewards(pong, np.array([-3.0, 0.0, 2.0])), [-0.5, 0.0, 0.5])  # sign, scaled


def test_a_loaded_policy_acts_past_65536_calls_with_fresh_exploration(tiny_cartpole, tmp_path):
    import dataclasses

    from dqn_jax.run.evaluate import load_policy
    from dqn_jax.run.train import train

    train(dataclasses.replace(tiny_cartpole, total_steps=800, eval_every=800, final_eval_episodes=0), run_dir=tmp_path)
    policy, again = load_policy(tmp_path, epsilon=1.0, seed=0), load_policy(tmp_path, epsilon=1.0, seed=0)
    obs = np.zeros((64, 4), np.float32)  # every action random (ε = 1): the exploration keys show in the actions
    first = [policy(obs) for _ in range(20)]
    assert len({a.tobytes() for a in first}) == 20  # a new key per call
    assert all(np.array_equal(a, again(obs)) for a in first)  # the same keys for the same seed
    policy.calls = again.calls = 2**16  # the old policy had pre-split 2**16 keys and stopped there
    late = [policy(obs) for _ in range(3)]
    assert len({a.tobytes() for a in late + first}) == 23 and all(np.array_equal(a, again(obs)) for a in late)


def test_evaluations_of_a_run_and_of_the_evaluate_command_play_different_games():
    from dqn_jax.loop import envs
    from dqn_jax.run.evaluate import COMMAND_STREAM, FINAL_SCORING_STREAM, TRAINING_STREAM

    streams = (TRAINING_STREAM, FINAL_SCORING_STREAM, COMMAND_STREAM)
    seeds = [set(envs.env_seeds(3, 30, stream=s)) for s in streams]
    assert len(set(streams)) == 3 and all(not a & b for i, a in enumerate(seeds) for b in seeds[i + 1:])


def test_evaluation_explores_with_eval_epsilon(tiny_cartpole):
    # A network that always pushes left drops the pole within about ten steps; ε = 1 plays at random.
    import dataclasses

    import jax.numpy as jnp

    from dqn_jax.run.evaluate import Evaluator

    params = {"params": {"bias": jnp.array([[1.0, 0.0]])}}  # [S=1, actions]: action 0 is greedy
    lengths = {}
    for epsilon in (0.0, 1.0):
        config = dataclasses.replace(tiny_cartpole, eval_episodes=16, eval_epsilon=epsilon)
        lengths[epsilon] = Evaluator(config, ConstantQ(num_actions=2)).run(params, env_steps=0).lengths
    assert lengths[0.0].max() <= 12 and len(np.unique(lengths[1.0])) > 3
    assert lengths[1.0].mean() > 1.5 * lengths[0.0].mean()
