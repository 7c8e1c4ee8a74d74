"""Evaluation: videos, and games cut by the evaluation cap (scoring a run: test_train.py's tiny run)."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
from helpers import ConstantQ

from dqn_jax.evaluate import write_video
from dqn_jax.metrics import read_metrics


def test_write_video_round_trip(tmp_path):
    frames = [np.full((84, 84), 8 * i, np.uint8) for i in range(30)]
    path = write_video(frames, tmp_path / "episode")
    reader = imageio.get_reader(path)
    first, last = reader.get_data(0), reader.get_data(29)
    assert first.shape[:2] == (336, 336)  # upscaled 4x
    assert abs(int(first.mean()) - 0) <= 4 and abs(int(last.mean()) - 8 * 29) <= 4


def test_record_video_writes_the_best_evaluation_game(tmp_path):
    import dataclasses

    from dqn_jax import presets
    from dqn_jax.checkpoint import load_best_params
    from dqn_jax.config import validate
    from dqn_jax.train import train

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

