"""CartPole acceptance run: `python -m dqn_jax.train --game=CartPole --seed=S` for several seeds.

Each seed runs as its own process with the preset's defaults and nothing else, timed from the
outside (imports and compilation included). Writes `benchmarks/results/cartpole_cpu.json`.

    python benchmarks/cartpole.py [--seeds 0 1 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cartpole_cpu.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            run_dir = Path(tmp) / f"s{seed}"
            command = [sys.executable, "-m", "dqn_jax.train", "--game=CartPole", f"--seed={seed}",
                       f"--run-dir={run_dir}", "--no-progress"]
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            summary = json.loads((run_dir / "summary.json").read_text())
            evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            curve = [[r["env_steps"], r["eval_return_mean"]] for r in evals if r["kind"] == "eval"]
            rows.append({"seed": seed, "final_eval_return": summary["final_eval_return"],
                         "best_eval_return": summary["best_eval_return"], "env_steps": summary["env_steps"],
                         "process_wall_seconds": round(wall, 1),
                         "train_wall_seconds": round(summary["wall_seconds"], 1),
                         "eval_curve": curve})
            print(f"seed {seed}: final eval return {summary['final_eval_return']:.1f} in {wall:.1f} s")
    write_result(args.out, {"benchmark": "cartpole", "command": "python -m dqn_jax.train --game=CartPole --seed=S",
                            "rows": rows})


if __name__ == "__main__":
    main()
