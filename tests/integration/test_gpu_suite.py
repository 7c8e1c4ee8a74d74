"""The GPU suite's phases in smoke mode (CartPole, tiny sizes, on CPU): rows written, work resumed."""

from __future__ import annotations

import gzip
import json
import math

from helpers import load_benchmark


def _rows(path):
    return {row["cell"]: row for row in json.loads(path.read_text())["rows"]}


def test_speed_phase_measures_every_cell_once(tmp_path):
    suite = load_benchmark("gpu_suite")
    assert suite.main(["speed", "--smoke", "--results", str(tmp_path)]) == 0
    path = tmp_path / "gpu_speed_smoke_cpu.json"
    rows = _rows(path)
    assert list(rows) == [cell for cell, _ in suite.speed_cells(suite.SMOKE)]
    assert all("error" not in row for row in rows.values()), rows
    assert rows["env_only envs=4"]["env_steps_per_sec"] > 0
    assert rows["learner_only S=1 batch=32"]["updates_per_sec_per_agent"] > 0
    assert rows["train_fused S=1 E=4"]["mode"] == "fused"
    for overlap in ("off", "on"):  # the learning phases' settings, with and without overlap_learning
        row = rows[f"train_learning_preset S=2 overlap={overlap}"]
        assert row["mode"] == "fused" and row["overlap_learning"] == (overlap == "on") and row["seconds"] > 0
    assert json.loads(path.read_text())["versions"]["jax"]
    suite.main(["speed", "--smoke", "--results", str(tmp_path)])  # everything recorded: nothing re-measured
    assert _rows(path) == rows


def test_speed_phase_stops_before_the_deadline(tmp_path):
    suite = load_benchmark("gpu_suite")
    suite.main(["speed", "--smoke", "--results", str(tmp_path), "--budget-s", "1"])
    assert not (tmp_path / "gpu_speed_smoke_cpu.json").exists()  # no cell fits in one second


def test_determinism_phase_runs_what_is_missing(tmp_path):
    suite = load_benchmark("gpu_suite")
    path = tmp_path / "gpu_determinism_smoke_cpu.json"
    earlier = [{"cell": f"repro deterministic {i}", "identical": True, "from": "an earlier command"} for i in (1, 2)]
    path.write_text(json.dumps({"rows": earlier}))
    assert suite.main(["determinism", "--smoke", "--results", str(tmp_path)]) == 0
    rows = _rows(path)
    assert [rows[f"repro deterministic {i}"] for i in (1, 2)] == earlier
    fresh = rows["repro without the flag"]
    assert fresh["exit_code"] == 0 and fresh["identical"] and fresh["output"].startswith("identical")
    assert suite.DETERMINISTIC_FLAG not in fresh["xla_flags"]


def test_learning_phase_records_the_curve_and_resumes(tmp_path):
    suite = load_benchmark("gpu_suite")
    arguments = ["pong", "--smoke", "--results", str(tmp_path), "--work", str(tmp_path / "work"), "--budget-s", "300"]
    assert suite.main(arguments) == 0
    ((cell, row),) = _rows(tmp_path / "gpu_pong_smoke_cpu.json").items()
    digest = suite.learning_settings(tmp_path / "work" / "pong")["digest"]
    assert row["exit_code"] == 0 and row["env_steps"] == 1_200
    assert cell == f"pong {digest}"
    assert row["settings"]["game"] == "CartPole" and row["settings"]["num_seeds"] == 2
    assert [(r["seed"], r["env_steps"]) for r in row["curve"]] == [(0, 600), (1, 600), (0, 1_200), (1, 1_200)]
    assert all(math.isfinite(r["eval_return_mean"]) and r["wall_seconds"] > 0 for r in row["curve"])
    assert (tmp_path / f"gpu_pong_smoke_cpu_{digest}.png").stat().st_size > 0
    with gzip.open(tmp_path / f"gpu_pong_smoke_cpu_{digest}_metrics.jsonl.gz", "rt") as metrics:
        assert sum(json.loads(line)["kind"] == "eval" for line in metrics) == 4
    suite.main(arguments)  # a second command continues the run from its checkpoint
    (row,) = _rows(tmp_path / "gpu_pong_smoke_cpu.json").values()
    assert len(row["commands"]) == 2 and "--resume=" in row["commands"][1]


def test_prioritized_phase_times_both_updates_at_each_batch_size(tmp_path):
    suite = load_benchmark("gpu_suite")
    assert suite.main(["prioritized", "--smoke", "--results", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "gpu_prioritized_smoke_cpu.json")
    assert list(rows) == [f"update_cost batch={b}" for b in suite.SMOKE.batch_sizes]
    row = rows["update_cost batch=32"]
    assert row["update"] > 0 and row["prioritized_update"] > 0
    assert row["prioritized_vs_uniform"] == round(row["prioritized_update"] / row["update"], 3)
