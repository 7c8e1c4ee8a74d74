"""When does each health rule name its planted failure, do healthy runs stay quiet, does ReDo
revive a collapsed layer, and what do the health statistics cost?

    python benchmarks/health_detection.py [--steps 24000] [--healthy-seeds 0 1 2] [--atari-steps 0]
        [--revival-steps 20000] [--cost-seconds 60] [--out benchmarks/results/health_detection_cpu.json]

For each planted failure of `benchmarks/plants.py` it trains the small CartPole run that shows it
and records, from the run's `finding` rows, the env step at which the expected rule first fired:
as a fraction of the run and relative to `learning_starts` (the rules judge nothing before it).
Then the false-alarm runs: the CartPole preset for each `--healthy-seeds`, and with
`--atari-steps=N` Pong and Breakout at their presets for N env steps, learning from 10k; every
finding they raise is recorded. Then ReDo: the collapsed-layer plant trained without and with
`--redo-every`, its layer's dormant fraction and the evaluation return along the way. Then the
cost: fused training env steps/s of the Pong preset (batch 32, learning from the start) with the
health statistics every `health_every` = 10 updates against health off, alternated A B A B in one
process. JSON (machine and versions) into `benchmarks/results/`, and markdown tables on stdout for
docs/health.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from fps import loop_rates
from plants import PLANTS, Plant, plant

from dqn_jax.config import validate
from dqn_jax.run import presets
from dqn_jax.run.metrics import read_metrics
from dqn_jax.run.train import train
from dqn_jax.tools.provenance import write_result


def first_findings(run_dir: Path) -> dict[str, int]:
    """Returns {rule: env step at which it was first reported} from a run directory's rows.

    A finding row's own `env_steps` is where its evidence starts (a streak's first row); the run
    reports it after the chunk that completes the evidence, whose rows precede it in the file.
    """
    found: dict[str, int] = {}
    chunk_end = 0
    for row in read_metrics(run_dir):
        if row["kind"] in ("train", "health", "eval"):
            chunk_end = max(chunk_end, row["env_steps"])
        elif row["kind"] == "finding":
            found.setdefault(row["rule"], chunk_end)
    return found


def detect(plant: Plant, total_steps: int) -> dict:
    """Trains one planted failure; returns when its rule was reported (None if it was not) and what else was."""
    config, network, optimizer = plant.build(total_steps)
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        summary = train(config, run_dir=run_dir, network=network, optimizer=optimizer)
        found = first_findings(Path(run_dir))
    step = found.get(plant.rule)
    run_length = summary["env_steps"]  # a halted run (NaN loss) ends early
    return {
        "failure": plant.name, "rule": plant.rule, "detected_at": step,
        "fraction_of_run": None if step is None else round(step / config.total_steps, 3),
        "steps_after_learning_starts": None if step is None else step - config.learning_starts,
        "learning_starts": config.learning_starts, "total_steps": config.total_steps, "env_steps_run": run_length,
        "other_findings": {rule: at for rule, at in found.items() if rule != plant.rule},
        "seconds": round(time.perf_counter() - started, 1),
    }


def healthy(game: str, seed: int, total_steps: int | None) -> dict:
    """Trains a preset run (Atari: learning from 10k); returns every finding it raised."""
    config = presets.preset(game)
    changes = dict(seed=seed, progress=False)
    if total_steps:
        changes.update(total_steps=total_steps, learning_starts=10_000, replay_capacity=max(total_steps, 10_000),
                       final_eval_episodes=0)
    config = validate(dataclasses.replace(config, **changes))
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        summary = train(config, run_dir=run_dir)
        found = first_findings(Path(run_dir))
    return {"game": game, "seed": seed, "total_steps": config.total_steps, "learning_starts": config.learning_starts,
            "final_eval_return": summary["final_eval_return"], "findings": found,
            "seconds": round(time.perf_counter() - started, 1)}


def revival(total_steps: int, redo_every: int) -> dict:
    """Trains the collapsed-layer plant with `redo_every` (0: without ReDo); returns the collapsed
    layer's dormant fraction and the evaluation return at each evaluation, and the neurons recycled."""
    config, network, optimizer = plant("dead_layer").build(total_steps)
    config = validate(dataclasses.replace(config, redo_every=redo_every, eval_every=total_steps // 10,
                                          eval_episodes=10))
    layer = "dormant_fraction/torso/dense_1"
    with tempfile.TemporaryDirectory() as run_dir:
        train(config, run_dir=run_dir, network=network, optimizer=optimizer)
        rows = read_metrics(run_dir)
    health = {r["env_steps"]: r.get(layer) for r in rows if r["kind"] == "health" and layer in r}
    return {"redo_every": redo_every, "total_steps": total_steps,
            "neurons_recycled": sum(r.get("neurons_recycled") or 0 for r in rows if r["kind"] == "train"),
            "curve": [{"env_steps": r["env_steps"], "eval_return_mean": r["eval_return_mean"],
                       "dormant_fraction_dense_1": health.get(r["env_steps"])}
                      for r in rows if r["kind"] == "eval"]}


