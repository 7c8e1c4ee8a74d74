"""What only a GPU can show: speed, determinism and learning, in phases that fit one device command.

    python benchmarks/gpu_suite.py PHASE [--budget-s 500] [--results DIR] [--work DIR] [--smoke]

PHASE is one of:
- `speed`: EnvPool alone, the learner alone, fused and host training, for 1, 8 and 32 seeds and
  8, 32 and 128 envs per agent (cells in order of importance; `speed_cells` lists them);
- `determinism`: `python -m dqn_jax.repro` on Pong for 50,000 env steps, twice with XLA's
  `--xla_gpu_deterministic_ops=true` (dqn_jax's default) and once without it
  (`DQN_JAX_NONDETERMINISTIC=1`): the verdicts, and the flag's cost as the wall time of each;
- `pong`: `python -m dqn_jax.train --game=Pong --config=gpu_atari` with 4 seeds in one program
  until every seed's evaluation return reaches 20, or the budget ends (then it resumes from its
  checkpoint on the next call, while the machine still holds `--work`);
- `breakout`: the Breakout preset with the GPU overlay for what time is left;
- `prioritized`: prioritized replay's update against the uniform one, in turns
  (`benchmarks/update_cost.py --prioritized`), at each batch size of the speed phase.

Every phase appends to `gpu_<phase>_<tag>.json` in `--results` (default `benchmarks/results`, with
the machine and versions) and skips the cells that file already holds. The results folder is
tracked, so it travels with every device command: a phase cut by the command's time limit goes on
where it stopped, on the same machine or a fresh one, once its file is copied back here. A learning
run resumes from its checkpoint only while the machine still holds `--work` (its replay is far
over what a command can carry). `--budget-s` is the phase's own deadline: no cell starts that
would not end before it. `--smoke` runs every phase on CartPole with tiny sizes (the tests do).

On the GPU machine (the wheels come from `python benchmarks/gpu_bundle.py`; name `.whl` in
`carry`), from the repository root, one phase per command:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
    python3 benchmarks/gpu_suite.py speed --budget-s 480; cp benchmarks/results/gpu_* $OUT/

On a short lease (15 minutes of device time, machine start included), the order that answers most:
`pong --budget-s 560` first (the goal: Pong 20 within 10 minutes of one run), then `speed
--budget-s 150` (its first two cells time the learning settings with `overlap_learning` off and
on), then `determinism` and `prioritized` with what is left.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fps.py beside this file

DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"
PONG_TARGET = 20.0
GPU_OVERLAY = "gpu_atari"  # the learning phases' settings on an Atari game


@dataclasses.dataclass(frozen=True)
class Scale:
    """The sizes of one suite run: the GPU's, or the smoke test's."""

    game: str
    seeds: tuple[int, ...]
    envs: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    seconds: float  # per timed measurement
    replay: int  # transitions per agent in the speed phase
    chunk_steps: int  # env steps per agent in one compiled call of the speed phase
    repro_steps: int
    learn_game: str
    learn_seeds: int
    learn_flags: tuple[str, ...]
    host_loop: bool = True  # time the host loop too (the smoke test leaves it to the loop's own tests)


GPU = Scale(game="Pong", seeds=(1, 8, 32), envs=(8, 32, 128), batch_sizes=(32, 128, 512), seconds=4.0,
            replay=20_000, chunk_steps=1024, repro_steps=50_000, learn_game="Pong", learn_seeds=4, learn_flags=())
SMOKE = Scale(game="CartPole", seeds=(1,), envs=(4,), batch_sizes=(32,), seconds=0.2, replay=2_000, chunk_steps=64,
              repro_steps=1_200, learn_game="CartPole", learn_seeds=2,
              learn_flags=("--total-steps=1200", "--eval-every=600", "--eval-episodes=2", "--learning-starts=400",
                           "--chunk-steps=200", "--num-envs=4", "--train-every=4", "--hidden-sizes=16",
                           "--fingerprint-every=50"), host_loop=False)


class Results:
    """One phase's result file: rows keyed by `cell`, rewritten (with provenance) after each new row."""

    def __init__(self, path: Path, header: dict):
        self.path, self.header = path, header
        self.rows: list[dict] = json.loads(path.read_text())["rows"] if path.exists() else []

    def done(self, cell: str) -> bool:
        """True when a row for `cell` is already recorded."""
        return any(row["cell"] == cell for row in self.rows)

    def add(self, cell: str, **values) -> dict:
        """Records (and prints) one row, replacing an earlier row of the same cell; returns it."""
        from dqn_jax.tools.provenance import write_result

        row = {"cell": cell, **values}
        self.rows = [r for r in self.rows if r["cell"] != cell] + [row]
        print("  ".join([f"{cell:<34}"] + [f"{k}={v}" for k, v in values.items()]), flush=True)
        write_result(self.path, {**self.header, "rows": self.rows}, quiet=True)
        return row


