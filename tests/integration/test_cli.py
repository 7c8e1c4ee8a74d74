"""The command line as a user meets it: bad input is one `error:` line and a non-zero exit, no traceback."""

from __future__ import annotations

import time

from helpers import TINY_FLAGS, run_cli


def test_cli_config_error_is_one_line_without_traceback():
    result = run_cli("dqn_jax.train", "--game=CartPole", "--learning-rate=-1", timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: learning_rate = -1.0 is invalid: must be > 0"]
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_bad_type_and_unknown_game_are_one_line_each():
    result = run_cli("dqn_jax.train", "--game=CartPole", "--batch-size=big", timeout=120)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: command line: Error parsing --batch-size: invalid literal for int() with base 10: 'big'"]
    result = run_cli("dqn_jax.train", "--game=SpaceInvader", timeout=120)
    assert result.returncode == 2 and "did you mean SpaceInvaders" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_refuses_a_replay_over_memory_before_allocating():
    start = time.monotonic()
    result = run_cli("dqn_jax.train", "--game=Pong", "--replay-capacity=1000000000", timeout=120)
    assert result.returncode == 2 and time.monotonic() - start < 30
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: this run needs about 7,067.03 GB for its replay (1,000,000,000 transitions")
    assert line.endswith("lower --replay-capacity") and "Traceback" not in result.stdout


def test_process_zero_alone_gets_one_line_naming_the_missing_process():
    from dqn_jax.loop.distributed import localhost_group_flags

    start = time.monotonic()
    result = run_cli("dqn_jax.train", *TINY_FLAGS, *localhost_group_flags(2)[0], "--distributed-timeout=3",
                     timeout=120)
    assert result.returncode == 2 and time.monotonic() - start < 60
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: the process group at localhost:") and "process 1 of 2 never came" in line
    assert "Traceback" not in result.stdout + result.stderr
