"""Scores the way papers report them: human-normalized, aggregated over games and seeds with
stratified-bootstrap confidence intervals (Agarwal et al. 2021, "Deep RL at the Edge of the
Statistical Precipice"), written here because rliable, the library that made them standard, was
archived in October 2025. The tests check these functions by hand and against rliable's own.

Scores are arrays [runs, games]: one column per game, one row per seed (every game has the same
number of runs).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# Random and human scores of the Atari-57 games, keyed by the ALE's names (`games.ale_name`).
# Source: DeepMind's DQN Zoo, `dqn_zoo/atari_data.py` (Apache-2.0): undiscounted returns averaged
# over at least 3 episodes, each started after 1-30 random no-ops, capped at 108,000 frames; "human"
# is a professional game tester. Games not listed (EnvPool has 104 Atari games) have no standard
# human score, and reports show their raw returns.
RANDOM_AND_HUMAN: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7), "amidar": (5.8, 1719.5), "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3), "asteroids": (719.1, 47388.7), "atlantis": (12850.0, 29028.1),
    "bank_heist": (14.2, 753.1), "battle_zone": (2360.0, 37187.5), "beam_rider": (363.9, 16926.5),
    "berzerk": (123.7, 2630.4), "bowling": (23.1, 160.7), "boxing": (0.1, 12.1),
    "breakout": (1.7, 30.5), "centipede": (2090.9, 12017.0), "chopper_command": (811.0, 7387.8),
    "crazy_climber": (10780.5, 35829.4), "defender": (2874.5, 18688.9), "demon_attack": (152.1, 1971.0),
    "double_dunk": (-18.6, -16.4), "enduro": (0.0, 860.5), "fishing_derby": (-91.7, -38.7),
    "freeway": (0.0, 29.6), "frostbite": (65.2, 4334.7), "gopher": (257.6, 2412.5),
    "gravitar": (173.0, 3351.4), "hero": (1027.0, 30826.4), "ice_hockey": (-11.2, 0.9),
    "jamesbond": (29.0, 302.8), "kangaroo": (52.0, 3035.0), "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3), "montezuma_revenge": (0.0, 4753.3), "ms_pacman": (307.3, 6951.6),
    "name_this_game": (2292.3, 8049.0), "phoenix": (761.4, 7242.6), "pitfall": (-229.4, 6463.7),
    "pong": (-20.7, 14.6), "private_eye": (24.9, 69571.3), "qbert": (163.9, 13455.0),
    "riverraid": (1338.5, 17118.0), "road_runner": (11.5, 7845.0), "robotank": (2.2, 11.9),
    "seaquest": (68.4, 42054.7), "skiing": (-17098.1, -4336.9), "solaris": (1236.3, 12326.7),
    "space_invaders": (148.0, 1668.7), "star_gunner": (664.0, 10250.0), "surround": (-10.0, 6.5),
    "tennis": (-23.8, -8.3), "time_pilot": (3568.0, 5229.2), "tutankham": (11.4, 167.6),
    "up_n_down": (533.4, 11693.2), "venture": (0.0, 1187.5), "video_pinball": (16256.9, 17667.9),
    "wizard_of_wor": (563.5, 4756.5), "yars_revenge": (3092.9, 54576.9), "zaxxon": (32.5, 9173.3),
}


def human_normalized(ale_name: str | None, raw: np.ndarray) -> np.ndarray | None:
    """Returns (raw - random) / (human - random) for a game with human scores, else None."""
    if ale_name not in RANDOM_AND_HUMAN:
        return None
    random, human = RANDOM_AND_HUMAN[ale_name]
    return (np.asarray(raw, np.float64) - random) / (human - random)


# --- aggregates over [runs, games] --------------------------------------------------------------
def mean(scores: np.ndarray) -> float:
    """Returns the mean over games of each game's mean over runs."""
    return float(np.mean(np.mean(scores, axis=0)))


def median(scores: np.ndarray) -> float:
    """Returns the median over games of each game's mean over runs."""
    return float(np.median(np.mean(scores, axis=0)))


def iqm(scores: np.ndarray) -> float:
    """Returns the interquartile mean of all runs of all games: the mean of the middle 50% of the
    scores, after dropping the lowest and the highest quarter (rounded down; as `scipy.stats.trim_mean`)."""
    flat = np.sort(np.asarray(scores, np.float64).ravel())
    cut = int(0.25 * flat.size)
    return float(np.mean(flat[cut:flat.size - cut]))


def optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> float:
    """Returns how far the runs fall short of `gamma` (human level, for normalized scores) on
    average: mean(max(gamma - score, 0)); scores above `gamma` count as `gamma`."""
    return float(gamma - np.mean(np.minimum(scores, gamma)))


AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {
    "mean": mean, "median": median, "iqm": iqm, "optimality_gap": optimality_gap}


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Returns the central `confidence` interval (low, high) of bootstrap `replicates` [reps]."""
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def stratified_bootstrap(scores: np.ndarray, statistic: Callable[[np.ndarray], float], reps: int = 2_000,
                         confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Returns the percentile confidence interval (low, high) of `statistic` under a stratified
    bootstrap: each replicate resamples, with replacement, the runs of each game separately (the
    games stay; their runs are drawn again), as rliable's `StratifiedBootstrap` does."""
    scores = np.asarray(scores, np.float64)
    runs, num_games = scores.shape
    rng = np.random.default_rng(seed)
    columns = np.arange(num_games)[None, :]
    replicates = np.array([statistic(scores[rng.integers(0, runs, size=(runs, num_games)), columns])
                           for _ in range(reps)])
    return percentile_interval(replicates, confidence)


def aggregates(scores: np.ndarray, reps: int = 2_000, seed: int = 0,
               normalized: bool = True) -> dict[str, dict[str, float]]:
    """Returns {mean, median, iqm, optimality_gap: {estimate, ci_low, ci_high}} for scores [runs, games].

    Without `normalized` (raw returns) there is no optimality gap: its threshold 1 means human level
    only on the human-normalized scale.
    """
    out = {}
    for name, statistic in AGGREGATES.items():
        if name == "optimality_gap" and not normalized:
            continue
        low, high = stratified_bootstrap(scores, statistic, reps=reps, seed=seed)
        out[name] = {"estimate": statistic(scores), "ci_low": low, "ci_high": high}
    return out


def performance_profile(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Returns, for each threshold τ, the fraction of runs (over all games, each game weighted
    equally) whose score exceeds τ: the run-score distribution of Agarwal et al. [len(thresholds)]."""
    scores = np.asarray(scores, np.float64)
    return np.array([np.mean(np.mean(scores > tau, axis=0)) for tau in thresholds])


# --- two configurations: X [runs_x, games] against Y [runs_y, games] -----------------------------
def game_probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """Returns P(X > Y) for one game's runs x [n] and y [m]: the Mann-Whitney statistic, the
    fraction of the n·m pairs in which x beats y, a tie counting ½."""
    x, y = np.asarray(x, np.float64)[:, None], np.asarray(y, np.float64)[None, :]
    return float(np.mean((x > y) + 0.5 * (x == y)))


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """Returns P(X > Y) over games (Agarwal et al. 2021): the mean over the games (columns of x
    [runs_x, games] and y [runs_y, games]) of each game's Mann-Whitney statistic."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.mean([game_probability_of_improvement(x[:, g], y[:, g]) for g in range(x.shape[1])]))


def stratified_bootstrap_pair(x: np.ndarray, y: np.ndarray, statistic: Callable[[np.ndarray, np.ndarray], float],
                              reps: int = 2_000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Returns the percentile confidence interval (low, high) of `statistic(x, y)` for two
    configurations' scores x [runs_x, games] and y [runs_y, games]: each replicate resamples, with
    replacement, the runs of each game of each side independently (rliable's
    `StratifiedIndependentBootstrap`)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has {x.shape[1]} games and y {y.shape[1]}: compare the same games")
    rng = np.random.default_rng(seed)
    columns = np.arange(x.shape[1])[None, :]
    replicates = np.array([statistic(x[rng.integers(0, x.shape[0], size=x.shape), columns],
                                     y[rng.integers(0, y.shape[0], size=y.shape), columns])
                           for _ in range(reps)])
    return percentile_interval(replicates, confidence)


def bootstrap_mean_interval(values: np.ndarray, reps: int = 2_000, confidence: float = 0.95,
                            seed: int = 0) -> tuple[float, float]:
    """Returns the percentile bootstrap interval (low, high) of the mean of `values` [n] (one
    game's seeds), resampling them with replacement."""
    values = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(reps, values.size))].mean(axis=1)
    return percentile_interval(means, confidence)


def difference_aggregates(x: np.ndarray, y: np.ndarray, reps: int = 2_000, seed: int = 0,
                          normalized: bool = True) -> dict[str, dict[str, float]]:
    """Returns, for Y against X (x [runs_x, games], y [runs_y, games]), `probability_of_improvement`
    P(Y > X) and the differences Y - X of the mean, median and IQM (and, on normalized scores, of
    the optimality gap): each {estimate, ci_low, ci_high} with a stratified-bootstrap 95% CI."""
    statistics: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "probability_of_improvement": lambda a, b: probability_of_improvement(b, a)}
    for name, aggregate in AGGREGATES.items():
        if name == "optimality_gap" and not normalized:
            continue
        statistics[f"{name}_difference"] = lambda a, b, aggregate=aggregate: aggregate(b) - aggregate(a)
    out = {}
    for name, statistic in statistics.items():
        low, high = stratified_bootstrap_pair(x, y, statistic, reps=reps, seed=seed)
        out[name] = {"estimate": statistic(x, y), "ci_low": low, "ci_high": high}
    return out
