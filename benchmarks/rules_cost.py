"""What the health rules cost per chunk as a run grows: after 100 chunks against after 10,000.

    python benchmarks/rules_cost.py [--chunks 100 10000] [--seeds 8] [--repeats 20] [--out FILE]

Synthetic chunks, built from the rows of the recorded Pong run (`pong_cpu_atari_v1_s0_metrics.jsonl.gz`:
its train and health rows, every field they carry, given to 8 seeds, env steps counted on; an
evaluation every 10 chunks). The pass timed is the trainer's after each chunk: every seed's new
rows added to its bounded History, then `diagnose` with the rules it already reported. For
contrast, `whole_history` times what the trainer did before the History was bounded: each seed's
History rebuilt from every row so far (`History.from_rows`), then `diagnose`.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import time
from pathlib import Path

import numpy as np

from dqn_jax.health.diagnostics import History, diagnose
from dqn_jax.run import presets
from dqn_jax.tools.provenance import write_result

RESULTS = Path(__file__).parent / "results"
EVAL_EVERY = 10  # chunks


def template_rows() -> tuple[dict, dict, dict]:
    """Returns a train, a health and an eval row of the recorded Pong run, after learning started."""
    with gzip.open(RESULTS / "pong_cpu_atari_v1_s0_metrics.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f if '"fingerprint"' not in line]
    train = next(r for r in reversed(rows) if r["kind"] == "train")
    health = next(r for r in reversed(rows) if r["kind"] == "health")
    evaluation = next(r for r in reversed(rows) if r["kind"] == "eval")
    return train, health, evaluation


def chunk_rows(chunk: int, seeds: int, templates, chunk_steps: int) -> list[dict]:
    """Returns one chunk's rows for every seed, as the trainer writes them."""
    train, health, evaluation = templates
    step = (chunk + 1) * chunk_steps
    rows = []
    for seed in range(seeds):
        rows.append({**train, "env_steps": step, "seed": seed})
        rows.append({**health, "env_steps": step, "seed": seed, "updates": chunk_steps // 4})
        if (chunk + 1) % EVAL_EVERY == 0:
            rows.append({**evaluation, "env_steps": step, "seed": seed})
    return rows


def bounded_pass_seconds(config, histories, reported, rows, seeds: int) -> float:
    """Times the trainer's pass over one chunk's rows with bounded Histories."""
    start = time.perf_counter()
    for row in rows:
        histories[row["seed"]].add([row])
    for seed in range(seeds):
        for finding in diagnose(histories[seed], reported[seed]):
            reported[seed].add(finding.rule)
    return time.perf_counter() - start


def whole_pass_seconds(config, all_rows, seeds: int) -> float:
    """Times the pass as it was: every seed's History rebuilt from all rows, then diagnosed."""
    start = time.perf_counter()
    for seed in range(seeds):
        diagnose(History.from_rows(config, all_rows, seed))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[100, 10_000], help="where to time the pass")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20, help="chunks timed at each point (median kept)")
    parser.add_argument("--out", default=str(RESULTS / "rules_cost_cpu.json"))
    args = parser.parse_args()
    config = dataclasses.replace(presets.preset("Pong"), learning_starts=20_000, chunk_steps=5_000)
    templates = template_rows()
    histories = {seed: History.bounded(config) for seed in range(args.seeds)}
    reported = {seed: set() for seed in range(args.seeds)}
    all_rows: list[dict] = []
    points, chunk = {}, 0
    for target in sorted(args.chunks):
        while chunk < target - args.repeats:  # grow the run without timing
            rows = chunk_rows(chunk, args.seeds, templates, config.chunk_steps)
            bounded_pass_seconds(config, histories, reported, rows, args.seeds)
            all_rows += rows
            chunk += 1
        bounded, whole = [], []
        while chunk < target:
            rows = chunk_rows(chunk, args.seeds, templates, config.chunk_steps)
            bounded.append(bounded_pass_seconds(config, histories, reported, rows, args.seeds))
            all_rows += rows
            whole.append(whole_pass_seconds(config, all_rows, args.seeds))
            chunk += 1
        points[target] = {"bounded_ms_per_chunk": round(float(np.median(bounded)) * 1e3, 3),
                          "whole_history_ms_per_chunk": round(float(np.median(whole)) * 1e3, 3),
                          "rows_so_far": len(all_rows)}
        print(f"after {target:,} chunks of {args.seeds} seeds: {points[target]}", flush=True)
    first, last = min(points), max(points)
    result = {"benchmark": "rules_cost", "seeds": args.seeds, "repeats": args.repeats,
              "eval_every_chunks": EVAL_EVERY, "points": {str(k): v for k, v in points.items()},
              "bounded_ratio": round(points[last]["bounded_ms_per_chunk"] / points[first]["bounded_ms_per_chunk"], 2),
              "whole_history_ratio": round(points[last]["whole_history_ms_per_chunk"]
                                           / points[first]["whole_history_ms_per_chunk"], 1)}
    print(f"per-chunk time after {last:,} chunks / after {first:,}: bounded {result['bounded_ratio']}x, "
          f"whole history {result['whole_history_ratio']}x")
    write_result(args.out, result)


if __name__ == "__main__":
    main()