def cost(seconds: float, rounds: int = 2) -> dict:
    """Fused Pong training env steps/s with health statistics every 10 updates and with health off."""
    base = validate(dataclasses.replace(
        presets.preset("Pong"), batch_size=32, learning_starts=1_000, replay_capacity=20_000, chunk_steps=400,
        eval_every=10**6, progress=False))
    rates: dict[str, list[float]] = {"health_every_10": [], "health_off": []}
    for _ in range(rounds):
        for name, every in (("health_every_10", 10), ("health_off", 10**6)):
            config = dataclasses.replace(base, health_every=every)
            rates[name].append(loop_rates(config, act_seconds=0.0, train_seconds=seconds, chunk_steps=400)["train"])
    on, off = (sum(v) / len(v) for v in (rates["health_every_10"], rates["health_off"]))
    return {"game": "Pong", "batch_size": 32, "seconds_per_measurement": seconds, "env_steps_per_sec": rates,
            "slowdown": round(1 - on / off, 4)}


def table(detections: list[dict]) -> str:
    """Returns the detection table as markdown."""
    lines = ["| failure | rule | detected at env step | % of run | after learning starts |",
             "|---|---|---|---|---|"]
    for d in detections:
        at, fraction, after = d["detected_at"], d["fraction_of_run"], d["steps_after_learning_starts"]
        cells = ("not detected", "", "") if at is None else (f"{at:,}", f"{100 * fraction:.0f}%", f"{after:+,}")
        lines.append(f"| {d['failure']} | `{d['rule']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=24_000, help="env steps of each planted CartPole run")
    parser.add_argument("--plants", nargs="*", default=None, help="only the plants whose rule is listed")
    parser.add_argument("--healthy-seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--atari-steps", type=int, default=0, help="Pong and Breakout false-alarm runs (0: none)")
    parser.add_argument("--revival-steps", type=int, default=20_000, help="ReDo revival runs (0: none)")
    parser.add_argument("--redo-every", type=int, default=100, help="ReDo's period in the revival run (updates)")
    parser.add_argument("--cost-seconds", type=float, default=60.0, help="each cost measurement (0: none)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/health_detection_cpu.json"))
    args = parser.parse_args(argv)
    detections = [detect(p, args.steps) for p in PLANTS if args.plants is None or p.rule in args.plants]
    for d in detections:
        print(d, flush=True)
    false_alarm_runs = [healthy("CartPole", seed, None) for seed in args.healthy_seeds]
    if args.atari_steps:
        false_alarm_runs += [healthy(game, 0, args.atari_steps) for game in ("Pong", "Breakout")]
    for run in false_alarm_runs:
        print(run, flush=True)
    revivals = [revival(args.revival_steps, every) for every in (0, args.redo_every)] if args.revival_steps else []
    for run in revivals:
        print(run, flush=True)
    spent = cost(args.cost_seconds) if args.cost_seconds else None
    print(spent, flush=True)
    write_result(args.out, {"benchmark": "health_detection", "steps": args.steps, "detections": detections,
                            "false_alarm_runs": false_alarm_runs, "redo_revival": revivals, "cost": spent})
    print(table(detections))
    missed = [d["rule"] for d in detections if d["detected_at"] is None]
    alarms = [(r["game"], r["seed"], r["findings"]) for r in false_alarm_runs if r["findings"]]
    print(f"missed: {missed or 'none'}; false alarms: {alarms or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
