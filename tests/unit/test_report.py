"""`python -m dqn_jax.report`: per-game scores, human-normalized where possible, and the aggregates."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from dqn_jax.run import presets
from dqn_jax.tools import scores
from dqn_jax.tools.compare import compare
from dqn_jax.tools.report import ReportError, build, main


def fake_run(path, game: str, finals: list[float], first_seed: int = 0, **settings) -> None:
    """A run directory of `len(finals)` seeds whose last evaluations returned `finals` (their best
    params 1 more), with config `settings` changed from the game's preset."""
    path.mkdir(parents=True)
    config = dataclasses.replace(presets.preset(game), seed=first_seed, num_seeds=len(finals), **settings)
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


def test_compare_gives_per_game_differences_the_probability_of_improvement_and_one_verdict(tmp_path, capsys):
    fake_run(tmp_path / "a" / "CartPole", "CartPole", [100.0, 200.0, 300.0])
    fake_run(tmp_path / "b" / "CartPole", "CartPole", [250.0, 350.0], first_seed=10)
    assert main(["--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--label-a", "uniform", "--label-b",
                 "prioritized", "--reps", "400", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.splitlines()
    result = json.loads((tmp_path / "out" / "report.json").read_text())
    c = result["comparison"]
    game = c["games"]["CartPole"]
    # best params = final + 1: A 101, 201, 301; B 251, 351.
    assert game["a"]["seeds"] == [0, 1, 2] and game["b"]["seeds"] == [10, 11]
    assert game["a"]["mean"] == pytest.approx(201.0) and game["b"]["mean"] == pytest.approx(301.0)
    assert game["difference"]["estimate"] == pytest.approx(100.0)
    assert game["difference"]["ci_low"] < 100.0 < game["difference"]["ci_high"]
    # P(B > A): 251 beats 101 and 201, loses to 301; 351 beats all three: 5 of 6 pairs.
    p = c["aggregates"]["probability_of_improvement"]
    assert p["estimate"] == pytest.approx(5 / 6) and c["aggregated_over"] == "raw_return"
    assert "optimality_gap_difference" not in c["aggregates"] and c["runs_per_game"] == {"a": 3, "b": 2}
    assert printed[0] == c["verdict"]
    assert c["verdict"].startswith("prioritized vs uniform on 1 game(s) × 2 and 3 seeds: P(prioritized > uniform) = "
                                   "0.83 [")
    assert c["verdict"].endswith("(raw return); not distinguishable") and not c["distinguishable"]
    assert [point["seeds"] for point in c["curves"]["CartPole"]["a"]] == [3, 3]
    assert result["a"]["games"]["CartPole"]["raw"] == [101.0, 201.0, 301.0]
    assert (tmp_path / "out" / "compare_profiles.png").stat().st_size > 5_000
    assert (tmp_path / "out" / "compare_curves.png").stat().st_size > 5_000


def test_compare_aggregates_over_the_shared_games_and_names_the_others(tmp_path):
    for name, game, finals in (("Pong", "Pong", [-20.0, -10.0]), ("Breakout", "Breakout", [10.0, 20.0])):
        fake_run(tmp_path / "a" / name, game, finals)
    for name, game, finals in (("Pong", "Pong", [15.0, 19.0]), ("Seaquest", "Seaquest", [500.0, 600.0])):
        fake_run(tmp_path / "b" / name, game, finals)
    c = compare([tmp_path / "a"], [tmp_path / "b"], reps=200)["comparison"]
    assert c["shared_games"] == ["Pong"] and c["only_a"] == ["Breakout"] and c["only_b"] == ["Seaquest"]
    assert c["aggregated_over"] == "human_normalized" and c["aggregated_games"] == ["Pong"]
    assert c["aggregates"]["probability_of_improvement"] == {"estimate": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    assert c["distinguishable"] and "not distinguishable" not in c["verdict"]
    expected = (np.mean([16.0, 20.0]) - np.mean([-19.0, -9.0])) / (14.6 + 20.7)  # Pong: random -20.7, human 14.6
    assert c["aggregates"]["mean_difference"]["estimate"] == pytest.approx(expected)


def test_compare_refuses_a_protocol_difference_unless_allowed_and_then_says_so(tmp_path, capsys):
    fake_run(tmp_path / "a", "Pong", [0.0, 1.0])
    fake_run(tmp_path / "b", "Pong", [2.0, 3.0], repeat_action_probability=0.25)
    assert main(["--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--reps", "50"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: the protocols differ in a setting that changes scores "
                                                   "(Pong: repeat_action_probability = 0.0 in A, 0.25 in B)")
    assert "--allow-protocol-difference" in err
    c = compare([tmp_path / "a"], [tmp_path / "b"], reps=50, allow_protocol_difference=True)["comparison"]
    assert c["protocol_differences"] == [{"game": "Pong", "setting": "repeat_action_probability", "A": 0.0, "B": 0.25}]
    assert c["verdict"].endswith("PROTOCOLS DIFFER (repeat_action_probability)")


def test_compare_refuses_sides_without_a_shared_game_or_without_runs(tmp_path, capsys):
    fake_run(tmp_path / "a", "Pong", [0.0])
    fake_run(tmp_path / "b", "Breakout", [1.0])
    with pytest.raises(ReportError, match=r"^A \(Pong\) and B \(Breakout\) share no game"):
        compare([tmp_path / "a"], [tmp_path / "b"], reps=10)
    assert main(["--compare", str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: B: no run directory")
    assert main([str(tmp_path / "a"), "--compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "not both" in capsys.readouterr().err
