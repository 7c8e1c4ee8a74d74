"""What the fused chunk costs to build: tracing and lowering, then XLA's compilation, per config.

    python benchmarks/compile_cost.py [--cases tiny tiny_rounds2 cartpole_preset pong_cpu_atari]
                                      [--label NAME] [--out FILE]

For each case builds the loop, lowers its fused chunk (one chunk of `chunk_steps`) and compiles it,
and records the CPU seconds (this process's user and system time) of each phase and the size of
the lowered program (lines of StableHLO text). XLA's backend optimization level is the one
`XLA_FLAGS` gives (the tests' 0, `run_cli(optimized=True)`'s 1, training's default 3): the row
says which. Rows are appended to `--out` with the commit they were measured at, so one file holds
the same cases before and after a change (run it once per commit, `--label` naming each).

Cases: `tiny` is the test suite's tiny CartPole run (4 envs, one update per vector step, a 16-unit
MLP); `tiny_rounds2` the same with two updates per vector step (as the CartPole preset makes);
`cartpole_preset` the preset's 4-seed run of the CartPole preset test; `pong_cpu_atari` one
Nature-CNN agent of `--config=cpu_atari` (with a 2,000-transition replay: its size is not the
program's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from dqn_jax.config import Config, validate
from dqn_jax.loop.loop import agent_keys, build_loop
from dqn_jax.run import presets
from dqn_jax.tools.provenance import machine, versions

OPT_LEVEL = "--xla_backend_optimization_level"


def case_config(name: str) -> Config:
    """Returns the config of a case (see the module's docstring)."""
    cartpole = presets.preset("CartPole")
    tiny = dataclasses.replace(cartpole, total_steps=2_000, num_envs=4, train_every=4, learning_starts=400,
                               batch_size=32, replay_capacity=4_000, eval_every=800, eval_episodes=2,
                               chunk_steps=400, hidden_sizes=(16,), target_update_every=20, progress=False)
    configs = {
        "tiny": tiny,
        "tiny_rounds2": dataclasses.replace(tiny, train_every=2),
        "cartpole_preset": dataclasses.replace(cartpole, num_seeds=4, progress=False),
        "pong_cpu_atari": dataclasses.replace(
            presets.load_toml(presets.overlay_path("cpu_atari"), presets.preset("Pong")),
            replay_capacity=2_000, learning_starts=1_000, progress=False),
    }
    if name not in configs:
        raise SystemExit(f"error: --cases: no case {name!r}; the cases are {', '.join(configs)}")
    return validate(configs[name])


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def measure(name: str) -> dict:
    """Returns the case's row: CPU seconds to lower and to compile its fused chunk, the program's size."""
    config = case_config(name)
    loop = build_loop(config)
    state = loop.init(agent_keys(config))
    iterations = config.chunk_steps // config.num_envs
    start = cpu_seconds()
    lowered = loop.lower_fused_chunk(state, iterations)
    lowered_at = cpu_seconds()
    lines = lowered.as_text().count("\n")
    compile_start = cpu_seconds()
    lowered.compile()
    done = cpu_seconds()
    return {"case": name, "lower_cpu_s": round(lowered_at - start, 2), "compile_cpu_s": round(done - compile_start, 2),
            "stablehlo_lines": lines, "iterations": iterations,
            "updates_per_vector_step": config.updates_per_vector_step, "num_seeds": config.num_seeds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["tiny", "tiny_rounds2", "cartpole_preset"])
    parser.add_argument("--label", default="", help="names this command's rows (e.g. 'before', 'after')")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "compile_cost_cpu.json"))
    args = parser.parse_args()
    for name in args.cases:
        case_config(name)  # a misspelt case fails before anything compiles
    level = next((f.split("=", 1)[1] for f in os.environ.get("XLA_FLAGS", "").split() if f.startswith(OPT_LEVEL)),
                 "3 (XLA's default)")
    commit = versions()["dqn_jax_commit"]
    rows = []
    for name in args.cases:
        row = {"label": args.label, "commit": commit, "xla_backend_optimization_level": level, **measure(name)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = Path(args.out)
    earlier = json.loads(out.read_text()) if out.exists() else {"benchmark": "compile_cost", "rows": []}
    earlier["rows"] += [{**row, "machine": machine(), "versions": versions()} for row in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(earlier, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
