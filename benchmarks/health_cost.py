"""What the health statistics cost a training run: chunks with them and without, timed in turns.

    python benchmarks/health_cost.py [--game Pong] [--config cpu_atari_v1] [--chunks 6] [--chunk-steps 2000]
                                     [--health-every 10 100] [--out FILE]

Builds one loop per `--health-every` value and one with the statistics off (`health_every` past any
run's update count), all from the same config (Pong's `cpu_atari_v1` overlay by default: batch 32, one
update per 4 env steps), warms each up past `learning_starts` (compilation included), then runs
`--chunks` chunks of each in turns. A chunk's time is what the trainer spends on it: the compiled
chunk with its records copied to the host (`Chunk.seconds`), the rows built from them, and the
rule pass on the agent's History. Each setting's env steps/s is the median over its chunks;
`cost` is 1 - its rate / the rate without statistics.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from dqn_jax import games
from dqn_jax.config import validate
from dqn_jax.health.diagnostics import History, diagnose
from dqn_jax.loop import envs
from dqn_jax.loop.loop import agent_keys, build_loop
from dqn_jax.loop.records import chunk_rows
from dqn_jax.loop.schedule import ChunkSchedule, run_chunks
from dqn_jax.run import presets
from dqn_jax.tools.provenance import write_result

OFF = 2**31 - 1  # health_every past any run's updates: the statistics are never measured


def chunks_of(config, total_steps: int):
    """Returns (loop, a generator of its chunks, the agent's bounded History)."""
    loop = build_loop(config)
    schedule = ChunkSchedule.for_steps(config, total_steps)
    return loop, run_chunks(loop, loop.init(agent_keys(config)), schedule), History.bounded(config)


def timed_chunk(config, chunks, history) -> tuple[float, int]:
    """Runs one chunk as the trainer does (records to rows, rows to the rules); returns (seconds, env steps)."""
    start = time.perf_counter()
    chunk = next(chunks)
    E = config.num_envs
    seeds = [envs.agent_seed(config, s) for s in range(config.num_seeds)]
    rows = chunk_rows(chunk.records, seeds, E, chunk.start_iteration * E, 0.0)
    history.add(rows.train + rows.health)
    diagnose(history)
    return time.perf_counter() - start, (chunk.end_iteration - chunk.start_iteration) * E


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="Pong")
    parser.add_argument("--config", default="cpu_atari_v1", help="an overlay of configs/ ('' for none)")
    parser.add_argument("--chunks", type=int, default=6, help="timed chunks per setting")
    parser.add_argument("--chunk-steps", type=int, default=2_000)
    parser.add_argument("--health-every", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    game = games.canonical_game(args.game)
    base = presets.preset(game)
    if args.config:
        base = presets.load_toml(presets.OVERLAYS_DIR / f"{args.config}.toml", base)
    base = validate(dataclasses.replace(base, replay_capacity=20_000, learning_starts=2 * args.chunk_steps,
                                        chunk_steps=args.chunk_steps, eval_every=10**9, progress=False))
    warmup = base.learning_starts + args.chunk_steps  # one chunk of learning compiles the learning branch
    total = warmup + (args.chunks + 1) * args.chunk_steps
    settings = {"off": OFF, **{str(every): every for every in args.health_every}}
    runs = {}
    for name, every in settings.items():
        config = dataclasses.replace(base, health_every=every)
        loop, chunks, history = chunks_of(config, total)
        for _ in range(warmup // args.chunk_steps):
            timed_chunk(config, chunks, history)
        runs[name] = (config, chunks, history)
    rates: dict = {name: [] for name in settings}
    for _ in range(args.chunks):
        for name, (config, chunks, history) in runs.items():
            seconds, steps = timed_chunk(config, chunks, history)
            rates[name].append(steps / seconds)
    median = {name: float(np.median(r)) for name, r in rates.items()}
    rows = [{"health_every": None if name == "off" else settings[name], "env_steps_per_sec": round(median[name], 1),
             "per_chunk": [round(r, 1) for r in rates[name]],
             "cost": None if name == "off" else round(1 - median[name] / median["off"], 3)} for name in settings]
    for row in rows:
        print(row, flush=True)
    out = args.out or str(Path(__file__).parent / "results" / f"health_cost_{game.lower()}_cpu.json")
    write_result(out, {"benchmark": "health_cost", "game": game, "overlay": args.config,
                       "batch_size": base.batch_size, "train_every": base.train_every,
                       "chunk_steps": args.chunk_steps, "rows": rows})


if __name__ == "__main__":
    main()
