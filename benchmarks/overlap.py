"""The fused loop's training speed with and without `overlap_learning`, measured in turns.

    python benchmarks/overlap.py [--game=Pong] [--config=OVERLAY] [--seeds 1] [--rounds 2] [--seconds 20]

With `overlap_learning` each vector step's updates run between EnvPool's send and its receive, so
the envs step while the learner runs. Each round times a run of both settings (default first,
in turns, so that both see the machine alike) with `fps.loop_rates`: compilation and the acting
before learning are not counted. The replay is shrunk to `--replay` transitions per agent (its size
does not change the work per step). Writes `overlap_<game>_<backend>.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

import jax
from fps import loop_rates, timing_config  # benchmarks/, beside this file

from dqn_jax import games
from dqn_jax.run import presets
from dqn_jax.tools.provenance import write_result


def overlap_configs(game: str, overlay: str | None, seeds: int, replay: int, chunk_steps: int):
    """Returns the (default, overlapped) configs measured: the game's preset (with `overlay`),
    `seeds` agents, set up for timing (`fps.timing_config`)."""
    base = presets.preset(game)
    if overlay:
        base = presets.load_toml(presets.overlay_path(overlay), base)
    default = timing_config(base, seeds, replay, chunk_steps)
    return default, dataclasses.replace(default, overlap_learning=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="Pong")
    parser.add_argument("--config", default=None, help="an overlay on the game's preset (e.g. gpu_atari)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="training time measured per run")
    parser.add_argument("--replay", type=int, default=20_000, help="replay transitions per agent")
    parser.add_argument("--chunk-steps", type=int, default=400)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    game = games.canonical_game(args.game)
    default, overlapped = overlap_configs(game, args.config, args.seeds, args.replay, args.chunk_steps)
    rates: dict[str, list[float]] = {"default": [], "overlap_learning": []}
    for round_index in range(args.rounds):
        for name, config in (("default", default), ("overlap_learning", overlapped)):
            measured = loop_rates(config, 0.0, args.seconds, config.chunk_steps)
            if measured["mode"] != "fused":
                raise SystemExit(f"error: the fused loop was unavailable ({measured['mode']} ran); nothing to compare")
            rates[name].append(round(measured["train"], 1))
            print(f"round {round_index + 1}  {name:>16}  {measured['train']:>9,.0f} env steps/s (all agents)",
                  flush=True)
            del measured
            jax.clear_caches()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    speedup = medians["overlap_learning"] / medians["default"]
    print(f"overlap_learning / default: {speedup:.3f} (medians of {args.rounds} rounds)")
    out = args.out or str(Path(__file__).parent / "results" / f"overlap_{game.lower()}_{jax.default_backend()}.json")
    write_result(out, {
        "benchmark": "overlap", "game": game, "overlay": args.config, "num_seeds": args.seeds,
        "num_envs_per_agent": default.num_envs, "batch_size": default.batch_size, "train_every": default.train_every,
        "replay_per_agent": args.replay, "chunk_steps": default.chunk_steps, "seconds_per_run": args.seconds,
        "train_env_steps_per_sec": rates, "median": medians, "overlap_over_default": round(speedup, 3),
    })


if __name__ == "__main__":
    main()
