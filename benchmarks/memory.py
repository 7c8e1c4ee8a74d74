"""Peak resident memory of a short Pong run with the preset's 1M replay (Linux `/usr/bin/time -v`).

    python benchmarks/memory.py [--out FILE]

Runs `python -m dqn_jax.train --game=Pong --total-steps=20000 --learning-starts=5000` and records
the peak RSS, the replay's bytes per transition (from the allocated arrays) and the run's summary
in `benchmarks/results/pong_memory_cpu.json`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from dqn_jax.tools.provenance import write_result

COMMAND = ["-m", "dqn_jax.train", "--game=Pong", "--total-steps=20000", "--learning-starts=5000"]


def replay_bytes_per_transition() -> tuple[float, int]:
    """Returns (bytes per transition, capacity) of the Pong preset's replay, from its array shapes."""
    import jax

    from dqn_jax.agent.replay import bytes_per_transition
    from dqn_jax.loop import envs
    from dqn_jax.loop.loop import make_replay_for
    from dqn_jax.run import presets

    config = presets.preset("Pong")
    replay = make_replay_for(config, envs.facts(envs.make_train_pool(config)))
    shapes = jax.eval_shape(replay.init)
    return bytes_per_transition(shapes), config.replay_capacity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pong_memory_cpu.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        command = ["/usr/bin/time", "-v", sys.executable, *COMMAND, f"--run-dir={run_dir}", "--no-progress"]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
        wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", result.stderr).group(1)
        summary = json.loads((run_dir / "summary.json").read_text())
        doctor = subprocess.run([sys.executable, "-m", "dqn_jax.doctor", str(run_dir)], capture_output=True,
                                text=True)
    per_transition, capacity = replay_bytes_per_transition()
    print(f"peak RSS {peak_kb / 2**20:.2f} GiB ({peak_kb * 1024 / 1e9:.2f} GB), "
          f"{per_transition:,.0f} B per transition, wall {wall}")
    write_result(args.out, {
        "benchmark": "memory", "command": "python " + " ".join(COMMAND),
        "peak_rss_bytes": peak_kb * 1024, "peak_rss_gb": round(peak_kb * 1024 / 1e9, 2),
        "replay_capacity": capacity, "replay_bytes_per_transition": per_transition,
        "replay_gb": round(per_transition * capacity / 1e9, 2), "wall_clock": wall,
        "summary": summary, "doctor_exit_code": doctor.returncode, "doctor_report": doctor.stdout,
    })


if __name__ == "__main__":
    main()
