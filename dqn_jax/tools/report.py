"""`python -m dqn_jax.report SWEEP_DIR | RUN_DIR ...`: scores across games and seeds, as papers report them.

Reads training run directories (a sweep directory holds one per game; each run holds its seeds):
every seed's score — its best params scored on fresh games at the end of its run
(`--score=best_params`, the default and the project's one score: `best_params_return`), or its last
evaluation's mean return (`--score=final`) — per game; human-normalized scores for
the Atari-57 games (`scores.RANDOM_AND_HUMAN`), raw returns for the others; and, over the games
that have human scores (or, when none has, over the raw returns), the mean, median, interquartile
mean and optimality gap with stratified-bootstrap 95% confidence intervals. Writes `report.json`,
`performance_profile.png` and `score_curves.png` into the first directory given (or `--out`).

`--compare A B` sets two configurations side by side (`dqn_jax.tools.compare`).
Exit status: 0, or 2 when no run directory is found or the runs cannot be compared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from dqn_jax import games
from dqn_jax.loop.records import EVAL_RETURN_MEAN
from dqn_jax.run.metrics import CONFIG_FILE, SUMMARY_FILE, read_metrics, write_json_atomic
from dqn_jax.run.presets import load_toml
from dqn_jax.tools import scores

REPORT_FILE = "report.json"
SCORE_FIELDS = {"final": "final_eval_return", "best_params": "best_params_return"}
FRAME_SKIP = 4  # Atari env steps are 4 frames each (EnvPool's default, which this project keeps)


class ReportError(ValueError):
    """Nothing to report, or runs that cannot be compared; the message says which."""


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """Returns the run directories among `paths` and their subdirectories (one level), sorted."""
    runs = []
    for path in paths:
        if (path / SUMMARY_FILE).is_file():
            runs.append(path)
        elif path.is_dir():
            runs += sorted(p for p in path.iterdir() if (p / SUMMARY_FILE).is_file())
    return runs


def collect(runs: Sequence[Path], score: str) -> dict[str, dict]:
    """Returns {game: {"seeds": [...], "raw": [...], "run_dirs": [...]}} from run directories."""
    import json

    by_game: dict[str, dict] = {}
    for run in runs:
        game = load_toml(run / CONFIG_FILE).game
        summary = json.loads((run / SUMMARY_FILE).read_text())
        entry = by_game.setdefault(game, {"seeds": [], "raw": [], "run_dirs": []})
        for seed in summary["seeds"]:
            value = seed.get(SCORE_FIELDS[score])
            if value is None:
                raise ReportError(f"{run}: seed {seed['seed']} has no {SCORE_FIELDS[score]} "
                                  f"(an unfinished run?); finish it with --resume, or use --score=final")
            entry["seeds"].append(seed["seed"])
            entry["raw"].append(float(value))
        entry["run_dirs"].append(str(run))
    return by_game


def score_matrix(by_game: dict[str, dict], normalized: bool) -> tuple[list[str], np.ndarray]:
    """Returns the games and their scores [runs, games] (normalized or raw), keeping the first
    `runs` seeds of each game where games have different numbers of seeds."""
    names = [g for g in sorted(by_game) if (by_game[g]["normalized"] is not None) == normalized]
    key = "normalized" if normalized else "raw"
    return names, runs_by_games([by_game[g][key] for g in names])


def runs_by_games(columns: list[list[float]]) -> np.ndarray:
    """Returns the scores [runs, games] of one score list per game, keeping the first `runs`
    seeds of each game where games have different numbers of seeds."""
    runs = min((len(c) for c in columns), default=0)
    return np.array([c[:runs] for c in columns], np.float64).T.reshape(runs, len(columns))


def save_figure(fig, path: Path) -> Path:
    """Writes `fig` to `path` (laid out, 80 dpi), closes it and returns `path`."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def evals_by_step(run_dirs: Sequence[str]) -> dict[int, list[float]]:
    """Returns {env steps: every seed's evaluation return there} over the runs' `eval` rows."""
    by_step: dict[int, list[float]] = {}
    for run in run_dirs:
        for row in read_metrics(run, "eval"):
            by_step.setdefault(row["env_steps"], []).append(row[EVAL_RETURN_MEAN])
    return by_step


def build(paths: Sequence[Path], score: str = "best_params", reps: int = 2_000, seed: int = 0) -> dict:
    """Returns the report of the runs under `paths` (what `report.json` holds).

    Raises:
      ReportError: no run directory, or a seed without the requested score.
    """
    if score not in SCORE_FIELDS:
        raise ReportError(f"score = {score!r} is not a score; choose one of {', '.join(sorted(SCORE_FIELDS))}")
    if reps < 1:
        raise ReportError(f"reps = {reps} must be at least 1 (bootstrap replicates)")
    runs = find_runs([Path(p) for p in paths])
    if not runs:
        raise ReportError(f"no run directory (with {SUMMARY_FILE}) in {', '.join(map(str, paths))}; pass a sweep "
                          "directory or training run directories")
    by_game = collect(runs, score)
    for game, entry in by_game.items():
        normalized = scores.human_normalized(games.ale_name(game), np.array(entry["raw"]))
        entry["normalized"] = None if normalized is None else normalized.tolist()
    with_human = any(entry["normalized"] is not None for entry in by_game.values())
    names, matrix = score_matrix(by_game, normalized=with_human)
    return {
        "runs": [str(r) for r in runs], "score": SCORE_FIELDS[score],
        "aggregated_over": "human_normalized" if with_human else "raw_return", "aggregated_games": names,
        "runs_per_game": int(matrix.shape[0]), "bootstrap_reps": reps, "bootstrap_seed": seed,
        "aggregates": scores.aggregates(matrix, reps=reps, seed=seed, normalized=with_human) if matrix.size else None,
        "games": {game: {**entry, "raw_mean": float(np.mean(entry["raw"])), "normalized_mean": (
                             None if entry["normalized"] is None else float(np.mean(entry["normalized"])))}
                  for game, entry in sorted(by_game.items())},
    }


