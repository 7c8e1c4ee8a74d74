"""XLA's deterministic GPU ops: asked for where a command starts, never by importing the package."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO

from dqn_jax import determinism
from dqn_jax.determinism import FLAG, missing_on_gpu, request_deterministic_ops


def test_importing_the_package_leaves_xla_flags_alone():
    code = ("import os; os.environ['XLA_FLAGS'] = '--xla_dump_to=/tmp/x'; "
            "import dqn_jax, dqn_jax.train, dqn_jax.repro, dqn_jax.sweep, dqn_jax.evaluate; "
            "print(os.environ['XLA_FLAGS'])")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop(determinism.OPT_OUT, None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "--xla_dump_to=/tmp/x"


def test_the_request_adds_the_flag_once_and_respects_the_user():
    environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    assert request_deterministic_ops(environ) and environ["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {FLAG}"
    assert request_deterministic_ops(environ) and environ["XLA_FLAGS"].count("deterministic") == 1
    said_false = {"XLA_FLAGS": "--xla_gpu_deterministic_ops=false"}
    assert not request_deterministic_ops(said_false) and said_false["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=false"
    opted_out = {determinism.OPT_OUT: "1"}
    assert not request_deterministic_ops(opted_out) and "XLA_FLAGS" not in opted_out


def test_a_gpu_run_without_the_flag_is_warned_about():
    assert missing_on_gpu("cpu", {}) is None and missing_on_gpu("gpu", {"XLA_FLAGS": FLAG}) is None
    assert missing_on_gpu("gpu", {determinism.OPT_OUT: "1"}) is None
    assert missing_on_gpu("gpu", {}).startswith(f"XLA_FLAGS lacks {FLAG}")


def test_the_train_command_asks_for_the_flag_first(monkeypatch, capsys):
    from dqn_jax.run.train import main

    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.delenv(determinism.OPT_OUT, raising=False)
    assert main(["--game=CartPole", "--learning-rate=-1"]) == 2
    assert FLAG in os.environ["XLA_FLAGS"] and capsys.readouterr().err.startswith("error: learning_rate")
