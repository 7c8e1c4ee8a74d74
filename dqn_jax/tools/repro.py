"""Is training reproducible to the bit? Run it twice, or compare two run directories.

    python -m dqn_jax.repro --game=CartPole --seed=0 --steps=20000 [--other-seed=1] [config flags]
    python -m dqn_jax.repro compare RUN_A RUN_B

The first form trains the same config twice in this process (the second time with
`--other-seed` if given) and compares the fingerprints (hashes of the online params and of the
sampled batch indices, every `fingerprint_every` updates) and the params themselves at every chunk
end. It prints `identical`, or the first update at which the runs part and max |Δparam| there.
The second form compares the `fingerprint` rows of two existing runs, e.g. from two machines.
Exit status: 0 when identical, 1 when the runs part, 2 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Iterator, Sequence

import jax
import numpy as np

from dqn_jax import determinism
from dqn_jax.config import ConfigError, validate
from dqn_jax.loop import envs
from dqn_jax.loop.loop import agent_keys, build_loop
from dqn_jax.loop.records import fingerprint_rows
from dqn_jax.loop.schedule import ChunkSchedule, run_chunks
from dqn_jax.run.cli import one_line_warnings, parse_config
from dqn_jax.run.metrics import CONFIG_FILE, METRICS_FILE, read_metrics
from dqn_jax.run.presets import load_toml

KEY_FIELDS = ("params_hash", "batch_hash")


def run_fingerprints(config) -> Iterator[tuple[list[dict], dict, int]]:
    """Trains `config` for `total_steps` env steps, yielding `(fingerprint rows, params, env_steps)` per chunk.

    `params` is a host copy (NumPy) of the online params [S, ...] at the chunk's end.
    """
    loop = build_loop(config)
    seeds = [envs.agent_seed(config, s) for s in range(config.num_seeds)]
    E = config.num_envs
    for chunk in run_chunks(loop, loop.init(agent_keys(config)), ChunkSchedule.for_steps(config, config.total_steps)):
        rows = fingerprint_rows(chunk.records, seeds, E, chunk.start_iteration * E)
        yield rows, jax.device_get(chunk.state.agents.params), chunk.end_iteration * E


def first_difference(rows_a: list[dict], rows_b: list[dict]) -> tuple[dict, dict] | None:
    """Returns the first pair of fingerprint rows (aligned by seed order and update) that differ, else None.

    Rows are compared position by position; runs of different seeds compare agent i with agent i.
    """
    for a, b in zip(rows_a, rows_b, strict=False):  # the shorter run sets the common part
        if a["updates"] != b["updates"] or any(a[k] != b[k] for k in KEY_FIELDS):
            return a, b
    return None


def max_abs_difference(params_a, params_b) -> float:
    """Returns max |a - b| over every parameter of two param trees with the same structure."""
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
               for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True))


def repro_runs(config, other_seed: int | None = None, out=print) -> bool:
    """Trains `config` twice and reports; returns True when both runs are bit-identical."""
    snapshots = []
    rows_a: list[dict] = []
    for rows, params, env_steps in run_fingerprints(config):
        rows_a += rows
        snapshots.append((env_steps, params))
    config_b = config if other_seed is None else dataclasses.replace(config, seed=other_seed)
    rows_b: list[dict] = []
    params_first_differ: tuple[int, float] | None = None
    for (rows, params_b, env_steps), (_, params_a) in zip(run_fingerprints(config_b), snapshots, strict=True):
        rows_b += rows
        delta = max_abs_difference(params_a, params_b)
        if delta > 0 and params_first_differ is None:
            params_first_differ = (env_steps, delta)
        parted = first_difference(rows_a, rows_b)
        if parted:
            _report_parting(parted, delta, env_steps, params_first_differ, out)
            return False
    if params_first_differ is not None:
        steps, delta = params_first_differ
        out(f"parted: the fingerprints agree, but the params differ from env step {steps:,} "
            f"(max |Δparam| = {delta:.6g}); lower --fingerprint-every to locate the update")
        return False
    out(f"identical: {config.total_steps:,} env steps, {len(rows_b)} fingerprints "
        f"(updates {rows_b[0]['updates'] if rows_b else 0:,} to {rows_b[-1]['updates'] if rows_b else 0:,}), "
        f"params equal bit for bit at every chunk end")
    return True


def _changed(a: dict, b: dict) -> str:
    """Returns which hashes of two fingerprint rows differ, with both values."""
    return ", ".join(f"{k} {a[k]} vs {b[k]}" for k in KEY_FIELDS if a[k] != b[k])


def _report_parting(parted: tuple[dict, dict], delta: float, env_steps: int,
                    params_first_differ: tuple[int, float] | None, out) -> None:
    a, b = parted
    out(f"parted at update {a['updates']:,} (env step {a['env_steps']:,}): {_changed(a, b)}; "
        f"max |Δparam| = {delta:.6g} at env step {env_steps:,}")
    if params_first_differ is not None and params_first_differ[0] < a["env_steps"]:
        out(f"note: the params already differed at env step {params_first_differ[0]:,}, the first chunk end "
            f"compared (max |Δparam| = {params_first_differ[1]:.6g})")


# Fields that name where or how long a run goes, not what it computes up to where both reached.
NOT_COMPARED = ("run_dir", "total_steps", "progress", "time_limit_minutes", "target_return", "halt_on",
                "checkpoint_every", "keep_checkpoints", "final_eval_episodes", "record_video")


def config_differences(run_a: Path, run_b: Path) -> list[str]:
    """Returns `field a vs b` for each config field that differs between two run directories
    (those of `NOT_COMPARED` aside); empty when a directory has no readable `config.toml`."""
    try:
        a, b = (dataclasses.asdict(load_toml(run / CONFIG_FILE)) for run in (run_a, run_b))
    except (ConfigError, OSError):
        return []
    return [f"{key} {a[key]!r} vs {b[key]!r}" for key in a if key not in NOT_COMPARED and a[key] != b[key]]


def compare_runs(run_a: Path, run_b: Path, out=print) -> bool:
    """Compares the fingerprint rows of two run directories; returns True when they agree.

    Raises:
      ValueError: a directory has no `metrics.jsonl` or no fingerprint rows.
    """
    rows = []
    for run in (run_a, run_b):
        if not (Path(run) / METRICS_FILE).is_file():
            raise ValueError(f"{run} has no {METRICS_FILE}: not a run directory")
        fingerprints = read_metrics(run, "fingerprint")
        if not fingerprints:
            raise ValueError(f"{run} has no fingerprint rows (it stopped before `fingerprint_every` updates)")
        rows.append(fingerprints)
    differing = config_differences(Path(run_a), Path(run_b))
    if differing:
        out(f"note: the two runs' configs differ in {', '.join(differing)}; they are not expected to agree")
    parted = first_difference(*rows)
    if parted is None:
        common = min(len(rows[0]), len(rows[1]))
        out(f"identical: {common} fingerprints agree (updates {rows[0][0]['updates']:,} to "
            f"{rows[0][common - 1]['updates']:,})")
        if len(rows[0]) != len(rows[1]):
            out(f"note: one run is longer ({len(rows[0])} vs {len(rows[1])} fingerprints); compared the common part")
        return True
    a, b = parted
    norm_gap = abs(a["params_norm"] - b["params_norm"])
    out(f"parted at update {a['updates']:,} (env step {a['env_steps']:,}): {_changed(a, b)}; "
        f"|Δ‖params‖| = {norm_gap:.6g} (max |Δparam| needs both runs in one process: use `repro` without `compare`)")
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0 identical, 1 parted, 2 bad input)."""
    determinism.request_deterministic_ops()  # before anything starts a JAX backend
    argv = sys.argv[1:] if argv is None else list(argv)
    one_line_warnings()
    try:
        if argv[:1] == ["compare"]:
            parser = argparse.ArgumentParser(prog="python -m dqn_jax.repro compare",
                                             description="Compare the fingerprint rows of two run directories "
                                                         "(exit 0 identical, 1 parted, 2 bad input).")
            parser.add_argument("run_a", type=Path)
            parser.add_argument("run_b", type=Path)
            args = parser.parse_args(argv[1:])
            return 0 if compare_runs(args.run_a, args.run_b) else 1
        if "-h" in argv or "--help" in argv:
            print(__doc__.strip())
            print("\nTraining flags: every flag of `python -m dqn_jax.train --help`, e.g. --game, --seed, --config.")
            return 0
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--steps", type=int, default=20_000)
        parser.add_argument("--other-seed", type=int, default=None)
        known, rest = parser.parse_known_args(argv)
        config = parse_config(rest)
        config = validate(dataclasses.replace(config, total_steps=known.steps, progress=False))
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if repro_runs(config, known.other_seed) else 1

