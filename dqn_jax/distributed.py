"""Several processes training one run together, with `jax.distributed` (one process per host, or
several on one host).

Every process runs the same program: the agents are sharded over all processes' devices
(`loop.seed_mesh`), each process steps only the EnvPool pools of its own devices' agents, and the
chunk's records are gathered to every process so that all of them take the same decisions
(evaluate, checkpoint, halt, stop). Process 0 alone writes the run directory's rows, summary and
best params; state checkpoints are written by every process, each its own shards (orbax).

The flags are the process's place in the group, not part of the run's config:
`--coordinator-address=HOST:PORT --num-processes=N --process-id=I`, or `--distributed` alone to
let `jax.distributed.initialize()` read them from the cluster (SLURM, Open MPI, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
from typing import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from dqn_jax.errors import ConfigError

CONNECT_TIMEOUT_S = 120  # how long a process waits for the others at start-up
_joined = False  # this process has joined its group (a sweep joins once for all its games)


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """Where this process stands in a multi-process run (None fields: read from the cluster)."""

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


def split_flags(argv: Sequence[str]) -> tuple[ProcessGroup | None, list[str]]:
    """Returns `(group, other_flags)`: the process-group flags of a command line (None when it has
    none: a one-process run) and the flags left for the run's config.

    Raises:
      ConfigError: some but not all of the three explicit flags, or values out of range.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--distributed", action="store_true")
    parser.add_argument("--coordinator-address", default=None)
    parser.add_argument("--num-processes", default=None)
    parser.add_argument("--process-id", default=None)
    known, rest = parser.parse_known_args(list(argv))
    try:
        numbers = [None if x is None else int(x) for x in (known.num_processes, known.process_id)]
    except ValueError:
        raise ConfigError("--num-processes and --process-id take whole numbers") from None
    explicit = (known.coordinator_address, *numbers)
    if all(x is None for x in explicit):
        return (ProcessGroup() if known.distributed else None), rest
    if any(x is None for x in explicit):
        raise ConfigError("--coordinator-address, --num-processes and --process-id go together (or pass "
                          "--distributed alone to read them from the cluster, e.g. under SLURM)")
    address, num_processes, process_id = explicit
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id={process_id} must be in 0..{num_processes - 1} "
                          f"for --num-processes={num_processes}")
    return ProcessGroup(address, num_processes, process_id), rest


def localhost_group_flags(num_processes: int) -> list[list[str]]:
    """Returns, for each of `num_processes` processes on this machine, the flags that make them one
    group (the coordinator on a free local port): append list `i` to process `i`'s command."""
    with socket.socket() as free:
        free.bind(("localhost", 0))
        port = free.getsockname()[1]
    shared = [f"--coordinator-address=localhost:{port}", f"--num-processes={num_processes}"]
    return [[*shared, f"--process-id={i}"] for i in range(num_processes)]


def initialize(group: ProcessGroup) -> None:
    """Joins the process group (blocks until every process has joined, at most `CONNECT_TIMEOUT_S`).

    Raises:
      ConfigError: the coordinator cannot be reached, or the cluster environment names no group.
    """
    global _joined
    if _joined:
        return
    # Cross-process collectives between CPU devices (the records' gather) need an implementation;
    # accelerators use their own, so this only matters where the devices are CPUs.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(group.coordinator_address, group.num_processes, group.process_id,
                                   initialization_timeout=CONNECT_TIMEOUT_S)
    except (RuntimeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        where = group.coordinator_address or "the address the cluster environment names"
        raise ConfigError(f"could not join the process group at {where} ({first}); start every process "
                          "with the same --coordinator-address and --num-processes, each with its own "
                          "--process-id") from None
    _joined = True


def is_main() -> bool:
    """True in the process that writes the run directory (process 0; the only one without a group)."""
    return jax.process_index() == 0


def to_host(tree):
    """Returns `tree` as numpy arrays holding every process's shards (the whole seed axis)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def any_process(flag: bool) -> bool:
    """Returns True when `flag` is True in any process (every process must call it)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]))))


def barrier(name: str) -> None:
    """Waits until every process has reached the barrier called `name` (nothing with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
