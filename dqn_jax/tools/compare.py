"""`python -m dqn_jax.report --compare A B`: two configurations side by side (Agarwal et al. 2021).

A and B are each a sweep directory or run directories; over the games they share, per game each
side's mean with its bootstrap 95% CI and the difference B - A with its CI, and over those games
P(B > A) (the mean over games of the Mann-Whitney statistic of their seeds) and the IQM, median
and mean differences, each with a stratified-bootstrap CI. The verdict line comes first;
`report.json` holds both sides' reports (`report.build`) and the `comparison` block;
`compare_profiles.png` draws both performance profiles, `compare_curves.png` both learning curves
per game. Runs whose protocols differ in a setting that changes scores (`PROTOCOL_FIELDS`) are
refused unless `allow_protocol_difference`, which the output then states.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from dqn_jax import games
from dqn_jax.run.metrics import CONFIG_FILE
from dqn_jax.run.presets import load_toml
from dqn_jax.tools import scores
from dqn_jax.tools.report import ReportError, build, evals_by_step, runs_by_games, save_figure

# Settings that change what a score means: runs that differ in one are not compared unless asked.
PROTOCOL_FIELDS = ("eval_epsilon", "eval_max_episode_steps")
ATARI_PROTOCOL_FIELDS = ("repeat_action_probability", "full_action_space", "episodic_life", "noop_max",
                         "fire_reset", "max_episode_steps")


def compare(a_paths: Sequence[Path | str], b_paths: Sequence[Path | str], label_a: str = "A", label_b: str = "B",
            score: str = "best_params", reps: int = 2_000, seed: int = 0,
            allow_protocol_difference: bool = False) -> dict:
    """Returns the comparison of configuration B (runs under `b_paths`) against A (`a_paths`):
    `{"a": report, "b": report, "comparison": {...}}`, each report as `build` gives it, and the
    comparison over the games both have (what `report.json` holds with `--compare`).

    Raises:
      ReportError: a side without runs, sides that share no game, or protocols that differ in a
        setting of `PROTOCOL_FIELDS` (unless `allow_protocol_difference`).
    """
    sides = {}
    for side, paths, label in (("a", a_paths, label_a), ("b", b_paths, label_b)):
        try:
            sides[side] = build(paths, score, reps, seed)
        except ReportError as err:
            raise ReportError(f"{label}: {err}") from None
    a_games, b_games = sides["a"]["games"], sides["b"]["games"]
    shared = sorted(set(a_games) & set(b_games))
    if not shared:
        raise ReportError(f"{label_a} ({', '.join(sorted(a_games))}) and {label_b} ({', '.join(sorted(b_games))}) "
                          "share no game: compare runs of the same games")
    differences = protocol_differences(sides["a"], sides["b"], shared, label_a, label_b)
    if differences and not allow_protocol_difference:
        shown = "; ".join(f"{d['game']}: {d['setting']} = {d[label_a]!r} in {label_a}, {d[label_b]!r} in {label_b}"
                          for d in differences[:3])
        raise ReportError(f"the protocols differ in a setting that changes scores ({shown}); compare runs of one "
                          "protocol, or pass --allow-protocol-difference to compare them anyway")
    by_game = {game: {"a": a_games[game], "b": b_games[game]} for game in shared}
    with_human = any(a_games[g]["normalized"] is not None for g in shared)
    names = [g for g in shared if (a_games[g]["normalized"] is not None) == with_human]
    key = "normalized" if with_human else "raw"
    x, y = (runs_by_games([by_game[g][side][key] for g in names]) for side in ("a", "b"))
    aggregates = scores.difference_aggregates(x, y, reps=reps, seed=seed, normalized=with_human)
    comparison = {
        "label_a": label_a, "label_b": label_b, "shared_games": shared,
        "only_a": sorted(set(a_games) - set(shared)), "only_b": sorted(set(b_games) - set(shared)),
        "protocol_differences": differences, "score": sides["a"]["score"],
        "aggregated_over": "human_normalized" if with_human else "raw_return", "aggregated_games": names,
        "runs_per_game": {"a": int(x.shape[0]), "b": int(y.shape[0])}, "bootstrap_reps": reps, "bootstrap_seed": seed,
        "aggregates": aggregates,
        "games": {game: _game_difference(by_game[game], reps, seed) for game in shared},
        "curves": {game: {side: _curve_band(by_game[game][side]["run_dirs"], reps, seed) for side in ("a", "b")}
                   for game in shared},
    }
    comparison["distinguishable"] = not (aggregates["probability_of_improvement"]["ci_low"] <= 0.5
                                         <= aggregates["probability_of_improvement"]["ci_high"])
    comparison["verdict"] = verdict(comparison)
    return {"compare": True, "a": sides["a"], "b": sides["b"], "comparison": comparison}


def protocol_differences(a: dict, b: dict, shared: Sequence[str], label_a: str, label_b: str) -> list[dict]:
    """Returns the settings of `PROTOCOL_FIELDS` (and, for Atari games, `ATARI_PROTOCOL_FIELDS`)
    in which the runs of a shared game differ, within a side or between the sides: one
    `{game, setting, label_a: value(s), label_b: value(s)}` each."""
    found = []
    for game in shared:
        fields = PROTOCOL_FIELDS + (ATARI_PROTOCOL_FIELDS if games.is_atari(game) else ())
        configs = {label: [load_toml(Path(run) / CONFIG_FILE) for run in report["games"][game]["run_dirs"]]
                   for label, report in ((label_a, a), (label_b, b))}
        for field in fields:
            values = {label: sorted({getattr(c, field) for c in side}) for label, side in configs.items()}
            if len(set().union(*map(set, values.values()))) > 1:
                found.append({"game": game, "setting": field,
                              **{label: v[0] if len(v) == 1 else v for label, v in values.items()}})
    return found


def _game_difference(entries: dict, reps: int, seed: int) -> dict:
    """Returns one game's raw returns side by side: each side's seeds, mean and bootstrap 95% CI,
    and the difference of means B - A with its bootstrap CI."""
    out = {}
    for side in ("a", "b"):
        raw = np.asarray(entries[side]["raw"], np.float64)
        low, high = scores.bootstrap_mean_interval(raw, reps=reps, seed=seed)
        out[side] = {"seeds": entries[side]["seeds"], "mean": float(raw.mean()), "ci_low": low, "ci_high": high}
    a, b = (np.asarray(entries[side]["raw"], np.float64)[:, None] for side in ("a", "b"))
    low, high = scores.stratified_bootstrap_pair(a, b, lambda x, y: float(y.mean() - x.mean()), reps=reps, seed=seed)
    out["difference"] = {"estimate": float(b.mean() - a.mean()), "ci_low": low, "ci_high": high}
    return out


def _curve_band(run_dirs: list[str], reps: int, seed: int) -> list[dict]:
    """Returns a side's learning curve on one game: at each evaluation's env steps, the mean over
    seeds of the evaluation return and its bootstrap 95% CI over seeds, with the seeds it holds."""
    points = []
    for step, values in sorted(evals_by_step(run_dirs).items()):
        low, high = scores.bootstrap_mean_interval(np.array(values), reps=min(reps, 500), seed=seed)
        points.append({"env_steps": step, "mean": float(np.mean(values)), "ci_low": low, "ci_high": high,
                       "seeds": len(values)})
    return points


def verdict(comparison: dict) -> str:
    """Returns the comparison's one line: P(B > A) and the IQM difference with their CIs, and "not
    distinguishable" when the CI of P(B > A) contains 0.5."""
    a, b = comparison["label_a"], comparison["label_b"]
    runs = comparison["runs_per_game"]
    seeds = f"{runs['a']} seeds" if runs["a"] == runs["b"] else f"{runs['b']} and {runs['a']} seeds"
    p, d = comparison["aggregates"]["probability_of_improvement"], comparison["aggregates"]["iqm_difference"]
    scale = "human-normalized" if comparison["aggregated_over"] == "human_normalized" else "raw return"
    digits = 2 if scale == "human-normalized" else 1
    line = (f"{b} vs {a} on {len(comparison['aggregated_games'])} game(s) × {seeds}: "
            f"P({b} > {a}) = {p['estimate']:.2f} [{p['ci_low']:.2f}, {p['ci_high']:.2f}]; "
            f"IQM {d['estimate']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}] ({scale})")
    if not comparison["distinguishable"]:
        line += "; not distinguishable"
    if comparison["protocol_differences"]:
        line += f"; PROTOCOLS DIFFER ({', '.join(sorted({d['setting'] for d in comparison['protocol_differences']}))})"
    return line


