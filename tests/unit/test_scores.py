"""The report's statistics: by hand, and against rliable's own functions where rliable installs."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from dqn_jax import games
from dqn_jax.tools import scores

# 2 runs x 3 games. Per-game means 0.2, 1.5, 1.0.
SMALL = np.array([[0.1, 2.0, 0.5],
                  [0.3, 1.0, 1.5]])


def test_aggregates_by_hand():
    assert scores.mean(SMALL) == pytest.approx(0.9)
    assert scores.median(SMALL) == pytest.approx(1.0)
    assert scores.iqm(SMALL) == pytest.approx((0.3 + 0.5 + 1.0 + 1.5) / 4)  # drop 0.1 and 2.0
    assert scores.optimality_gap(SMALL) == pytest.approx(1 - (0.1 + 1 + 0.5 + 0.3 + 1 + 1) / 6)
    np.testing.assert_allclose(scores.performance_profile(SMALL, np.array([0.0, 0.4, 1.2])), [1.0, 2 / 3, 1 / 3])


def test_the_bootstrap_resamples_runs_within_each_game():
    # Runs that agree within each game leave nothing to resample: the interval is the estimate.
    same_runs = np.repeat(np.array([[0.2, 1.5, 1.0]]), 4, axis=0)
    for name, statistic in scores.AGGREGATES.items():
        low, high = scores.stratified_bootstrap(same_runs, statistic, reps=200)
        assert low == pytest.approx(statistic(same_runs)) and high == pytest.approx(statistic(same_runs)), name
    # Games never mix: a game whose runs are all 0 and one whose runs are all 1 keep the mean at 0.5.
    assert scores.stratified_bootstrap(np.array([[0.0, 1.0]] * 3), scores.mean, reps=100) == (0.5, 0.5)
    # Spread runs give an interval around the estimate, the same one for the same seed.
    spread = np.random.default_rng(0).normal(1.0, 0.5, size=(10, 5))
    result = scores.aggregates(spread, reps=500)
    for name, interval in result.items():
        assert interval["ci_low"] < interval["estimate"] < interval["ci_high"], name
    assert scores.aggregates(spread, reps=500) == result


def test_human_normalized_scores_for_the_atari_57_and_none_elsewhere():
    assert scores.human_normalized(games.ale_name("Pong"), np.array([-20.7, 14.6])).tolist() == [0.0, 1.0]
    assert scores.human_normalized("breakout", np.array([30.5])) == pytest.approx([1.0])
    assert scores.human_normalized(None, np.array([500.0])) is None  # CartPole
    assert scores.human_normalized("adventure", np.array([1.0])) is None  # an Atari game without human scores
    assert len(scores.RANDOM_AND_HUMAN) == 57
    assert set(scores.RANDOM_AND_HUMAN) <= {games.ale_name(g) for g in games.atari_games()}


def _rliable(module: str):
    """Returns an rliable module, or skips: rliable is archived and not a dependency, and its
    `library` imports `arch`, which fails to import beside pandas 3 (seen 2026-11-27; fine with pandas 2.2)."""
    try:
        return importlib.import_module(module)
    except Exception as err:  # ImportError, or arch's TypeError at import
        pytest.skip(f"{module} unavailable: {type(err).__name__}: {err}")


DATA = np.random.default_rng(1).gamma(2.0, 0.5, size=(10, 6))
THEIR_NAMES = {"mean": "aggregate_mean", "median": "aggregate_median", "iqm": "aggregate_iqm",
               "optimality_gap": "aggregate_optimality_gap"}


def test_point_estimates_against_rliable():
    metrics = _rliable("rliable.metrics")
    for name, statistic in scores.AGGREGATES.items():
        assert statistic(DATA) == pytest.approx(getattr(metrics, THEIR_NAMES[name])(DATA)), name


def test_intervals_against_rliable():
    metrics, library = _rliable("rliable.metrics"), _rliable("rliable.library")
    theirs = {name: getattr(metrics, their) for name, their in THEIR_NAMES.items()}
    data = DATA
    ours = scores.aggregates(data, reps=2_000)
    _, intervals = library.get_interval_estimates(
        {"run": data}, lambda x: np.array([theirs[n](x) for n in theirs]), reps=2_000)
    for i, name in enumerate(theirs):  # two Monte Carlo estimates of the same interval
        assert ours[name]["ci_low"] == pytest.approx(intervals["run"][0, i], abs=0.03), name
        assert ours[name]["ci_high"] == pytest.approx(intervals["run"][1, i], abs=0.03), name


def test_probability_of_improvement_by_hand_ties_count_half():
    # Pairs (x, y): (1,2) (1,2) lose, (2,2) (2,2) tie, (3,2) (3,2) win: (0 + 0 + ½ + ½ + 1 + 1) / 6.
    assert scores.game_probability_of_improvement([1.0, 2.0, 3.0], [2.0, 2.0]) == pytest.approx(0.5)
    # (3 vs 1, 2, 3): 1 + 1 + ½; (4 vs 1, 2, 3): 3 wins: 5.5 of 6 pairs.
    assert scores.game_probability_of_improvement([3.0, 4.0], [1.0, 2.0, 3.0]) == pytest.approx(5.5 / 6)
    x = np.array([[3.0, 0.0], [4.0, 1.0]])
    y = np.array([[1.0, 5.0], [2.0, 6.0], [3.0, 7.0]])
    # Game 0 as above (5.5/6), game 1: x loses every pair (0): the mean over games.
    assert scores.probability_of_improvement(x, y) == pytest.approx((5.5 / 6 + 0.0) / 2)
    assert scores.probability_of_improvement(y, x) == pytest.approx(1 - (5.5 / 6) / 2)


def test_identical_sides_are_not_distinguishable():
    data = DATA[:5]
    out = scores.difference_aggregates(data, data.copy(), reps=1_000)
    assert out["probability_of_improvement"]["estimate"] == pytest.approx(0.5)
    p = out["probability_of_improvement"]
    assert p["ci_low"] < 0.5 < p["ci_high"]
    for name in ("iqm_difference", "median_difference", "mean_difference", "optimality_gap_difference"):
        value = out[name]
        assert value["estimate"] == 0.0 and value["ci_low"] < 0.0 < value["ci_high"], name


def test_sides_that_agree_within_each_game_give_exact_intervals():
    # Every run of a game scores the same on each side: nothing to resample, the CI is the estimate.
    x = np.repeat(np.array([[0.2, 1.5, 1.0]]), 4, axis=0)
    y = x + 0.5
    out = scores.difference_aggregates(x, y, reps=200)
    assert out["probability_of_improvement"] == {"estimate": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    for name in ("iqm_difference", "median_difference", "mean_difference"):
        assert out[name]["estimate"] == pytest.approx(0.5) and out[name]["ci_low"] == pytest.approx(0.5), name
        assert out[name]["ci_high"] == pytest.approx(0.5), name
    low, high = scores.bootstrap_mean_interval(np.array([2.0, 2.0, 2.0]))
    assert low == high == 2.0
    with pytest.raises(ValueError, match="x has 3 games and y 2"):
        scores.stratified_bootstrap_pair(x, y[:, :2], lambda a, b: 0.0)


def test_probability_of_improvement_against_rliable():
    metrics = _rliable("rliable.metrics")
    x, y = DATA[:6], DATA[4:]
    assert scores.probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
