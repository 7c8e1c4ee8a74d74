"""Two or more recorded learning curves on one figure, by env steps and by wall-clock minutes.

    python benchmarks/curves_side_by_side.py pong_cpu_atari_s0 pong_cpu_atari_v1_s0 \
        --labels "cpu_atari" "cpu_atari_v1" --name pong_cpu_atari_vs_v1 [--target 20] \
        [--deadline-minutes 120] [--linear-minutes] [--training-games]

Each argument names a `benchmarks/results/<name>.json` written by `learning_curve.py`. Writes
`benchmarks/results/<out>.png`: evaluation return (the mean of each evaluation's games) against env
steps on the left and against minutes from the command's start on the right (a resumed run's
clock counts every process it took), each curve labelled with its CPU model, so that runs from
different machines are not read as if from one. The minutes axis is logarithmic (runs of 3 and of
450 minutes share it) unless `--linear-minutes`; `--deadline-minutes` draws a time budget on it.
`--by-updates` adds a panel of evaluation return against the agent's update count (the record's
own, else counted from its config's schedule as the loop runs it): runs that learn at different
cadences compared update for update. `--training-games` adds a last panel: each run's training
games' mean return per 100k env steps (the record's `train_returns`, else computed from its
`<name>_metrics.jsonl.gz`), tens of games per point where an evaluation has 8.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # learning_curve.py beside this file, as gpu_suite.py does

RESULTS = Path(__file__).parent / "results"


def machine_words(machine: dict) -> str:
    """Returns the CPU as a curve's label names it: "AMD EPYC", with ", AVX-512" or ", no AVX-512"
    where the record has `cpu_features` (results from before 2026-12-02 do not)."""
    features = machine.get("cpu_features") or {}
    if "avx512f" not in features:
        return machine["cpu"]
    return f"{machine['cpu']}, {'' if features['avx512f'] else 'no '}AVX-512"


def load_curve(name: str) -> dict:
    """Returns the result `benchmarks/results/<name>.json` (a `learning_curve.py` record)."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        raise SystemExit(f"error: {path} does not exist; write it with benchmarks/learning_curve.py first")
    record = json.loads(path.read_text())
    if record.get("benchmark") != "learning_curve":
        raise SystemExit(f"error: {path} is not a learning_curve.py record (benchmark = {record.get('benchmark')!r})")
    return record


def training_games(name: str, record: dict, window: int = 100_000) -> list[dict]:
    """Returns the run's training games' mean return per `window` env steps (`learning_curve.py`'s
    `train_returns`): the record's own when it has them at that window, else computed from
    `benchmarks/results/<name>_metrics.jsonl.gz`."""
    if record.get("train_return_window") == window and "train_returns" in record:
        return record["train_returns"]
    path = RESULTS / f"{name}_metrics.jsonl.gz"
    if not path.exists():
        raise SystemExit(f"error: {name} has no training games' returns and no {path.name}; "
                         "record it again with learning_curve.py --metrics, or leave out --training-games")
    from learning_curve import training_returns  # imports dqn_jax: only when the panel is asked for

    with gzip.open(path, "rt") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    return training_returns(rows, window)


def eval_updates(record: dict) -> list[int]:
    """Returns the update count at each of the record's evaluations: the curve's own `updates`
    (records since 2026-12-06), else counted from the record's config by `updates_after`."""
    curve = record["eval_curve"]
    if all("updates" in c for c in curve):
        return [c["updates"] for c in curve]
    from dqn_jax.config import Config  # imports dqn_jax (and jax): only when the panel is asked for
    from dqn_jax.errors import ConfigError
    from dqn_jax.loop.iteration import updates_after
    from dqn_jax.run.presets import replace_checked

    try:
        config = replace_checked(Config(), record["config"], source="the record's config")
    except ConfigError as err:
        raise SystemExit(f"error: {err}; leave out --by-updates") from None
    return [updates_after(config, c["env_steps"]) for c in curve]


