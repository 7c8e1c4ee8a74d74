"""Record a run's learning curve: JSON of the evaluation curve and where the time went, a PNG plot,
and (with `--metrics`) the run's metrics gzipped.

    python benchmarks/learning_curve.py RUN_DIR --name pong_cpu_atari_s0 [--random-return -20.7] [--metrics]
        [--command "python -m dqn_jax.train ..."] [--shared "what else ran on the machine"]

Writes `benchmarks/results/<name>.json` (config, summary, eval curve with the wall-clock and the
update count of each evaluation, the training games' mean return per `--train-window` env steps,
the time split between random steps, learning chunks and everything outside the chunks) and
`<name>.png`; `--metrics` also `<name>_metrics.jsonl.gz`. The run may be unfinished (no
`summary.json` yet): the curve is what its metrics hold. Set `DQN_JAX_COMMIT` when the run's code
is not the tree's commit (provenance records it).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import shutil
from pathlib import Path
from typing import Sequence

from dqn_jax.loop.iteration import updates_after
from dqn_jax.tools.doctor import load_run
from dqn_jax.tools.provenance import write_result

RESULTS = Path(__file__).parent / "results"


def time_split(config, rows: list[dict], run_wall_seconds: float | None) -> dict:
    """Returns where one agent's run time went (seconds): chunks of random steps before learning,
    chunks with learning (the first one compiles), and the rest — evaluations, building pools,
    checkpoints — as the run's wall-clock minus the chunks."""
    seed = min(r["seed"] for r in rows if r["kind"] == "train")
    train = [r for r in rows if r["kind"] == "train" and r["seed"] == seed]
    random_steps = learning = 0.0
    previous = 0
    for row in train:
        seconds = (row["env_steps"] - previous) / row["steps_per_sec"]
        if row.get("loss") is None:
            random_steps += seconds
        else:
            learning += seconds
        previous = row["env_steps"]
    split = {"random_step_chunks": round(random_steps, 1), "learning_chunks": round(learning, 1)}
    if run_wall_seconds is not None:
        split["outside_chunks"] = round(run_wall_seconds - random_steps - learning, 1)
        split["run_wall_seconds"] = round(run_wall_seconds, 1)
    learned = [r for r in train if r.get("loss") is not None][1:]  # the first compiled the learner
    if learned:
        rates = sorted(r["steps_per_sec"] for r in learned)
        split["learning_env_steps_per_sec_median"] = round(rates[len(rates) // 2], 1)
    return split


def training_returns(rows: list[dict], window: int) -> list[dict]:
    """Returns the first seed's training games (played at the training epsilon, every one that
    ended) grouped by the `window` of env steps whose chunks ended them: `[{"env_steps_end",
    "games", "return_mean"}]` in order, windows without a game left out (the last window, if the
    rows end inside it, ends at their last env step). Tens of games per window where an
    evaluation has 8: the steadier measure for telling two runs apart by env steps."""
    if window <= 0:
        raise ValueError(f"window must be > 0 (got {window})")
    train = [r for r in rows if r["kind"] == "train"]
    if not train:
        return []
    seed = min(r["seed"] for r in train)
    last = max(r["env_steps"] for r in train)
    totals: dict[int, tuple[int, float]] = {}  # window end -> (games, sum of their returns)
    for row in train:
        if row["seed"] != seed or not row.get("episodes") or row.get("train_return_mean") is None:
            continue
        # The window's last env step; an unfinished last window ends where the run's rows do.
        end = min(-(-row["env_steps"] // window) * window, last)
        games, summed = totals.get(end, (0, 0.0))
        totals[end] = (games + row["episodes"], summed + row["episodes"] * row["train_return_mean"])
    return [{"env_steps_end": end, "games": games, "return_mean": round(summed / games, 3)}
            for end, (games, summed) in sorted(totals.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--random-return", type=float, default=None, help="score of random play, drawn as a line")
    parser.add_argument("--metrics", action="store_true", help="also write the run's metrics, gzipped")
    parser.add_argument("--command", default=None, help="the command that ran it, recorded as given")
    parser.add_argument("--shared", default=None, help="what else ran on the machine meanwhile, recorded as given")
    parser.add_argument("--train-window", type=int, default=100_000,
                        help="env steps per window of the training games' mean return")
    args = parser.parse_args()
    if args.train_window <= 0:
        raise SystemExit(f"error: --train-window must be > 0 (got {args.train_window})")
    config, rows = load_run(args.run_dir)
    summary_path = args.run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    evals = [r for r in rows if r["kind"] == "eval"]
    window = config.eval_return_window
    curve = [{"env_steps": r["env_steps"], "updates": updates_after(config, r["env_steps"]), "seed": r["seed"],
              "wall_seconds": r.get("wall_seconds"),
              "eval_return_mean": r["eval_return_mean"], "eval_return_std": r["eval_return_std"],
              f"eval_return_mean{window}": r.get(f"eval_return_mean{window}"), "eval_episodes": r["eval_episodes"],
              "eval_length_mean": r.get("eval_length_mean")} for r in evals]
    run_wall = summary["run_wall_seconds"] if summary else None
    train_returns = training_returns(rows, args.train_window)
    write_result(RESULTS / f"{args.name}.json", {
        "benchmark": "learning_curve", "game": config.game, "command": args.command, "shared_machine": args.shared,
        "config": dataclasses.asdict(config), "summary": summary, "random_return": args.random_return,
        "eval_curve": curve, "train_return_window": args.train_window,
        "train_returns": train_returns,
        "time_split_seconds": time_split(config, rows, run_wall),
    })
    if args.metrics:
        with open(args.run_dir / "metrics.jsonl", "rb") as source, \
                gzip.open(RESULTS / f"{args.name}_metrics.jsonl.gz", "wb") as target:
            shutil.copyfileobj(source, target)
        print(f"wrote {RESULTS / (args.name + '_metrics.jsonl.gz')}")
    plot(config, curve, summary, args.name, args.random_return, train_returns)


def plot(config, curve: list[dict], summary: dict | None, name: str, random_return: float | None,
         train_returns: Sequence[dict] = ()) -> None:
    """Writes `<name>.png`: evaluation return against env steps and against wall-clock minutes, and
    on the env-steps axis the training games' mean return per window (at each window's end)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = config.eval_return_window
    timed = bool(curve) and all(c["wall_seconds"] is not None for c in curve)
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(11 if timed else 7, 4), squeeze=False)
    xs = [("env steps", [c["env_steps"] for c in curve])]
    if timed:
        xs.append(("wall-clock minutes from the command's start", [c["wall_seconds"] / 60 for c in curve]))
    for ax, (label, x) in zip(axes[0], xs, strict=True):
        ax.plot(x, [c["eval_return_mean"] for c in curve], marker="o", ms=3, label="eval return (mean of games)")
        ax.plot(x, [c[f"eval_return_mean{window}"] for c in curve], label=f"mean of last {window} games")
        if train_returns and label == "env steps":
            ax.plot([w["env_steps_end"] for w in train_returns], [w["return_mean"] for w in train_returns],
                    drawstyle="steps-pre", lw=1, alpha=0.8, label="training games, mean per window")
        if random_return is not None:
            ax.axhline(random_return, color="grey", ls="--", label=f"random play ({random_return})")
        ax.set_xlabel(label)
        ax.set_ylabel("return (raw game score)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    wall = f", {summary['run_wall_seconds'] / 60:.0f} min" if summary else ""
    fig.suptitle(f"{config.game}: {name}{wall}")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=90)
    print(f"wrote {RESULTS / (name + '.png')}")


if __name__ == "__main__":
    main()