def plot(report: dict, out_dir: Path) -> list[Path]:
    """Writes the performance profile and the score-vs-frames curves; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "normalized" if report["aggregated_over"] == "human_normalized" else "raw"
    games_used = report["aggregated_games"]
    runs = report["runs_per_game"]
    matrix = runs_by_games([report["games"][g][key] for g in games_used])
    fig, axis = plt.subplots(figsize=(6, 4))
    if matrix.size:
        taus = np.linspace(min(0.0, matrix.min()), max(matrix.max(), 1e-9) * 1.05, 200)
        axis.plot(taus, scores.performance_profile(matrix, taus))
    axis.set_xlabel("human-normalized score τ" if key == "normalized" else "return τ")
    axis.set_ylabel("fraction of runs with score > τ")
    axis.set_title(f"performance profile ({len(games_used)} games × {runs} runs)", fontsize=10)
    axis.grid(alpha=0.3)
    written = [save_figure(fig, out_dir / "performance_profile.png")]

    fig, axis = plt.subplots(figsize=(7, 4))
    for game, entry in report["games"].items():
        curve = _curve(game, entry["run_dirs"])
        if curve:
            xs, ys = zip(*curve, strict=True)
            axis.plot(xs, ys, marker="o", ms=2, label=game)
    axis.set_xlabel("frames" if any(games.is_atari(g) for g in report["games"]) else "env steps")
    axis.set_ylabel("human-normalized score" if key == "normalized" else "evaluation return")
    axis.set_title("mean over seeds of the evaluation return", fontsize=10)
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=7)
    written.append(save_figure(fig, out_dir / "score_curves.png"))
    return written


def _curve(game: str, run_dirs: list[str]) -> list[tuple[float, float]]:
    """Returns (frames or env steps, mean over seeds of the evaluation return, human-normalized
    where the game has human scores) at each evaluation of a game's runs."""
    by_step = evals_by_step(run_dirs)
    scale = FRAME_SKIP if games.is_atari(game) else 1
    points = []
    for step, values in sorted(by_step.items()):
        normalized = scores.human_normalized(games.ale_name(game), np.array([np.mean(values)]))
        points.append((step * scale, float(np.mean(values) if normalized is None else normalized[0])))
    return points


def render(report: dict) -> str:
    """Returns the report as text: one line per game, then the aggregates."""
    lines = [f"{'game':<16} {'seeds':>5} {'return (mean)':>14} {'human-normalized':>17}"]
    for game, entry in report["games"].items():
        normalized = "" if entry["normalized_mean"] is None else f"{entry['normalized_mean']:.3f}"
        lines.append(f"{game:<16} {len(entry['raw']):>5} {entry['raw_mean']:>14.2f} {normalized:>17}")
    if report["aggregates"]:
        lines.append(f"aggregates over {len(report['aggregated_games'])} game(s) × {report['runs_per_game']} run(s) "
                     f"({report['aggregated_over'].replace('_', ' ')}; 95% stratified-bootstrap CI):")
        for name, value in report["aggregates"].items():
            lines.append(f"  {name:<15} {value['estimate']:.3f}  [{value['ci_low']:.3f}, {value['ci_high']:.3f}]")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m dqn_jax.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", type=Path, nargs="*", help="a sweep directory, or run directories")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                        help="compare configuration B against A: each a sweep directory or run directories "
                             "(commas between several)")
    parser.add_argument("--label-a", default="A", help="A's name in the comparison (default A)")
    parser.add_argument("--label-b", default="B", help="B's name in the comparison (default B)")
    parser.add_argument("--allow-protocol-difference", action="store_true",
                        help="compare runs whose protocols differ in a setting that changes scores (the output "
                             "says which)")
    parser.add_argument("--score", choices=sorted(SCORE_FIELDS), default="best_params",
                        help="each seed's best params scored on fresh games at the end of its run (best_params, "
                             "the default: the score train's last line and summary.json give), or its last "
                             "evaluation (final)")
    parser.add_argument("--reps", type=int, default=2_000, help="bootstrap replicates (default 2000)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the first path)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if bool(args.paths) == bool(args.compare):
        print("error: give run or sweep directories to report, or --compare A B to compare two configurations "
              "(not both)", file=sys.stderr)
        return 2
    if args.compare:  # writes report.json, compare_profiles.png and compare_curves.png
        from dqn_jax.tools import compare  # it builds on this module's reports: imported here, not above

        a_paths, b_paths = ([Path(p) for p in side.split(",") if p] for side in args.compare)
        make = lambda: compare.compare(a_paths, b_paths, args.label_a, args.label_b, args.score,  # noqa: E731
                                       args.reps, allow_protocol_difference=args.allow_protocol_difference)
        shown, plotted, default_out = compare.render_comparison, compare.plot_comparison, a_paths[0]
    else:
        make = lambda: build(args.paths, args.score, args.reps)  # noqa: E731
        shown, plotted, default_out = render, plot, args.paths[0]
    try:
        result = make()
    except (ReportError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out_dir = args.out or default_out
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / REPORT_FILE, result)
    print(shown(result))
    for path in [out_dir / REPORT_FILE, *plotted(result, out_dir)]:
        print(f"wrote {path}")
    return 0

