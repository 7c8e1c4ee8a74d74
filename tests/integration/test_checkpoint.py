"""Checkpoints: exact restore, SIGTERM then --resume, and clear errors for broken checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import REPO, TINY_FLAGS, run_cli, run_loop, tiny_cartpole_config

from dqn_jax.loop.loop import agent_keys, build_loop
from dqn_jax.run import checkpoint
from dqn_jax.run.metrics import read_metrics
from dqn_jax.run.train import main, train


@pytest.mark.parametrize("prioritized, average", [(False, 0), (True, 0), (False, 50)])
def test_restored_state_continues_exactly_like_the_uninterrupted_run(tiny_cartpole, tmp_path, prioritized, average):
    config = dataclasses.replace(tiny_cartpole, prioritized_replay=prioritized, eval_average_updates=average)
    loop, state = run_loop(config, chunks=2)  # 800 env steps: learning has started, Adam's moments are non-zero
    keys = agent_keys(config)
    saved = checkpoint.StateCheckpoints(tmp_path, keep=2)
    saved.save(800, state.agents, {"iteration": 200})
    saved.close()

    update = jax.jit(jax.vmap(loop.learner.update))
    uninterrupted = state.agents
    restored, meta, step = checkpoint.restore_state(tmp_path, loop.abstract_agents(keys))
    assert (step, meta["iteration"]) == (800, 200)
    for _ in range(25):
        uninterrupted, _ = update(uninterrupted)
        restored, _ = update(restored)
    assert int(restored.updates[0]) > 25
    assert (restored.priorities is not None) == prioritized  # saved and restored with the agents
    assert (restored.average_params is not None) == bool(average)
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_checkpoint_from_before_the_running_average_restores_and_one_without_it_is_refused(tiny_cartpole, tmp_path):
    loop, state = run_loop(tiny_cartpole, chunks=1)
    agents = state.agents
    older = {f.name: getattr(agents, f.name) for f in dataclasses.fields(agents) if f.name != "average_params"}
    saved = checkpoint.StateCheckpoints(tmp_path, keep=2)
    saved.save(400, older, {"iteration": 100})  # as written before `average_params` existed
    saved.close()
    restored, _, _ = checkpoint.restore_state(tmp_path, loop.abstract_agents(agent_keys(tiny_cartpole)))
    assert restored.average_params is None
    for a, b in zip(jax.tree.leaves(agents), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    averaging = dataclasses.replace(tiny_cartpole, eval_average_updates=50)  # needs what the checkpoint lacks
    with pytest.raises(checkpoint.CheckpointError, match="does not fit this config"):
        checkpoint.restore_state(tmp_path, build_loop(averaging).abstract_agents(agent_keys(averaging)))


def test_sigterm_leaves_a_checkpoint_and_resume_continues_from_its_step(tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [sys.executable, "-m", "dqn_jax.train", *TINY_FLAGS, "--total-steps=10000000", f"--run-dir={run_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.time() + 180
    while time.time() < deadline:
        metrics = run_dir / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count('"train"') >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "Resume with: python -m dqn_jax.train --resume=" in stdout + stderr

    summary = json.loads((run_dir / "summary.json").read_text())
    stopped_at = summary["env_steps"]
    assert summary["stop_signal"] == "SIGTERM" and summary["interrupted"]
    assert checkpoint.latest_step(run_dir) == stopped_at > 0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # every line whole: nothing torn by the signal

    resumed = run_cli("dqn_jax.train", f"--resume={run_dir}", f"--total-steps={stopped_at + 800}")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"] == stopped_at and summary["env_steps"] == stopped_at + 800
    steps = [row["env_steps"] for row in read_metrics(run_dir, "train")]
    assert steps == sorted(steps) and steps[-1] == stopped_at + 800
    assert checkpoint.latest_step(run_dir) == stopped_at + 800


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """An 800-env-step tiny CartPole run with its checkpoint, trained once per module (per worker)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train(dataclasses.replace(tiny_cartpole_config(), total_steps=800, eval_every=800), run_dir=run_dir)
    return run_dir


