"""Seeds sharded over several devices, end to end: the CartPole preset with 8 seeds on 4 devices, twice.

    python benchmarks/devices.py [--devices 4] [--seeds 8] [--game CartPole] [--out FILE]

Without accelerators the devices are XLA's forced CPU devices
(`--xla_force_host_platform_device_count`), the only multi-device setting tested so far; sharding
is experimental (`DQN_JAX_SHARD_SEEDS=1`, set here), and on 2026-11-27 this very run hung inside
the compiled chunk, so it has no result yet: run it with a timeout. Each run
is `python -m dqn_jax.train --game=G --num-seeds=S` in its own process; the two are then compared
with `python -m dqn_jax.repro compare`. Records each agent's final and best-params returns, the
devices the summary reports and whether the runs are identical, as JSON in `benchmarks/results/`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dqn_jax.provenance import write_result


def train(run_dir: Path, game: str, seeds: int, devices: int) -> dict:
    """Runs one training process; returns its summary and wall-clock seconds."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", DQN_JAX_SHARD_SEEDS="1")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dqn_jax.train", f"--game={game}", f"--num-seeds={seeds}",
                    f"--run-dir={run_dir}", "--no-progress"], check=True, env=env)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"summary": summary, "process_seconds": round(time.perf_counter() - started, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--game", default="CartPole")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/devices_cartpole_cpu.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        runs = [train(Path(scratch) / name, args.game, args.seeds, args.devices) for name in ("a", "b")]
        compare = subprocess.run([sys.executable, "-m", "dqn_jax.repro", "compare", str(Path(scratch) / "a"),
                                  str(Path(scratch) / "b")], capture_output=True, text=True)
    first = runs[0]["summary"]
    result = {
        "benchmark": "devices", "game": args.game, "seeds": args.seeds, "forced_cpu_devices": args.devices,
        "summary_devices": first["devices"], "device_kind": first["device_kind"],
        "final_eval_return": [s["final_eval_return"] for s in first["seeds"]],
        "best_params_return": [s["best_params_return"] for s in first["seeds"]],
        "process_seconds": [r["process_seconds"] for r in runs],
        "repro_compare": compare.stdout.strip().splitlines()[-1] if compare.stdout.strip() else compare.stderr,
        "identical": compare.returncode == 0,
    }
    print(json.dumps(result, indent=1))
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