class Deadline:
    """The phase's wall-clock budget; `fits` says whether a step of a given cost still ends inside it."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def fits(self, estimate: float) -> bool:
        return self.left() > estimate


# --- speed ------------------------------------------------------------------------------------
def speed_cells(scale: Scale) -> list[tuple[str, dict]]:
    """Returns the speed phase's cells in the order they run: `(name, parameters)`.

    First the learning phases' settings (`learning_preset_config`: `gpu_atari`, `learn_seeds`
    agents) with `overlap_learning` off and on; then the Nature replay ratio (batch 32, one update
    per 4 env steps) everywhere; learner rows vary the batch at one update per `batch / 8` env
    steps (each transition sampled 8 times).
    """
    cells = [(f"train_learning_preset S={scale.learn_seeds} overlap={'on' if overlap else 'off'}",
              {"kind": "learning_preset", "overlap": overlap}) for overlap in (False, True)]
    for total in sorted({s * e for s in scale.seeds for e in scale.envs}):
        cells.append((f"env_only envs={total}", {"kind": "env_only", "total_envs": total}))
    for seeds in scale.seeds:
        for batch in scale.batch_sizes:
            cells.append((f"learner_only S={seeds} batch={batch}", {"kind": "learner_only", "seeds": seeds,
                                                                     "batch": batch}))
    grid = [(s, e) for s in scale.seeds for e in scale.envs]
    grid.sort(key=lambda se: (se[0] * se[1], se[0]))
    for seeds, envs in grid:
        cells.append((f"train_fused S={seeds} E={envs}", {"kind": "train", "loop": "fused", "seeds": seeds,
                                                           "envs": envs}))
    for envs in scale.envs if scale.host_loop else ():
        cells.append((f"train_host S=1 E={envs}", {"kind": "train", "loop": "host", "seeds": 1, "envs": envs}))
    return cells


def speed_config(scale: Scale, seeds: int, envs: int, batch: int = 32, loop: str = "fused"):
    """Returns the validated config a speed cell measures."""
    from dqn_jax.config import validate
    from dqn_jax.run import presets

    base = presets.preset(scale.game)
    chunk = max(envs, scale.chunk_steps // envs * envs)
    train_every = max(1, batch // 8) if base.is_atari else base.train_every
    return validate(dataclasses.replace(
        base, num_seeds=seeds, num_envs=envs, batch_size=batch, train_every=train_every,
        replay_capacity=max(scale.replay, envs * 64), learning_starts=4 * chunk + envs,
        chunk_steps=chunk, loop=loop, progress=False, eval_every=10**9, checkpoint_every=0))


def learning_preset_config(scale: Scale, overlap: bool):
    """Returns the validated config of the learning phases (the game's preset, the `gpu_atari`
    overlay on an Atari game, `learn_flags`, `learn_seeds` agents), timed with a replay of
    `scale.replay`."""
    import fps

    from dqn_jax.run import presets

    config = presets.preset(scale.learn_game)
    if config.is_atari:
        config = presets.load_toml(presets.overlay_path(GPU_OVERLAY), config)
    config = presets.override(config, scale.learn_flags, source="the suite's learn_flags")
    return fps.timing_config(config, scale.learn_seeds, scale.replay, scale.chunk_steps, overlap_learning=overlap)


def run_speed_cell(scale: Scale, parameters: dict) -> dict:
    """Measures one speed cell; returns the row's values (env steps/s count every agent's steps)."""
    import fps
    import jax

    from dqn_jax.loop.loop import agent_keys, build_loop

    kind = parameters["kind"]
    if kind == "env_only":
        config = speed_config(scale, 1, parameters["total_envs"])
        rate = fps.env_only(config, scale.seconds)
        return {"env_steps_per_sec": round(rate), "frames_per_sec": round(rate * config.frame_skip)}
    if kind == "learner_only":
        config = speed_config(scale, parameters["seeds"], 8, parameters["batch"])
        loop = build_loop(config)
        agents = fps.fill_replay(loop, loop.init(agent_keys(config)).agents, 2 * config.frame_stack + config.batch_size)
        updates, bare = fps.learner_and_bare(loop, agents, scale.seconds, updates_per_call=20)
        del loop, agents
        sustained = updates * config.num_seeds * config.train_every
        return {"updates_per_sec_per_agent": round(updates, 1), "samples_per_sec": round(updates * config.num_seeds
                * config.batch_size), "train_every": config.train_every,
                "env_steps_per_sec_sustained": round(sustained), "bare_updates_per_sec_per_agent": round(bare, 1)}
    if kind == "learning_preset":
        config = learning_preset_config(scale, parameters["overlap"])
    else:
        config = speed_config(scale, parameters["seeds"], parameters["envs"], loop=parameters["loop"])
    rates = fps.loop_rates(config, scale.seconds, scale.seconds, config.chunk_steps)
    del rates["loop"], rates["agents"]
    jax.clear_caches()
    frames = config.frame_skip
    return {"mode": rates["mode"], "act_env_steps_per_sec": round(rates["act"]) if rates["act"] else None,
            "train_env_steps_per_sec": round(rates["train"]), "train_frames_per_sec": round(rates["train"] * frames),
            "batch_size": config.batch_size, "train_every": config.train_every, "num_envs": config.num_envs,
            "overlap_learning": config.overlap_learning}


def run_cells(cells, measure, results: Results, deadline: Deadline, first_guess: float) -> None:
    """Measures each `(cell, parameters)` not yet in `results` with `measure(parameters) -> dict`
    and records its values and seconds, while the deadline allows one more: `first_guess` seconds
    for the first cell, then the longest cell seen."""
    longest = first_guess
    for cell, parameters in cells:
        if results.done(cell):
            continue
        if not deadline.fits(longest):
            print(f"budget: {deadline.left():.0f} s left, a cell takes up to {longest:.0f} s; "
                  f"run the phase again to go on from {cell}")
            return
        start = time.monotonic()
        values = measure(parameters)
        results.add(cell, **values, seconds=round(time.monotonic() - start, 1))
        longest = max(longest, time.monotonic() - start)


def phase_speed(scale: Scale, results: Results, deadline: Deadline) -> None:
    """Runs every speed cell not yet recorded, while the deadline allows one more."""

    def measure(parameters: dict) -> dict:
        try:
            return run_speed_cell(scale, parameters)
        except Exception as err:  # noqa: BLE001 - one failing size (memory, EnvPool) must not end the table
            return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}

    run_cells(speed_cells(scale), measure, results, deadline, first_guess=20.0 * scale.seconds)


# --- prioritized replay --------------------------------------------------------------------------
def phase_prioritized(scale: Scale, results: Results, deadline: Deadline) -> None:
    """Times the prioritized update against the uniform one at each batch size not yet recorded."""
    import update_cost

    from dqn_jax.config import validate
    from dqn_jax.run import presets

    def measure(batch: int) -> dict:
        config = validate(dataclasses.replace(presets.preset(scale.game), batch_size=batch,
                                              replay_capacity=scale.replay, learning_starts=batch * 4, progress=False))
        rows = update_cost.measure(config, updates=20, seconds=scale.seconds, prioritized=True)
        return {"batch_size": batch, "unit": "ms per update of one agent", **rows}

    cells = [(f"update_cost batch={batch}", batch) for batch in scale.batch_sizes]
    run_cells(cells, measure, results, deadline, first_guess=30.0 * scale.seconds)  # 4 compilations a cell


# --- determinism --------------------------------------------------------------------------------
def phase_determinism(scale: Scale, results: Results, deadline: Deadline) -> None:
    """`dqn_jax.repro` twice with the deterministic-ops flag and once without; records each verdict and wall time."""
    runs = [("repro deterministic 1", True), ("repro deterministic 2", True), ("repro without the flag", False)]
    flags = [f"--game={scale.learn_game}", "--seed=0", f"--steps={scale.repro_steps}"]
    if scale.learn_game == "Pong":  # the GPU preset's sizes, learning from 10k steps so that 40k are trained
        flags += [f"--config={GPU_OVERLAY}", "--learning-starts=10000", "--replay-capacity=100000"]
    else:
        flags += [flag for flag in scale.learn_flags if not flag.startswith(("--total-steps", "--eval"))]
    for cell, deterministic in runs:
        if results.done(cell):
            continue
        env = dict(os.environ)
        xla = env.get("XLA_FLAGS", "").replace(DETERMINISTIC_FLAG, "").strip()
        env["XLA_FLAGS"] = f"{xla} {DETERMINISTIC_FLAG}".strip() if deterministic else xla
        env.pop("DQN_JAX_NONDETERMINISTIC", None)
        if not deterministic:  # the repro command adds the flag unless told not to
            env["DQN_JAX_NONDETERMINISTIC"] = "1"
        start = time.monotonic()
        try:
            done = subprocess.run([sys.executable, "-m", "dqn_jax.repro", *flags], capture_output=True, text=True,
                                  env=env, timeout=max(1.0, deadline.left()))
        except subprocess.TimeoutExpired:
            print(f"budget: {cell} did not end inside the phase's budget; run the phase again")
            return
        output = (done.stdout.strip() or done.stderr.strip()).splitlines()
        verdict = output[-1] if output else ""
        results.add(cell, command="python -m dqn_jax.repro " + " ".join(flags), xla_flags=env["XLA_FLAGS"],
                    exit_code=done.returncode, identical=done.returncode == 0 and verdict.startswith("identical"),
                    output=verdict, wall_seconds=round(time.monotonic() - start, 1))


# --- learning runs ------------------------------------------------------------------------------
def learning_command(game: str, scale: Scale, run_dir: Path, minutes: float, target: float | None) -> list[str]:
    """Returns the `dqn_jax.train` command of a learning phase, resuming `run_dir` when it holds a checkpoint."""
    from dqn_jax.run import checkpoint

    command = [sys.executable, "-m", "dqn_jax.train", f"--time-limit-minutes={minutes:.2f}", "--no-progress"]
    if run_dir.exists() and checkpoint.latest_step(run_dir) is not None:
        return command + [f"--resume={run_dir}"]
    command += [f"--game={game}", f"--num-seeds={scale.learn_seeds}", f"--run-dir={run_dir}", *scale.learn_flags]
    if game != "CartPole":
        command.append(f"--config={GPU_OVERLAY}")
    if target is not None:
        command.append(f"--target-return={target}")
    return command


def learning_summary(run_dir: Path, target: float | None) -> dict:
    """Returns the learning phase's record: the eval curve per seed and, per seed, when it first reached `target`."""
    from dqn_jax.run.metrics import SUMMARY_FILE, read_metrics

    evals = read_metrics(run_dir, "eval")
    summary = json.loads((run_dir / SUMMARY_FILE).read_text()) if (run_dir / SUMMARY_FILE).exists() else {}
    curve = [{k: row[k] for k in ("seed", "env_steps", "wall_seconds", "eval_return_mean")} for row in evals]
    record = {"curve": curve, "env_steps": summary.get("env_steps"), "run_wall_seconds": summary.get(
        "run_wall_seconds"), "steps_per_sec_per_agent": summary.get("steps_per_sec"),
        "total_steps_per_sec": summary.get("total_steps_per_sec"), "loop": summary.get("loop"),
        "best_params_return": summary.get("best_params_return")}
    if target is not None:
        reached = [s.get("target_reached") for s in summary.get("seeds", [])]
        record["target_return"] = target
        record["target_reached"] = reached
        if reached and all(reached):
            record["wall_seconds_to_target_all_seeds"] = max(r["wall_seconds"] for r in reached)
    return record