def figure(records: list[dict], labels: list[str], *, target: float | None = None,
           deadline_minutes: float | None = None, linear_minutes: bool = False,
           updates: list[list[int]] | None = None, training: list[list[dict]] | None = None):
    """Returns a matplotlib Figure: each record's evaluation returns against env steps (first axes)
    and against minutes from its command's start (second, logarithmic unless `linear_minutes`),
    with `target` as a horizontal line and `deadline_minutes` as a vertical one on the minutes
    axes; with `updates` (per record, the update count at each evaluation) an axes of the
    evaluation returns by updates; with `training` (per record, `training_games`' windows) a last
    axes of the training games' mean return by env steps."""
    import matplotlib.pyplot as plt

    panels = [("env steps", "evaluation return (mean of the games)"),
              ("minutes from the command's start", "evaluation return (mean of the games)")]
    if updates is not None:
        panels.append(("updates", "evaluation return (mean of the games)"))
    if training is not None:
        panels.append(("env steps", "training games' return (mean per window)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2))
    for i, (record, label) in enumerate(zip(records, labels, strict=True)):
        curve = record["eval_curve"]
        returns = [c["eval_return_mean"] for c in curve]
        shown = f"{label} ({machine_words(record['machine'])})"
        axes[0].plot([c["env_steps"] for c in curve], returns, marker="o", ms=3, label=shown)
        axes[1].plot([c["wall_seconds"] / 60 for c in curve], returns, marker="o", ms=3, label=shown)
        if updates is not None:
            axes[2].plot(updates[i], returns, marker="o", ms=3, label=shown)
        if training is not None:
            axes[-1].plot([w["env_steps_end"] for w in training[i]], [w["return_mean"] for w in training[i]],
                          drawstyle="steps-pre", label=shown)
    if deadline_minutes is not None:
        axes[1].axvline(deadline_minutes, color="firebrick", ls=":", lw=1, label=f"{deadline_minutes:g} minutes")
    for ax, (xlabel, ylabel) in zip(axes, panels, strict=True):
        if target is not None:
            ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:g}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    if not linear_minutes:
        axes[1].set_xscale("log")
    fig.suptitle(" vs ".join(labels))
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("curves", nargs="+", help="names of learning_curve.py results")
    parser.add_argument("--labels", nargs="+", default=None, help="one per curve (default: the names)")
    parser.add_argument("--name", required=True, help="the PNG's name, without .png")
    parser.add_argument("--target", type=float, default=None, help="a return drawn as a line")
    parser.add_argument("--deadline-minutes", type=float, default=None,
                        help="a time budget drawn as a vertical line on the minutes axis")
    parser.add_argument("--linear-minutes", action="store_true",
                        help="a linear minutes axis (default: logarithmic)")
    parser.add_argument("--by-updates", action="store_true",
                        help="a panel of the evaluation return against the agent's update count")
    parser.add_argument("--training-games", action="store_true",
                        help="a last panel: the training games' mean return per 100k env steps")
    args = parser.parse_args(argv)
    labels = args.labels or args.curves
    if args.deadline_minutes is not None and not args.deadline_minutes > 0:
        raise SystemExit(f"error: --deadline-minutes must be > 0 (got {args.deadline_minutes:g})")
    if len(labels) != len(args.curves):
        raise SystemExit(f"error: {len(args.curves)} curves but {len(labels)} labels; give one label per curve")
    import matplotlib

    matplotlib.use("Agg")
    records = [load_curve(name) for name in args.curves]
    training = ([training_games(name, record) for name, record in zip(args.curves, records, strict=True)]
                if args.training_games else None)
    updates = [eval_updates(record) for record in records] if args.by_updates else None
    fig = figure(records, labels, target=args.target, deadline_minutes=args.deadline_minutes,
                 linear_minutes=args.linear_minutes, updates=updates, training=training)
    out = RESULTS / f"{args.name}.png"
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
