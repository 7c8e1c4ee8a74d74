"""`benchmarks/curves_side_by_side.py`: the minutes axis, the time budget and the errors."""

from __future__ import annotations

import matplotlib
import pytest
from helpers import load_benchmark

matplotlib.use("Agg")
curves = load_benchmark("curves_side_by_side")


def record(minutes: list[float], returns: list[float], cpu: str = "AMD EPYC", avx512: bool | None = True) -> dict:
    machine = {"cpu": cpu} | ({} if avx512 is None else {"cpu_features": {"avx512f": avx512}})
    return {"benchmark": "learning_curve", "machine": machine,
            "eval_curve": [{"env_steps": 50_000 * (i + 1), "wall_seconds": 60 * m, "eval_return_mean": r}
                           for i, (m, r) in enumerate(zip(minutes, returns, strict=True))]}


def test_the_curves_are_drawn_by_env_steps_and_by_minutes_with_the_budget_on_a_linear_axis():
    runs = [record([10, 20, 30], [-20.0, 0.0, 19.0]), record([15, 45], [-18.0, 17.5], cpu="Intel Xeon", avx512=None)]
    fig = curves.figure(runs, ["a", "b"], target=20, deadline_minutes=120, linear_minutes=True)
    by_steps, by_minutes = fig.axes
    assert by_minutes.get_xscale() == "linear" and by_steps.get_xscale() == "linear"
    drawn = {line.get_label(): line for line in by_minutes.get_lines()}
    assert list(drawn["a (AMD EPYC, AVX-512)"].get_xdata()) == [10, 20, 30]
    assert list(drawn["b (Intel Xeon)"].get_ydata()) == [-18.0, 17.5]
    assert list(drawn["120 minutes"].get_xdata()) == [120, 120]  # a vertical line at the budget
    assert "120 minutes" not in {line.get_label() for line in by_steps.get_lines()}
    assert list(drawn["target 20"].get_ydata()) == [20, 20]
    assert [line.get_label() for line in by_steps.get_lines()][:2] == ["a (AMD EPYC, AVX-512)", "b (Intel Xeon)"]


def test_the_minutes_axis_is_logarithmic_unless_asked():
    fig = curves.figure([record([3, 450], [0.0, 1.0], avx512=False)], ["only"])
    assert fig.axes[1].get_xscale() == "log"
    assert fig.axes[1].get_lines()[0].get_label() == "only (AMD EPYC, no AVX-512)"


@pytest.mark.parametrize("argv, says", [
    (["x", "--name", "out", "--deadline-minutes", "0"], "--deadline-minutes must be > 0"),
    (["x", "y", "--labels", "one", "--name", "out"], "2 curves but 1 labels"),
    (["no_such_result_here", "--name", "out"], "does not exist"),
])
def test_bad_arguments_are_one_error_line(argv, says):
    with pytest.raises(SystemExit) as exit_:
        curves.main(argv)
    message = str(exit_.value)
    assert message.startswith("error: ") and says in message and "\n" not in message, message


def test_training_games_come_from_the_record_or_else_from_its_gzipped_metrics(tmp_path, monkeypatch):
    import gzip
    import json

    monkeypatch.setattr(curves, "RESULTS", tmp_path)
    windows = [{"env_steps_end": 100_000, "games": 40, "return_mean": -20.0}]
    assert curves.training_games("a", {"train_return_window": 100_000, "train_returns": windows}) == windows
    rows = [{"kind": "train", "env_steps": e, "seed": 0, "episodes": 2, "train_return_mean": r, "steps_per_sec": 1.0}
            for e, r in ((50_000, -21.0), (150_000, 3.0))]
    with gzip.open(tmp_path / "b_metrics.jsonl.gz", "wt") as out:
        out.write("".join(json.dumps(r) + "\n" for r in rows))
    older = {"train_return_window": 50_000, "train_returns": windows}  # another window: recomputed
    assert curves.training_games("b", older) == [{"env_steps_end": 100_000, "games": 2, "return_mean": -21.0},
                                                 {"env_steps_end": 150_000, "games": 2, "return_mean": 3.0}]
    with pytest.raises(SystemExit, match="^error: c has no training games' returns and no c_metrics.jsonl.gz"):
        curves.training_games("c", {})
    fig = curves.figure([record([10], [1.0])], ["b"], training=[curves.training_games("b", older)])
    assert len(fig.axes) == 3
    assert list(fig.axes[2].get_lines()[0].get_ydata()) == [-21.0, 3.0]


def test_the_updates_panel_reads_each_records_counts_or_counts_them_from_its_config():
    counted = record([10, 20], [-20.0, 5.0]) | {"config": {"num_envs": 10, "train_every": 10, "learning_starts": 1_000}}
    assert curves.eval_updates(counted) == [4_901, 9_901]  # one update per 10 env steps from env step 1,000
    late = counted | {"config": counted["config"] | {"train_every_late": 20, "train_every_late_start": 50_000}}
    assert curves.eval_updates(late) == [4_901, 7_401]  # from 50k on, one per 20
    own = record([10], [1.0])
    own["eval_curve"][0]["updates"] = 123
    assert curves.eval_updates(own) == [123]
    fig = curves.figure([counted, late], ["a", "b"], updates=[[4_901, 9_901], [4_901, 7_401]],
                        training=[[], []])
    assert [ax.get_xlabel() for ax in fig.axes] == ["env steps", "minutes from the command's start", "updates",
                                                     "env steps"]
    assert list(fig.axes[2].get_lines()[1].get_xdata()) == [4_901, 7_401]
    with pytest.raises(SystemExit, match="^error: .*no_such_field.*leave out --by-updates$"):
        curves.eval_updates(counted | {"config": {"no_such_field": 1}})
