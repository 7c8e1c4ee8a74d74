"""Helpers the tests share: tiny configs, running a loop for a few chunks, running the CLI."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import jax
from xla_flags import FUSION_EMITTERS, LEGACY_FUSIONS, OPT_LEVEL, RUN_OPTIMIZED, UNOPTIMIZED, with_xla_flags

from dqn_jax.config import Config, validate
from dqn_jax.loop.loop import agent_keys, build_loop
from dqn_jax.loop.schedule import ChunkSchedule, run_chunks
from dqn_jax.run import presets

REPO = Path(__file__).resolve().parents[1]
# The tiny CartPole run as command-line flags (for subprocess tests).
TINY_FLAGS = [
    "--game=CartPole", "--num-envs=4", "--train-every=4", "--hidden-sizes", "16", "--chunk-steps=400",
    "--eval-every=2000", "--eval-episodes=2", "--learning-starts=400", "--batch-size=32", "--replay-capacity=4000",
    "--target-update-every=20", "--fingerprint-every=50", "--final-eval-episodes=4", "--no-progress",
]


def tiny_cartpole_config() -> Config:
    """A CartPole config that trains for 2,000 env steps in a couple of seconds.

    One update per vector step of its 4 envs (the preset makes 2): one update round compiles in
    about half the time, and compilation is most of a tiny run's cost. Evaluations fall on chunk
    ends (every 800 env steps, chunks of 400), so every chunk has one length and the fused chunk
    compiles once (an evaluation every 1,000 made chunks of 200 too: a second compilation).
    """
    return validate(dataclasses.replace(
        presets.preset("CartPole"), total_steps=2_000, num_envs=4, train_every=4, learning_starts=400,
        batch_size=32, replay_capacity=4_000, eval_every=800, eval_episodes=2, chunk_steps=400,
        hidden_sizes=(16,), target_update_every=20, final_eval_episodes=4, progress=False))


def acting_only(game: str, **changes) -> Config:
    """A 4,000-env-step config of `game` that never learns (learning starts at the end)."""
    return validate(dataclasses.replace(
        presets.preset(game), total_steps=4_000, num_envs=8, replay_capacity=4_000, learning_starts=4_000,
        batch_size=32, eval_every=4_000, eval_episodes=1, final_eval_episodes=1, chunk_steps=800, progress=False,
        **changes))


def run_loop(config: Config, chunks: int, network=None):
    """Returns `(loop, state)` after `chunks` chunks of `chunk_steps` env steps from a fresh start."""
    loop = build_loop(config, network)
    schedule = ChunkSchedule.for_steps(config, chunks * config.chunk_steps)
    state = loop.init(agent_keys(config))
    for chunk in run_chunks(loop, state, schedule):
        state = chunk.state
    return loop, state


def params_after(config: Config, chunks: int = 3):
    """Returns the online params [S, ...] on the host after `chunks` chunks of training."""
    return jax.device_get(run_loop(config, chunks)[1].agents.params)


def run_cli(module: str, *args: str, timeout: float = 240, optimized: bool = False) -> subprocess.CompletedProcess:
    """Runs `python -m <module> args...` from the repository root; returns the finished process.

    `optimized` compiles at XLA's backend optimization level 1 with training's fusion emitters
    instead of the suite's flags (conftest): for a run long enough to pay its compilation back,
    and whose bits are then training's. (Level 1, not training's 3:
    most of the machine code's speed for less of the compilation. A suite compiled at any level
    but 0, `DQN_JAX_TEST_XLA_OPTIMIZE=1` or a level in one's own `XLA_FLAGS`, keeps its level.)"""
    at_level_0 = UNOPTIMIZED in os.environ.get("XLA_FLAGS", "").split()
    env = dict(os.environ)
    if optimized and at_level_0:
        env = with_xla_flags(env, drop=[OPT_LEVEL, FUSION_EMITTERS], add=[RUN_OPTIMIZED])
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def load_benchmark(name: str):
    """Returns the module `benchmarks/<name>.py` (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


plants = load_benchmark("plants")
ConstantQ = plants.ConstantQ  # one definition, shared with the health benchmark


def compiled_as_training(test):
    """Marks a test that compares the bits of two different programs (the fused and the host loop):
    XLA's older emitter for elementwise fusions, the suite's (conftest), rounds a fusion as its
    context in the program makes it, so two programs of the same maths need not agree in the last
    bit there, where training's emitter keeps them identical (docs/DESIGN.md, "The suite rounds
    differently from training"). In a session compiled with the older emitter the test runs again
    in a `pytest` subprocess compiled with training's (still at the session's level), and passes
    or fails as it does there."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        if LEGACY_FUSIONS not in os.environ.get("XLA_FLAGS", "").split():
            return test(*args, **kwargs)
        node = os.environ["PYTEST_CURRENT_TEST"].rsplit(" ", 1)[0]  # "path::name (call)"
        env = {**with_xla_flags(os.environ, drop=[FUSION_EMITTERS]), "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", node],
                              capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
        shown = f"{node} compiled with training's emitter:\n{done.stdout[-6000:]}{done.stderr[-2000:]}"
        assert done.returncode == 0 and "1 passed" in done.stdout, shown
    return run
