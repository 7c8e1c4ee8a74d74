"""Bit-reproducibility on this machine: `python -m dqn_jax.repro` on CartPole, twice, and across seeds.

    python benchmarks/repro.py [--steps 20000] [--out FILE]

Records each command's output and exit code in `benchmarks/results/repro_<backend>.json`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from dqn_jax.tools.provenance import write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import jax

    commands = [
        ["--game=CartPole", "--seed=0", f"--steps={args.steps}"],
        ["--game=CartPole", "--seed=0", f"--steps={args.steps}"],
        ["--game=CartPole", "--seed=0", f"--steps={args.steps}", "--other-seed=1"],
    ]
    rows = []
    for command in commands:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "dqn_jax.repro", *command], capture_output=True, text=True)
        output = result.stdout.strip()
        rows.append({"command": "python -m dqn_jax.repro " + " ".join(command), "exit_code": result.returncode,
                     "output": output, "wall_seconds": round(time.perf_counter() - start, 1)})
        print(f"{rows[-1]['command']}\n  -> exit {result.returncode}: {output}")
    out = args.out or str(Path(__file__).parent / "results" / f"repro_{jax.default_backend()}.json")
    write_result(out, {"benchmark": "repro", "rows": rows})


if __name__ == "__main__":
    main()