def render_comparison(result: dict) -> str:
    """Returns a comparison as text: the verdict, one line per shared game, the aggregates."""
    c = result["comparison"]
    a, b = c["label_a"], c["label_b"]
    lines = [c["verdict"], f"{'game':<16} {a + ' mean [95% CI]':>28} {b + ' mean [95% CI]':>28} "
                           f"{b + ' - ' + a + ' [95% CI]':>30}"]

    def shown(value: dict, sign: str = "") -> str:
        estimate = value["estimate"] if "estimate" in value else value["mean"]
        return f"{estimate:{sign}.2f} [{value['ci_low']:{sign}.2f}, {value['ci_high']:{sign}.2f}]"

    for game, entry in c["games"].items():
        lines.append(f"{game:<16} {shown(entry['a']):>28} {shown(entry['b']):>28} "
                     f"{shown(entry['difference'], '+'):>30}")
    lines.append(f"over {len(c['aggregated_games'])} game(s) ({c['aggregated_over'].replace('_', ' ')}; "
                 "95% stratified-bootstrap CI):")
    for name, value in c["aggregates"].items():
        lines.append(f"  {name:<27} {value['estimate']:+.3f}  [{value['ci_low']:+.3f}, {value['ci_high']:+.3f}]")
    for side, games_only in (("a", c["only_a"]), ("b", c["only_b"])):
        if games_only:
            lines.append(f"only in {c['label_' + side]} (not compared): {', '.join(games_only)}")
    for d in c["protocol_differences"]:
        lines.append(f"protocol difference, allowed: {d['game']} {d['setting']}: {d[a]!r} in {a}, {d[b]!r} in {b}")
    return "\n".join(lines)


