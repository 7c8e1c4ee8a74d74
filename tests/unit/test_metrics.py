"""The run directory's record: rows flushed as written, atomic JSON, a torn last line tolerated."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dqn_jax.run.metrics import METRICS_FILE, RunWriter, read_metrics, write_json_atomic


def test_rows_are_flushed_as_written_and_numpy_values_become_plain_json(tmp_path):
    writer = RunWriter(tmp_path, multi_seed=False, tensorboard=False)
    writer.write({"kind": "train", "env_steps": 8, "seed": 0, "loss": np.float32(0.5), "q": np.nan})
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()  # before close: already on disk
    assert json.loads(lines[0]) == {"kind": "train", "env_steps": 8, "seed": 0, "loss": 0.5, "q": None}
    writer.write({"kind": "eval", "env_steps": 16, "seed": 0, "eval_return_mean": 3.0})
    writer.close()
    assert [r["kind"] for r in read_metrics(tmp_path)] == ["train", "eval"]
    assert read_metrics(tmp_path, "eval") == [{"kind": "eval", "env_steps": 16, "seed": 0, "eval_return_mean": 3.0}]


def test_tensorboard_tags_carry_the_seed_with_several_seeds(tmp_path):
    writer = RunWriter(tmp_path, multi_seed=True)
    writer.write({"kind": "train", "env_steps": 8, "seed": 3, "loss": 0.5})
    writer.close()
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_a_torn_last_line_is_skipped_and_a_broken_middle_line_named(tmp_path):
    (tmp_path / METRICS_FILE).write_text('{"kind": "train", "env_steps": 8}\n{"kind": "tra')
    assert read_metrics(tmp_path) == [{"kind": "train", "env_steps": 8}]
    (tmp_path / METRICS_FILE).write_text('{"kind": "train"\n{"kind": "train", "env_steps": 8}\n')
    with pytest.raises(ValueError, match=f"{METRICS_FILE}:1 is not a JSON row"):
        read_metrics(tmp_path)


def test_json_is_written_atomically(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    write_json_atomic(path, {"a": np.int64(3), "b": [1.5]})
    assert json.loads(path.read_text()) == {"a": 3, "b": [1.5]}
    assert not list(tmp_path.glob("*.tmp"))