@pytest.fixture
def finished_run(trained_run, tmp_path):
    """A copy of `trained_run` of the test's own, to damage or resume: a resume takes the
    directory it is given, not the one its config.toml names."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def test_a_truncated_checkpoint_is_one_clear_line_without_traceback(finished_run):
    step_dir = checkpoint.state_dir(finished_run) / str(checkpoint.latest_step(finished_run))
    largest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])

    result = run_cli("dqn_jax.train", f"--resume={finished_run}", "--total-steps=1600")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "corrupted" in error_lines[0] and str(step_dir) in error_lines[0]


def test_missing_checkpoint_and_incompatible_config_are_reported(finished_run, capsys):
    assert main([f"--resume={finished_run}", "--hidden-sizes", "32", "--total-steps=1600"]) == 1
    assert "does not fit this config" in capsys.readouterr().err

    for path in sorted(checkpoint.state_dir(finished_run).iterdir()):
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
    assert main([f"--resume={finished_run}", "--total-steps=1600"]) == 1
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["--resume=/nonexistent/run"]) == 2
    assert "no config.toml there" in capsys.readouterr().err


def test_best_params_are_saved_with_their_score(finished_run):
    params, meta = checkpoint.load_best_params(finished_run, seed=0)
    best = max(row["eval_return_mean"] for row in read_metrics(finished_run, "eval"))
    assert meta["eval_return_mean"] == best and meta["seed"] == 0
    assert jax.tree.leaves(params)[0].ndim >= 1  # one agent's params: no seed axis


def test_a_flipped_byte_at_the_same_size_is_caught_by_the_checksum(finished_run, capsys):
    step_dir = checkpoint.state_dir(finished_run) / str(checkpoint.latest_step(finished_run))
    largest = max((p for p in step_dir.rglob("*") if p.is_file() and p.name != checkpoint.MANIFEST),
                  key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    largest.write_bytes(bytes(data))
    assert main([f"--resume={finished_run}", "--total-steps=1600"]) == 1
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert "corrupted" in line and "does not match its checksum" in line


def test_a_resume_that_would_train_nothing_is_refused_and_the_run_is_untouched(finished_run, capsys):
    before = {name: (finished_run / name).read_bytes() for name in ("summary.json", "metrics.jsonl")}
    assert main([f"--resume={finished_run}", "--total-steps=800"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: total_steps = 800 is not past the checkpoint of {finished_run} at env step 800: nothing to train; "
        "pass --total-steps above 800 to continue the run"]
    assert {name: (finished_run / name).read_bytes() for name in before} == before


def test_a_resume_says_where_it_resumed_and_its_last_line_counts_this_process_alone(finished_run, capsys):
    assert main([f"--resume={finished_run}", "--total-steps=1600", "--final-eval-episodes=0"]) == 0
    out = capsys.readouterr().out
    assert f"run directory: {finished_run} (resumed from its checkpoint at env step 800 of 1,600)" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("last evaluation ") and "800 env steps (800 → 1,600) in " in last
    assert last.endswith(f"run directory {finished_run}")


def test_keep_checkpoints_keeps_the_newest(tiny_cartpole, tmp_path):
    train(dataclasses.replace(tiny_cartpole, total_steps=2_000, checkpoint_every=400, keep_checkpoints=2,
                              final_eval_episodes=0), run_dir=tmp_path)
    kept = sorted(int(p.name) for p in checkpoint.state_dir(tmp_path).iterdir() if p.name.isdigit())
    assert kept == [1_600, 2_000]


def test_resume_cuts_the_episodes_in_flight_at_the_newest_slot(tiny_cartpole):
    loop, state = run_loop(tiny_cartpole, chunks=2)
    replay = jax.device_get(state.agents.replay)
    newest = (int(replay.total_steps[0]) - 1) % replay.is_transition.shape[1]
    assert replay.is_transition[0, newest].any()  # before: the newest step's envs are mid-episode
    resumed = jax.device_get(loop.resume(state.agents, int(state.iteration)).agents.replay)
    assert not resumed.is_transition[0, newest].any()  # its next frame will be a new episode's first
    untouched = np.delete(np.arange(replay.is_transition.shape[1]), newest)
    np.testing.assert_array_equal(resumed.is_transition[0, untouched], replay.is_transition[0, untouched])


def test_a_resumed_runs_progress_bar_starts_at_its_checkpoint(finished_run):
    from dqn_jax.run.evaluate import run_config
    from dqn_jax.run.trainer import Trainer

    config = dataclasses.replace(run_config(finished_run), progress=True, total_steps=1_600)
    trainer = Trainer(config, finished_run, resume=True)
    try:
        assert trainer.progress.bar.tasks[0].completed == 800 and trainer.progress.bar.tasks[0].total == 1_600
    finally:
        trainer.close()
