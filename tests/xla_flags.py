"""XLA's flags for the test session and the subprocesses its tests start (no jax import here:
XLA reads `XLA_FLAGS` once, when a process starts its first backend, so they are set before)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping

OPT_LEVEL = "--xla_backend_optimization_level"
UNOPTIMIZED = f"{OPT_LEVEL}=0"  # the suite's level (conftest): the machine code unoptimized
FUSION_EMITTERS = "--xla_cpu_use_fusion_emitters"
# With the level, the suite's second flag: XLA's older emitter for elementwise fusions compiled the tiny
# CartPole chunk in ~0.4x the CPU. Its rounding is not the newer emitter's (docs/DESIGN.md), so a
# test's bits are not training's; a run whose learning a test scores compiles as training does.
LEGACY_FUSIONS = f"{FUSION_EMITTERS}=false"
SUITE = (UNOPTIMIZED, LEGACY_FUSIONS)
# A subprocess whose run is long enough to pay optimization back (`helpers.run_cli(..., optimized=True)`):
# the CartPole preset's run took 0.78x the CPU of the default level (3), its bits the same (docs/DESIGN.md);
# it drops the suite's flags, the emitter's too, and compiles at this level alone.
RUN_OPTIMIZED = f"{OPT_LEVEL}=1"
DEVICE_COUNT = "--xla_force_host_platform_device_count"  # forced CPU devices, set by the tests that need them


def accepted_by_xla(flags: Iterable[str]) -> tuple[str, ...]:
    """Returns those of `flags` that the installed XLA knows: all of them tried together in a
    subprocess that starts a CPU backend (about a second), and one by one only if that fails. XLA
    aborts the process on an unknown flag in `XLA_FLAGS`, and flags come and go between releases:
    jaxlib 0.12.1 dropped `--xla_cpu_use_fusion_emitters`, so a suite that set it unconditionally
    lost every worker at its first array (CI's exit 5)."""
    def known(*tried: str) -> bool:
        env = {**os.environ, "XLA_FLAGS": " ".join(tried), "JAX_PLATFORMS": "cpu"}
        probe = [sys.executable, "-c", "import jax; jax.devices()"]
        return subprocess.run(probe, env=env, capture_output=True, timeout=120).returncode == 0
    flags = tuple(flags)
    return flags if known(*flags) else tuple(flag for flag in flags if known(flag))


def with_xla_flags(environ: Mapping[str, str], add: Iterable[str] = (), drop: Iterable[str] = ()) -> dict[str, str]:
    """Returns a copy of `environ` whose `XLA_FLAGS` keeps the flags it had, less those that start
    with any of `drop`, followed by `add`: a subprocess that needs a flag of its own (forced CPU
    devices) still compiles at the session's level."""
    drop = tuple(drop)
    kept = [f for f in environ.get("XLA_FLAGS", "").split() if not (drop and f.startswith(drop))]
    return {**environ, "XLA_FLAGS": " ".join([*kept, *add])}
