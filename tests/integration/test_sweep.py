"""`sweep` then `report`: one run directory per game, finished games skipped, cut ones resumed."""

from __future__ import annotations

import json

import pytest
from helpers import TINY_FLAGS

from dqn_jax.config import ConfigError
from dqn_jax.tools import sweep
from dqn_jax.tools.report import main as report_main

FLAGS = [f for f in TINY_FLAGS if not f.startswith("--game=")]  # the tiny CartPole run's settings


def test_sweep_then_report_on_cartpole_with_three_seeds(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert sweep.main(["--games=cartpole", "--num-seeds=3", f"--out={out}", "--total-steps=1200", *FLAGS]) == 0
    summary = json.loads((out / "CartPole" / "summary.json").read_text())
    assert [s["seed"] for s in summary["seeds"]] == [0, 1, 2] and summary["env_steps"] == 1200
    # The same command again: nothing to do. Longer: the run resumes from its checkpoint.
    assert sweep.main(["--games=CartPole", "--num-seeds=3", f"--out={out}", "--total-steps=1200", *FLAGS]) == 0
    assert "finished, skipped" in capsys.readouterr().out
    assert sweep.main(["--games=CartPole", "--num-seeds=3", f"--out={out}", "--total-steps=2000", *FLAGS]) == 0
    longer = json.loads((out / "CartPole" / "summary.json").read_text())
    assert "resuming" in capsys.readouterr().out and longer["resumed_from"] == 1200 and longer["env_steps"] == 2000
    assert report_main([str(out), "--reps=200"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["aggregated_over"] == "raw_return" and report["runs_per_game"] == 3
    # The one score by default: each seed's best params on fresh games; the last evaluation on request.
    assert report["games"]["CartPole"]["raw"] == [s["best_params_return"] for s in longer["seeds"]]
    assert report_main([str(out), "--reps=200", "--score=final"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["games"]["CartPole"]["raw"] == [s["final_eval_return"] for s in longer["seeds"]]


def test_game_sets_and_bad_sweeps(tmp_path, capsys):
    assert sweep.resolve_games("atari5") == ("BattleZone", "DoubleDunk", "NameThisGame", "Phoenix", "Qbert")
    assert len(sweep.resolve_games("atari57")) == 57
    assert sweep.resolve_games("pong,Pong,breakout") == ("Pong", "Breakout")
    with pytest.raises(ConfigError, match="did you mean"):
        sweep.resolve_games("Pongg")
    assert sweep.main(["--games=CartPole", f"--out={tmp_path}", "--run-dir=x"]) == 2
    assert sweep.main(["--games=,", f"--out={tmp_path}"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: --run-dir is set by the sweep") and err[1].startswith("error: --games=',' names")


# Few updates (one per 16 env steps): at the suite's unoptimized compilation a Nature-CNN update
# costs tens of milliseconds, and what this test checks is the sweep, not the learning.
ATARI_FLAGS = ["--total-steps=400", "--num-envs=4", "--train-every=16", "--chunk-steps=200", "--learning-starts=200",
               "--batch-size=32", "--replay-capacity=1000", "--eval-every=400", "--eval-episodes=1",
               "--final-eval-episodes=0", "--max-episode-steps=100", "--eval-max-episode-steps=200",
               "--health-every=1000", "--no-progress"]


def test_atari_sweep_shared_by_two_processes_then_report(tmp_path, capsys):
    """Pong and Breakout × 2 seeds, the games split by `--share` (each process one game), then
    human-normalized scores from both run directories."""
    out = tmp_path / "sweep"
    for share in ("0/2", "1/2"):
        assert sweep.main(["--games=Pong,Breakout", "--num-seeds=2", f"--out={out}", f"--share={share}",
                           *ATARI_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert "sweep: Pong (game 1 of 2, share 0/2; 0/1 done): starting" in printed
    assert "sweep: Breakout (game 2 of 2, share 1/2; 0/1 done): starting" in printed
    assert report_main([str(out), "--reps=200", "--score=final"]) == 0  # no best params: --final-eval-episodes=0
    report = json.loads((out / "report.json").read_text())
    assert report["aggregated_over"] == "human_normalized" and sorted(report["games"]) == ["Breakout", "Pong"]
    assert report["runs_per_game"] == 2
    for name in ("mean", "median", "iqm", "optimality_gap"):
        value = report["aggregates"][name]
        assert value["ci_low"] <= value["estimate"] <= value["ci_high"]

