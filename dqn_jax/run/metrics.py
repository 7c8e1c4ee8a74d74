"""The run directory's record: `metrics.jsonl`, TensorBoard events, `summary.json`, `config.toml`.

This format is an interface that other tools read; extend it, never rename what exists.
- `metrics.jsonl`: one JSON object per line, flushed as written. Every row has `kind` and
  `env_steps` (and `seed`). `train` rows: `loss`, `q_mean`, `epsilon`, `learning_rate`,
  `steps_per_sec`, ...; `eval` rows: `eval_return_mean`, `eval_return_std`, `eval_episodes`,
  `eval_return_mean50`, ...
- `summary.json`: written at the end (atomically): `final_eval_return`, `best_eval_return`,
  `env_steps`, `wall_seconds`, `steps_per_sec`, and `seeds` (one entry per agent).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.toml"


def _plain(value):
    """Makes NumPy / JAX scalars JSON-serialisable; non-finite floats become null."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunWriter:
    """Appends rows to `metrics.jsonl` and TensorBoard; tags are `<kind>/<key>[/seed<s>]`."""

    def __init__(self, run_dir: Path, multi_seed: bool, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.multi_seed = multi_seed
        self._file = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir), flush_secs=10)

    def write(self, row: dict) -> None:
        """Writes one row (must hold `kind` and `env_steps`) and flushes it."""
        row = {k: _plain(v) for k, v in row.items()}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            suffix = f"/seed{row.get('seed', 0)}" if self.multi_seed else ""
            for key, value in row.items():
                if key in ("kind", "env_steps", "seed") or not isinstance(value, (int, float)):
                    continue
                if isinstance(value, bool):
                    continue
                self._tb.add_scalar(f"{row['kind']}/{key}{suffix}", value, row["env_steps"])

    def close(self) -> None:
        """Flushes and closes every sink."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self._tb is not None:
            self._tb.close()


class NoWriter:
    """A `RunWriter` that writes nothing: the other processes of a multi-process run (process 0 writes the rows)."""

    def write(self, row: dict) -> None:
        """Drops the row."""

    def close(self) -> None:
        """Nothing to close."""


def write_json_atomic(path: Path, value) -> None:
    """Writes JSON to `path` through a temporary file and a rename, so readers never see half."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, default=_plain)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_metrics(run_dir: Path | str, kind: str | None = None) -> list[dict]:
    """Returns the rows of a run's `metrics.jsonl` (only those of `kind` if given).

    A torn last line (a run killed mid-write) is skipped; a malformed line elsewhere raises
    ValueError naming the file and line number.
    """
    path = Path(run_dir) / METRICS_FILE
    lines = path.read_text(encoding="utf-8").split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number >= len(lines) - 1:  # the last non-empty line: torn by an interrupted write
                break
            raise ValueError(f"{path}:{number} is not a JSON row") from None
        if kind is None or row.get("kind") == kind:
            rows.append(row)
    return rows
