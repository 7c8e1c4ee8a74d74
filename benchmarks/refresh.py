"""Reruns the CPU results that README.md and docs/results.md quote, and rewrites their JSON.

    python benchmarks/refresh.py [--only NAME ...] [--list]

Each benchmark runs as its own process, one after the other (a timing taken while another job
runs is not a timing: run this on an otherwise idle machine), and writes its JSON under
`benchmarks/results/` with the machine, versions and commit (`provenance.write_result`); each
rerun's minutes are printed as it ends. `--only` reruns some. The docs' figures are then read off
the new JSON.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

BENCHMARKS = Path(__file__).resolve().parent


class Rerun(NamedTuple):
    """One result file and the command that rewrites it."""

    name: str
    args: tuple[str, ...]  # after `python benchmarks/<script>.py`
    result: str  # the JSON it writes, under benchmarks/results/


RERUNS: tuple[Rerun, ...] = (
    Rerun("cartpole", ("cartpole.py",), "cartpole_cpu.json"),
    Rerun("repro", ("repro.py",), "repro_cpu.json"),
    Rerun("memory", ("memory.py",), "pong_memory_cpu.json"),
    Rerun("update_cost", ("update_cost.py", "--game", "Pong", "--config", "", "--torsos", "nature_cnn",
                          "--batch-sizes", "32", "96", "--prioritized", "--convs",
                          "--out", "benchmarks/results/update_cost_pong_cpu.json"), "update_cost_pong_cpu.json"),
    Rerun("update_cost_torsos", ("update_cost.py", "--out", "benchmarks/results/update_cost_torsos_pong_cpu.json"),
          "update_cost_torsos_pong_cpu.json"),
    Rerun("fps_pong_batch32", ("fps.py", "--game=Pong", "--seeds", "1", "--batch-size", "32",
                               "--out", "benchmarks/results/fps_pong_cpu_batch32.json"), "fps_pong_cpu_batch32.json"),
    Rerun("health_cost", ("health_cost.py",), "health_cost_pong_cpu.json"),
    Rerun("rules_cost", ("rules_cost.py",), "rules_cost_cpu.json"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[r.name for r in RERUNS], help="rerun these alone")
    parser.add_argument("--list", action="store_true", help="list the reruns and stop")
    args = parser.parse_args()
    chosen = [r for r in RERUNS if not args.only or r.name in args.only]
    if args.list:
        for rerun in chosen:
            print(f"{rerun.name:18} benchmarks/results/{rerun.result}  python benchmarks/{' '.join(rerun.args)}")
        return 0
    print(f"{len(chosen)} reruns: {', '.join(r.name for r in chosen)}", flush=True)
    failed = []
    for rerun in chosen:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(BENCHMARKS / rerun.args[0]), *rerun.args[1:]], cwd=BENCHMARKS.parent)
        minutes = (time.perf_counter() - start) / 60
        status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
        print(f"{rerun.name}: {status} in {minutes:.1f} min -> benchmarks/results/{rerun.result}", flush=True)
        if done.returncode != 0:
            failed.append(rerun.name)
    if failed:
        print(f"error: {len(failed)} reruns failed: {', '.join(failed)}; their JSON are as they were", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
