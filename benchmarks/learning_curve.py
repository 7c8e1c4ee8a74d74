"""Record a finished run's learning curve: JSON of the evaluation curve and a PNG plot.

    python benchmarks/learning_curve.py RUN_DIR --name breakout_cpu_1h [--random-return 1.7]

Writes `benchmarks/results/<name>.json` (config, summary, eval curve) and `<name>.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from dqn_jax.doctor import load_run
from dqn_jax.provenance import write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--random-return", type=float, default=None, help="score of random play, drawn as a line")
    args = parser.parse_args()
    config, rows = load_run(args.run_dir)
    summary_path = args.run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    evals = [r for r in rows if r["kind"] == "eval"]
    window = config.eval_return_window
    curve = [{"env_steps": r["env_steps"], "eval_return_mean": r["eval_return_mean"],
              "eval_return_std": r["eval_return_std"], f"eval_return_mean{window}": r.get(f"eval_return_mean{window}"),
              "eval_episodes": r["eval_episodes"]} for r in evals]
    train = [r for r in rows if r["kind"] == "train"]
    results = Path(__file__).parent / "results"
    write_result(results / f"{args.name}.json", {
        "benchmark": "learning_curve", "game": config.game, "config": dataclasses.asdict(config), "summary": summary,
        "random_return": args.random_return, "eval_curve": curve,
        "train_steps_per_sec_median": sorted(r["steps_per_sec"] for r in train)[len(train) // 2] if train else None,
    })

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [c["env_steps"] for c in curve]
    ax.plot(steps, [c["eval_return_mean"] for c in curve], marker="o", ms=3, label="eval return (mean of episodes)")
    ax.plot(steps, [c[f"eval_return_mean{window}"] for c in curve], label=f"mean of last {window} episodes")
    if args.random_return is not None:
        ax.axhline(args.random_return, color="grey", ls="--", label=f"random play ({args.random_return})")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return (raw game score)")
    wall = f", {summary['wall_seconds'] / 60:.0f} min" if summary else ""
    ax.set_title(f"{config.game}: {args.name}{wall}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(results / f"{args.name}.png", dpi=90)
    print(f"wrote {results / (args.name + '.png')}")


if __name__ == "__main__":
    main()