def learning_settings(run_dir: Path) -> dict:
    """Returns the run's settings that differ from the `Config` defaults (`changed`, run directory
    and output switches left out) and a digest of them: a learning cell's name, so that a run with
    other settings gets a row of its own instead of replacing an earlier one."""
    import hashlib

    from dqn_jax.config import Config
    from dqn_jax.run.metrics import CONFIG_FILE
    from dqn_jax.run.presets import load_toml

    if not (run_dir / CONFIG_FILE).exists():  # the run failed before it started
        return {"changed": None, "digest": "unstarted"}
    config = load_toml(run_dir / CONFIG_FILE)
    ignored = {"run_dir", "progress", "time_limit_minutes"}
    changed = {f.name: getattr(config, f.name) for f in dataclasses.fields(Config)
               if f.name not in ignored and getattr(config, f.name) != f.default}
    changed = {k: list(v) if isinstance(v, tuple) else v for k, v in changed.items()}
    digest = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
    return {"changed": changed, "digest": digest}


def plot_curve(record: dict, title: str, path: Path) -> None:
    """Draws each seed's evaluation return against wall-clock minutes into `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for seed in sorted({row["seed"] for row in record["curve"]}):
        rows = [r for r in record["curve"] if r["seed"] == seed]
        axes.plot([r["wall_seconds"] / 60 for r in rows], [r["eval_return_mean"] for r in rows], marker=".",
                  label=f"seed {seed}")
    if record.get("target_return") is not None:
        axes.axhline(record["target_return"], color="grey", linestyle="--", linewidth=1)
    axes.set_xlabel("wall-clock minutes (pools, compilation and evaluation included)")
    axes.set_ylabel("evaluation return")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def phase_learning(phase: str, game: str, target: float | None, scale: Scale, results: Results,
                   deadline: Deadline, work: Path, png: Path) -> None:
    """Trains (or resumes) `game` until the target or the deadline, then records its curve and
    times, its plot (`png` with the settings' digest in its name) and its gzipped metrics."""
    from dqn_jax.run.metrics import METRICS_FILE

    run_dir = work / phase
    minutes = (deadline.left() - 30) / 60  # room to write the record
    if minutes <= 0.5:
        print("budget: too little time left for a learning run")
        return
    command = learning_command(game, scale, run_dir, minutes, target)
    print("running:", " ".join(command[1:]), flush=True)
    done = subprocess.run(command)
    record = learning_summary(run_dir, target)
    settings = learning_settings(run_dir)
    cell = f"{phase} {settings['digest']}"
    earlier = [row for row in results.rows if row["cell"] == cell]
    calls = (earlier[0]["commands"] if earlier else []) + [" ".join(command[1:])]
    results.add(cell, **record, settings=settings["changed"], commands=calls, exit_code=done.returncode)
    # Named by the settings too, so that an earlier run's plot and metrics stay beside its row.
    named = png.with_name(f"{png.stem}_{settings['digest']}")
    if record["curve"]:
        plot_curve(record, f"{game}: {scale.learn_seeds} seeds in one program", named.with_suffix(".png"))
    if (run_dir / METRICS_FILE).exists():  # the run directory stays on the machine: its metrics come back
        with open(run_dir / METRICS_FILE, "rb") as source, gzip.open(f"{named}_metrics.jsonl.gz", "wb") as target:
            shutil.copyfileobj(source, target)


# --- driver -------------------------------------------------------------------------------------
def device_tag() -> str:
    """Returns a short name of the device JAX uses: `h100`, `h200`, ... or `cpu`."""
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        return "cpu"
    found = re.search(r"\b([A-Z]+\d+)\b", device.device_kind.upper())
    return (found.group(1) if found else device.platform).lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=("speed", "determinism", "pong", "breakout", "prioritized"))
    parser.add_argument("--budget-s", type=float, default=510.0, help="the phase's deadline (seconds)")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--work", type=Path, default=Path("runs") / "gpu_suite", help="learning runs' directories")
    parser.add_argument("--tag", default=None, help="result file suffix (default: the device, e.g. h100)")
    parser.add_argument("--smoke", action="store_true", help="every phase on CartPole with tiny sizes")
    args = parser.parse_args(argv)
    deadline = Deadline(args.budget_s)
    scale = SMOKE if args.smoke else GPU
    tag = args.tag or (("smoke_" if args.smoke else "") + device_tag())
    path = args.results / f"gpu_{args.phase}_{tag}.json"
    header = {"benchmark": f"gpu_suite {args.phase}", "smoke": args.smoke, "scale": dataclasses.asdict(scale)}
    results = Results(path, header)
    if args.phase == "speed":
        phase_speed(scale, results, deadline)
    elif args.phase == "determinism":
        phase_determinism(scale, results, deadline)
    elif args.phase == "prioritized":
        phase_prioritized(scale, results, deadline)
    else:
        game = scale.learn_game if args.phase == "pong" else ("CartPole" if args.smoke else "Breakout")
        target = PONG_TARGET if args.phase == "pong" and not args.smoke else None
        phase_learning(args.phase, game, target, scale, results, deadline, args.work,
                       args.results / f"gpu_{args.phase}_{tag}.png")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
