"""CartPole acceptance run: `python -m dqn_jax.train --game=CartPole --seed=S` for several seeds.

Each seed runs as its own process with the preset's defaults and nothing else, timed from the
outside (imports and compilation included). Then `--num-seeds=8` trains seeds 0..7 in one program,
compared with the single-seed wall time. Writes `benchmarks/results/cartpole_cpu.json`.
`--train-flag` adds a flag to every run (repeat it for several), e.g. prioritized replay:

    python benchmarks/cartpole.py [--seeds 0 1 2] [--multi-seed 8] [--train-flag=--prioritized-replay] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dqn_jax.tools.provenance import write_result


def run_timed(run_dir: Path, *flags: str) -> tuple[dict, float]:
    """Runs `python -m dqn_jax.train --game=CartPole FLAGS` in its own process; returns (summary, wall s)."""
    command = [sys.executable, "-m", "dqn_jax.train", "--game=CartPole", *flags, f"--run-dir={run_dir}",
               "--no-progress"]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return json.loads((run_dir / "summary.json").read_text()), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--multi-seed", type=int, default=8, help="agents in the one-program run (0: skip)")
    parser.add_argument("--train-flag", action="append", default=[], help="a flag added to every run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cartpole_cpu.json"))
    args = parser.parse_args()
    extra = args.train_flag
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            run_dir = Path(tmp) / f"s{seed}"
            summary, wall = run_timed(run_dir, f"--seed={seed}", *extra)
            evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            curve = [[r["env_steps"], r["eval_return_mean"]] for r in evals if r["kind"] == "eval"]
            # Prioritized replay's statistics over the run (healthy ranges, docs/health.md); absent without it.
            ranges = {name: [min(values), max(values)] for name in ("per_effective_fraction", "per_weight_max")
                      if (values := [r[name] for r in evals if r["kind"] == "health" and r.get(name) is not None])}
            doctor = subprocess.run([sys.executable, "-m", "dqn_jax.doctor", str(run_dir)], capture_output=True,
                                    text=True)
            if seed == args.seeds[0] and not extra:  # the doctor's plots of the preset's run, in docs/health.md
                shutil.copy(run_dir / "doctor.png", Path(args.out).parent / "doctor_cartpole.png")
            rows.append({"seed": seed, "final_eval_return": summary["final_eval_return"],
                         "doctor_exit_code": doctor.returncode, "doctor_report": doctor.stdout,
                         "best_eval_return": summary["best_eval_return"], "env_steps": summary["env_steps"],
                         "process_wall_seconds": round(wall, 1),
                         "train_wall_seconds": round(summary["wall_seconds"], 1),
                         "eval_curve": curve, **({"health_ranges": ranges} if ranges else {})})
            print(f"seed {seed}: final eval return {summary['final_eval_return']:.1f} in {wall:.1f} s")
        multi = None
        if args.multi_seed:
            summary, wall = run_timed(Path(tmp) / "multi", f"--num-seeds={args.multi_seed}", *extra)
            finals = [s["final_eval_return"] for s in summary["seeds"]]
            single_wall = sum(r["process_wall_seconds"] for r in rows) / len(rows)
            multi = {"command": " ".join(["python -m dqn_jax.train --game=CartPole", f"--num-seeds={args.multi_seed}",
                                          *extra]),
                     "seeds": summary["seeds"], "seeds_at_or_above_475": sum(f >= 475 for f in finals),
                     "process_wall_seconds": round(wall, 1), "single_seed_wall_seconds_mean": round(single_wall, 1),
                     "wall_ratio_to_one_seed": round(wall / single_wall, 2)}
            print(f"{args.multi_seed} seeds in one program: {multi['seeds_at_or_above_475']} at >= 475, "
                  f"{wall:.1f} s = {wall / single_wall:.2f}x one seed")
    write_result(args.out, {"benchmark": "cartpole",
                            "command": " ".join(["python -m dqn_jax.train --game=CartPole --seed=S", *extra]),
                            "rows": rows, "multi_seed": multi})


if __name__ == "__main__":
    main()
