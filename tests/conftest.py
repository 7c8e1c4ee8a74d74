"""Shared fixtures, the speed split, and how the test session compiles.

Tests under `integration/` are marked `slow`: `python -m pytest -m "not slow"` runs the unit
tests alone (pure, no Atari pool, seconds each); `python -m pytest` runs everything, as CI does.

Compilation is most of a tiny run's cost (the tiny CartPole run: about four fifths of its
time, most of it the fused chunk's), and most of a compilation is LLVM optimizing the machine
code, which a run of a few thousand env steps never pays back. So the tests compile with XLA's
backend optimization level 0: the same HLO, the same XLA passes over it, unoptimized machine
code, and XLA's older emitter for elementwise fusions, which compiles in less than half the CPU
(docs/DESIGN.md, "Tests compile unoptimized"). `DQN_JAX_TEST_XLA_OPTIMIZE=1`, or a level in one's
own `XLA_FLAGS`, compiles as training does. Programs that repeat across tests, workers and
subprocesses (inits, acting, the learner's) also come from JAX's persistent compilation cache,
in a directory made for the session and removed after it; the fused chunk never does, as
EnvPool names its pool's address in the program. `DQN_JAX_TEST_COMPILATION_CACHE=0` turns the
cache off; a `JAX_COMPILATION_CACHE_DIR` of one's own is used as it is.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from xla_flags import OPT_LEVEL, SUITE, accepted_by_xla, with_xla_flags

OPTIMIZE = os.environ.get("DQN_JAX_TEST_XLA_OPTIMIZE", "0") == "1"
if not OPTIMIZE and OPT_LEVEL not in os.environ.get("XLA_FLAGS", ""):
    # Before jax is imported: XLA reads its flags when the backend starts; workers and the
    # subprocesses the tests start inherit them.
    os.environ["XLA_FLAGS"] = with_xla_flags(os.environ, add=accepted_by_xla(SUITE))["XLA_FLAGS"]

import jax  # noqa: E402
import pytest  # noqa: E402
from helpers import tiny_cartpole_config  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

INTEGRATION = Path(__file__).parent / "integration"


CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_made_cache: list[str] = []  # the session's cache directory, where this process made it


def pytest_configure(config):
    # The controller makes the directory before xdist starts its workers, which inherit the
    # environment, as do the subprocesses the tests start (the CLI, two-process runs).
    if os.environ.get("DQN_JAX_TEST_COMPILATION_CACHE", "1") == "0":
        return
    if not os.environ.get(CACHE_ENV):
        _made_cache.append(tempfile.mkdtemp(prefix="dqn_jax-tests-xla-cache-"))
        os.environ[CACHE_ENV] = _made_cache[0]
        # Programs that compile faster than this are cheaper to compile than to look up and load.
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
    # jax read its flags when this file imported it; in a process without xdist the tests run here.
    jax.config.update("jax_compilation_cache_dir", os.environ[CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")))


def pytest_unconfigure(config):
    for made in _made_cache:
        shutil.rmtree(made, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if INTEGRATION in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def tiny_cartpole():
    """A CartPole config that trains for 2,000 env steps in a couple of seconds."""
    return tiny_cartpole_config()