def plot_comparison(result: dict, out_dir: Path) -> list[Path]:
    """Writes both performance profiles on one plot and, per shared game, both learning curves
    (mean and 95% CI band over seeds, by env steps) on one figure; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result["comparison"]
    key = "normalized" if c["aggregated_over"] == "human_normalized" else "raw"
    sides = [(side, c[f"label_{side}"], color) for side, color in (("a", "tab:blue"), ("b", "tab:orange"))]
    matrices = {side: runs_by_games([result[side]["games"][g][key] for g in c["aggregated_games"]])
                for side, _, _ in sides}
    everything = np.concatenate([m.ravel() for m in matrices.values()])
    taus = np.linspace(min(0.0, everything.min()), max(everything.max(), 1e-9) * 1.05, 200)
    fig, axis = plt.subplots(figsize=(6, 4))
    for side, label, color in sides:
        axis.plot(taus, scores.performance_profile(matrices[side], taus), color=color,
                  label=f"{label} ({matrices[side].shape[0]} runs per game)")
    axis.set_xlabel("human-normalized score τ" if key == "normalized" else "return τ")
    axis.set_ylabel("fraction of runs with score > τ")
    axis.set_title(f"performance profiles over {len(c['aggregated_games'])} game(s)", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    written = [save_figure(fig, out_dir / "compare_profiles.png")]

    shared = c["shared_games"]
    fig, axes = plt.subplots(1, len(shared), figsize=(5 * len(shared), 3.6), squeeze=False)
    for axis, game in zip(axes[0], shared, strict=True):
        for side, label, color in sides:
            band = c["curves"][game][side]
            if band:
                steps = [p["env_steps"] for p in band]
                axis.plot(steps, [p["mean"] for p in band], color=color, label=label)
                axis.fill_between(steps, [p["ci_low"] for p in band], [p["ci_high"] for p in band], color=color,
                                  alpha=0.2, lw=0)
        axis.set_title(game, fontsize=10)
        axis.set_xlabel("env steps")
        axis.set_ylabel("evaluation return (mean over seeds, 95% CI)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    written.append(save_figure(fig, out_dir / "compare_curves.png"))
    return written
