"""Evaluation videos."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np

from dqn_jax.evaluate import write_video


def test_write_video_round_trip(tmp_path):
    frames = [np.full((84, 84), 8 * i, np.uint8) for i in range(30)]
    path = write_video(frames, tmp_path / "episode")
    reader = imageio.get_reader(path)
    first, last = reader.get_data(0), reader.get_data(29)
    assert first.shape[:2] == (336, 336)  # upscaled 4x
    assert abs(int(first.mean()) - 0) <= 4 and abs(int(last.mean()) - 8 * 29) <= 4
