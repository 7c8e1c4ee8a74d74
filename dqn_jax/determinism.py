"""XLA's deterministic GPU ops, asked for where a command starts rather than on import.

On a GPU, XLA's `--xla_gpu_deterministic_ops=true` makes scatter-adds and reductions run in a fixed
order, so that a run repeats bit for bit (at a cost in speed, docs/results.md). XLA reads
`XLA_FLAGS` once, when JAX starts its first backend, so the flag must be in the environment before
that. The commands (`python -m dqn_jax.train`, `repro`, `sweep`, `evaluate`) add it as their first
act; Python code that calls `train()` sets it itself (`XLA_FLAGS=--xla_gpu_deterministic_ops=true`),
and `train()` warns on a GPU where it is missing. `DQN_JAX_NONDETERMINISTIC=1` trades it for speed.
"""

from __future__ import annotations

import os
from typing import MutableMapping

FLAG = "--xla_gpu_deterministic_ops=true"
OPT_OUT = "DQN_JAX_NONDETERMINISTIC"


def request_deterministic_ops(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Adds `FLAG` to `environ["XLA_FLAGS"]` unless `DQN_JAX_NONDETERMINISTIC=1` or `XLA_FLAGS` already
    sets the option; returns whether `XLA_FLAGS` now asks for deterministic ops. Call it before JAX
    starts a backend (the commands do so first thing); afterwards it changes nothing XLA reads."""
    flags = environ.get("XLA_FLAGS", "")
    if environ.get(OPT_OUT) != "1" and "xla_gpu_deterministic_ops" not in flags:
        environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    return FLAG in environ.get("XLA_FLAGS", "")


def missing_on_gpu(backend: str, environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Returns a one-line warning when a GPU run has no deterministic-ops flag and did not opt out, else None."""
    if backend != "gpu" or FLAG in environ.get("XLA_FLAGS", "") or environ.get(OPT_OUT) == "1":
        return None
    return (f"XLA_FLAGS lacks {FLAG}: this GPU run may not repeat bit for bit; set it before JAX starts "
            f"(the command line does), or {OPT_OUT}=1 to say that speed matters more")
