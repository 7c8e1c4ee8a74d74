"""`python -m dqn_jax.report`: per-game scores, human-normalized where possible, and the aggregates."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from dqn_jax import presets, scores
from dqn_jax.report import ReportError, build, main


def fake_run(path, game: str, finals: list[float], first_seed: int = 0) -> None:
    """A run directory of `len(finals)` seeds whose last evaluations returned `finals`."""
    path.mkdir(parents=True)
    config = dataclasses.replace(presets.preset(game), seed=first_seed, num_seeds=len(finals))
    (path / "config.toml").write_text(presets.to_toml(config))
    seeds = [{"seed": first_seed + i, "final_eval_return": f, "best_params_return": f + 1.0}
             for i, f in enumerate(finals)]
    (path / "summary.json").write_text(json.dumps({"game": game, "seeds": seeds}))
    rows = [{"kind": "eval", "env_steps": step, "seed": first_seed + i, "eval_return_mean": f * step / 2000}
            for step in (1000, 2000) for i, f in enumerate(finals)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_sweep_of_two_atari_games_is_aggregated_on_human_normalized_scores(tmp_path, capsys):
    fake_run(tmp_path / "Pong", "Pong", [-20.7, 14.6, 0.0])
    fake_run(tmp_path / "Breakout", "Breakout", [30.5, 1.7, 16.1])
    assert main([str(tmp_path), "--reps", "300", "--score", "final"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["aggregated_over"] == "human_normalized" and report["aggregated_games"] == ["Breakout", "Pong"]
    np.testing.assert_allclose(report["games"]["Pong"]["normalized"], [0.0, 1.0, 20.7 / 35.3])
    np.testing.assert_allclose(report["games"]["Breakout"]["normalized"], [1.0, 0.0, 0.5])
    matrix = np.array([report["games"]["Breakout"]["normalized"], report["games"]["Pong"]["normalized"]]).T
    expected = scores.aggregates(matrix, reps=300)
    assert set(report["aggregates"]) == {"mean", "median", "iqm", "optimality_gap"}
    for name, value in report["aggregates"].items():
        assert value == pytest.approx(expected[name]), name
    assert (tmp_path / "performance_profile.png").stat().st_size and (tmp_path / "score_curves.png").stat().st_size
    assert "iqm" in capsys.readouterr().out


def test_cartpole_reports_raw_returns_of_the_best_params_by_default_without_an_optimality_gap(tmp_path, capsys):
    fake_run(tmp_path / "a", "CartPole", [500.0, 347.3])
    fake_run(tmp_path / "b", "CartPole", [500.0], first_seed=2)
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--reps", "100", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["aggregated_over"] == "raw_return" and report["score"] == "best_params_return"
    assert report["games"]["CartPole"]["seeds"] == [0, 1, 2] and report["games"]["CartPole"]["normalized"] is None
    assert report["aggregates"]["mean"]["estimate"] == pytest.approx((501 + 348.3 + 501) / 3)
    # The gap's threshold (1 = human level) means nothing on raw returns: none is computed or printed.
    assert set(report["aggregates"]) == {"mean", "median", "iqm"}
    assert "optimality" not in capsys.readouterr().out


def test_the_python_api_refuses_what_the_command_line_refuses(tmp_path):
    fake_run(tmp_path / "a", "CartPole", [500.0])
    with pytest.raises(ReportError, match="score = 'last' is not a score; choose one of best_params, final"):
        build([tmp_path / "a"], score="last")
    with pytest.raises(ReportError, match="reps = 0 must be at least 1"):
        build([str(tmp_path / "a")], reps=0)
    assert build([str(tmp_path / "a")], reps=10)["games"]["CartPole"]["raw"] == [501.0]


def test_nothing_to_report_is_one_error_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no run directory") and err.count("\n") == 1
