"""Several processes training one run with `jax.distributed` on localhost (CPU devices)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import TINY_FLAGS
from xla_flags import DEVICE_COUNT, FUSION_EMITTERS, with_xla_flags

from dqn_jax.loop.distributed import localhost_group_flags
from dqn_jax.run.metrics import read_metrics
from dqn_jax.tools.repro import compare_runs

FLAGS = [*TINY_FLAGS, "--num-seeds=8", "--eval-every=800", "--fingerprint-every=25", "--final-eval-episodes=0"]


def train(run_dir: Path, *flags: str, processes: int = 1, devices_each: int = 4) -> list[subprocess.CompletedProcess]:
    """Runs `python -m dqn_jax.train` as `processes` processes of one group, each with
    `devices_each` forced CPU devices; returns them once all have exited. They compile with
    training's fusion emitters (not the suite's older one): two processes' sharded program and one
    process's are different programs, whose bits only training's emitter keeps identical."""
    env = with_xla_flags(os.environ, add=[f"{DEVICE_COUNT}={devices_each}"], drop=[DEVICE_COUNT, FUSION_EMITTERS])
    group = localhost_group_flags(processes) if processes > 1 else [[]]
    command = [sys.executable, "-m", "dqn_jax.train", *flags]
    running = [subprocess.Popen([*command, *place], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for place in group]
    done = []
    for process in running:
        stdout, stderr = process.communicate(timeout=400)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return done


def test_two_processes_train_one_run_like_one_process_and_resume_it(tmp_path):
    """8 agents over 2 processes × 2 CPU devices: process 0 writes every seed's rows, the agents
    are bit for bit those of one process with 4 devices, and `--resume` continues the run."""
    two, one = tmp_path / "two", tmp_path / "one"
    runs = train(two, *FLAGS, "--total-steps=800", f"--run-dir={two}", processes=2, devices_each=2)
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    assert runs[1].stdout.count("eval return") == 0  # only process 0 prints
    summary = json.loads((two / "summary.json").read_text())
    assert (summary["processes"], summary["devices"], summary["env_steps"]) == (2, 4, 800)
    train_rows = read_metrics(two, "train")
    assert sorted({r["seed"] for r in train_rows}) == list(range(8))
    assert len(train_rows) == 8 * 2  # one row per seed per chunk, written once

    assert [r.returncode for r in train(one, *FLAGS, "--total-steps=800", f"--run-dir={one}")] == [0]
    lines: list[str] = []
    assert compare_runs(two, one, out=lines.append), lines
    assert lines[-1].startswith("identical")

    resumed = train(two, f"--resume={two}", "--total-steps=1200", processes=2, devices_each=2)
    assert [r.returncode for r in resumed] == [0, 0], resumed[0].stderr[-2000:]
    summary = json.loads((two / "summary.json").read_text())
    assert (summary["resumed_from"], summary["env_steps"], summary["processes"]) == (800, 1200, 2)
    assert sorted({r["seed"] for r in read_metrics(two, "train") if r["env_steps"] > 800}) == list(range(8))


def test_bad_process_group_flags_get_one_error_line(tmp_path):
    env = dict(os.environ)
    for flags, start in ((["--num-processes=2"], "error: --coordinator-address, --num-processes and --process-id go"),
                         (["--coordinator-address=localhost:1", "--num-processes=2", "--process-id=2"],
                          "error: --process-id=2 must be in 0..1")):
        done = subprocess.run([sys.executable, "-m", "dqn_jax.train", *TINY_FLAGS, *flags, f"--run-dir={tmp_path}"],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2 and done.stderr.startswith(start), done.stderr
        assert len(done.stderr.splitlines()) == 1
