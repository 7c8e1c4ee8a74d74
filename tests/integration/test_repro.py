"""Fingerprints and the repro tool: identical runs agree to the bit, different seeds part at once."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from dqn_jax.run.metrics import read_metrics
from dqn_jax.run.train import train
from dqn_jax.tools.doctor import main as doctor_main
from dqn_jax.tools.repro import compare_runs, main, repro_runs


@pytest.fixture
def fingerprinted(tiny_cartpole):
    return dataclasses.replace(tiny_cartpole, fingerprint_every=20, eval_every=2_000)


def test_repro_reports_identical_runs_and_where_other_seeds_part(fingerprinted):
    lines: list[str] = []
    assert repro_runs(fingerprinted, out=lines.append)
    assert lines[-1].startswith("identical: 2,000 env steps") and "updates 20 to" in lines[-1]
    lines.clear()
    assert not repro_runs(fingerprinted, other_seed=1, out=lines.append)
    parted = [line for line in lines if line.startswith("parted")]
    assert parted[0].startswith("parted at update 20 ")  # the first fingerprint already differs
    assert "max |Δparam| = " in parted[0] and "max |Δparam| = 0 " not in parted[0]
    assert lines[-1].startswith("note: the params already differed at env step 400, the first chunk end")


def test_compare_run_directories_tolerates_a_torn_last_line(fingerprinted, tmp_path):
    # Two trainings agreeing is repro_runs' test above; here "b" is "a" copied, then torn.
    train(fingerprinted, run_dir=tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    train(dataclasses.replace(fingerprinted, seed=5), run_dir=tmp_path / "c")
    rows = read_metrics(tmp_path / "a", "fingerprint")
    assert [r["updates"] for r in rows] == list(range(20, 20 * (len(rows) + 1), 20)) and len(rows) >= 10
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write('{"kind": "fingerprint", "env_steps": 99')  # killed mid-write
    lines: list[str] = []
    assert compare_runs(tmp_path / "a", tmp_path / "b", out=lines.append)
    assert lines[0].startswith(f"identical: {len(rows)} fingerprints agree")
    assert not compare_runs(tmp_path / "a", tmp_path / "c", out=lines.append)
    # Said before where they part: the configs differ, so parting is no surprise.
    assert lines[-2] == "note: the two runs' configs differ in seed 0 vs 5; they are not expected to agree"
    assert lines[-1].startswith("parted at update 20 ")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    # The doctor reads the torn file too, to the verdict it gives the same run untorn.
    assert doctor_main([str(tmp_path / "b")]) == doctor_main([str(tmp_path / "a")])
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "nothing")]) == 2
