"""Seeds sharded over several devices, end to end: the CartPole preset with 8 seeds on 4 devices,
twice — the second time, with `--processes 2`, as 2 `jax.distributed` processes on localhost
holding 2 devices each.

    python benchmarks/devices.py [--devices 4] [--processes 1] [--seeds 8] [--game CartPole] [--out FILE]

Without accelerators the devices are XLA's forced CPU devices
(`--xla_force_host_platform_device_count`), the only multi-device setting tested here. Each run
is `python -m dqn_jax.train --game=G --num-seeds=S`; the two are then compared with
`python -m dqn_jax.repro compare` (same devices, same shards: they must agree bit for bit). Records
each agent's final and best-params returns, the devices and processes the summary reports and
whether the runs are identical, as JSON in `benchmarks/results/`.
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

from dqn_jax.loop.distributed import localhost_group_flags
from dqn_jax.tools.provenance import write_result


def train(run_dir: Path, game: str, seeds: int, devices: int, processes: int) -> dict:
    """Runs one training run as `processes` processes sharing `devices` devices; returns its
    summary and wall-clock seconds."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices // processes}")
    command = [sys.executable, "-m", "dqn_jax.train", f"--game={game}", f"--num-seeds={seeds}",
               f"--run-dir={run_dir}", "--no-progress"]
    group = localhost_group_flags(processes) if processes > 1 else [[]]
    started = time.perf_counter()
    running = [subprocess.Popen(command + flags, env=env) for flags in group]
    codes = [p.wait() for p in running]
    if any(codes):
        raise SystemExit(f"error: a training process exited with {codes}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"summary": summary, "process_seconds": round(time.perf_counter() - started, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--processes", type=int, default=1, help="processes of the second run")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--game", default="CartPole")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    suffix = f"_{args.processes}processes" if args.processes > 1 else ""
    out = args.out or Path(f"benchmarks/results/devices_{args.game.lower()}_cpu{suffix}.json")
    with tempfile.TemporaryDirectory() as scratch:
        runs = [train(Path(scratch) / "a", args.game, args.seeds, args.devices, 1),
                train(Path(scratch) / "b", args.game, args.seeds, args.devices, args.processes)]
        compare = subprocess.run([sys.executable, "-m", "dqn_jax.repro", "compare", str(Path(scratch) / "a"),
                                  str(Path(scratch) / "b")], capture_output=True, text=True)
    result = {
        "benchmark": "devices", "game": args.game, "seeds": args.seeds, "forced_cpu_devices": args.devices,
        "processes": [r["summary"].get("processes", 1) for r in runs],
        "summary_devices": [r["summary"]["devices"] for r in runs], "device_kind": runs[0]["summary"]["device_kind"],
        "final_eval_return": [[s["final_eval_return"] for s in r["summary"]["seeds"]] for r in runs],
        "best_params_return": [[s["best_params_return"] for s in r["summary"]["seeds"]] for r in runs],
        "process_seconds": [r["process_seconds"] for r in runs],
        "repro_compare": compare.stdout.strip().splitlines()[-1] if compare.stdout.strip() else compare.stderr,
        "identical": compare.returncode == 0,
    }
    print(json.dumps(result, indent=1))
    write_result(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
