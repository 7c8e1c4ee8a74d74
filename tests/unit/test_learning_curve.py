"""`benchmarks/learning_curve.py`: the training games' mean return per window of env steps."""

from __future__ import annotations

import pytest
from helpers import load_benchmark

learning_curve = load_benchmark("learning_curve")


def train_row(env_steps: int, episodes: int, mean: float | None, seed: int = 0) -> dict:
    row = {"kind": "train", "env_steps": env_steps, "seed": seed, "episodes": episodes, "steps_per_sec": 100.0}
    return row | ({} if mean is None else {"train_return_mean": mean})


def test_games_are_weighted_by_count_within_a_window_and_windows_split_at_their_end():
    rows = [train_row(5_000, 1, -21.0), train_row(10_000, 0, None), train_row(100_000, 3, -19.0),
            train_row(105_000, 2, 10.0), train_row(200_000, 1, 20.0), train_row(230_000, 2, 19.0),
            {"kind": "eval", "env_steps": 100_000, "seed": 0, "eval_return_mean": 5.0},
            train_row(100_000, 5, 21.0, seed=1)]  # another agent's rows: not mixed in
    windows = learning_curve.training_returns(rows, 100_000)
    assert windows == [{"env_steps_end": 100_000, "games": 4, "return_mean": -19.5},  # (-21 + 3 * -19) / 4
                       {"env_steps_end": 200_000, "games": 3, "return_mean": 13.333},
                       {"env_steps_end": 230_000, "games": 2, "return_mean": 19.0}]  # unfinished: ends at the rows' end


def test_a_run_without_finished_games_has_no_windows_and_a_bad_window_is_refused():
    assert learning_curve.training_returns([train_row(5_000, 0, None)], 50_000) == []
    assert learning_curve.training_returns([], 50_000) == []
    with pytest.raises(ValueError, match="window must be > 0"):
        learning_curve.training_returns([train_row(5_000, 1, 0.0)], 0)
