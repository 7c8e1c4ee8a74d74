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
import time
from typing import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from dqn_jax.errors import ConfigError

CONNECT_TIMEOUT_S = 120  # how long a process waits for the others at start-up (--distributed-timeout)
_joined = False  # this process has joined its group (a sweep joins once for all its games)


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """Where this process stands in a multi-process run (None fields: read from the cluster)."""

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    timeout_s: float = CONNECT_TIMEOUT_S


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
    parser.add_argument("--distributed-timeout", default=None)
    known, rest = parser.parse_known_args(list(argv))
    try:
        numbers = [None if x is None else int(x) for x in (known.num_processes, known.process_id)]
    except ValueError:
        raise ConfigError("--num-processes and --process-id take whole numbers") from None
    try:
        timeout = CONNECT_TIMEOUT_S if known.distributed_timeout is None else float(known.distributed_timeout)
    except ValueError:
        timeout = -1.0
    if not 0 < timeout < 86_400:
        raise ConfigError(f"--distributed-timeout={known.distributed_timeout}: give the seconds to wait for the other "
                          f"processes at start-up (default {CONNECT_TIMEOUT_S})")
    explicit = (known.coordinator_address, *numbers)
    if all(x is None for x in explicit):
        return (ProcessGroup(timeout_s=timeout) if known.distributed else None), rest
    if any(x is None for x in explicit):
        raise ConfigError("--coordinator-address, --num-processes and --process-id go together (or pass "
                          "--distributed alone to read them from the cluster, e.g. under SLURM)")
    address, num_processes, process_id = explicit
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id={process_id} must be in 0..{num_processes - 1} "
                          f"for --num-processes={num_processes}")
    return ProcessGroup(address, num_processes, process_id, timeout), rest


def localhost_group_flags(num_processes: int) -> list[list[str]]:
    """Returns, for each of `num_processes` processes on this machine, the flags that make them one
    group (the coordinator on a free local port): append list `i` to process `i`'s command."""
    with socket.socket() as free:
        free.bind(("localhost", 0))
        port = free.getsockname()[1]
    shared = [f"--coordinator-address=localhost:{port}", f"--num-processes={num_processes}"]
    return [[*shared, f"--process-id={i}"] for i in range(num_processes)]


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    try:
        return host.strip("[]") or "localhost", int(port)
    except ValueError:
        raise ConfigError(f"--coordinator-address={address}: expected HOST:PORT") from None


def rendezvous(group: ProcessGroup) -> None:
    """Waits until every process of an explicit group has reached the coordinator's address, or
    raises after `group.timeout_s` naming the processes that did not come.

    JAX's own start-up waits the same way but, when a process is missing, aborts the whole process
    with a C++ stack trace; this meeting comes first so that the user gets one line instead. Process
    0 listens on the coordinator's port, each other process connects and says its id; once all have
    come, process 0 answers them, they hang up first (so the port is free at once for JAX's
    coordinator, which binds it next), and it closes.

    Raises:
      ConfigError: a process did not come, or process 0 could not be reached, within the timeout.
    """
    host, port = _split_address(group.coordinator_address)
    deadline = time.monotonic() + group.timeout_s
    if group.process_id == 0:
        _rendezvous_coordinator(port, group.num_processes, deadline, group)
        return
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic())) as conn:
                conn.sendall(f"{group.process_id}\n".encode())
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                if conn.recv(16).startswith(b"go"):
                    return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise ConfigError(f"process {group.process_id} of {group.num_processes} could not meet process 0 at "
                              f"{group.coordinator_address} within {group.timeout_s:g} s; start process 0 there "
                              "(or raise --distributed-timeout)")
        time.sleep(0.2)


def _rendezvous_coordinator(port: int, num_processes: int, deadline: float, group: ProcessGroup) -> None:
    """Process 0's side of `rendezvous`: accepts the other processes until all have come."""
    arrived: dict[int, socket.socket] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("", port))
        except OSError as err:
            raise ConfigError(f"process 0 cannot listen on port {port} of --coordinator-address="
                              f"{group.coordinator_address} ({err.strerror}); choose a free port") from None
        listener.listen(max(8, num_processes))
        try:
            while len(arrived) < num_processes - 1:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = sorted(set(range(1, num_processes)) - set(arrived))
                    raise ConfigError(
                        f"the process group at {group.coordinator_address} did not form within {group.timeout_s:g} s: "
                        f"process{'es' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {num_processes} "
                        "never came; start each with the same --coordinator-address and --num-processes and its own "
                        "--process-id (or raise --distributed-timeout)")
                listener.settimeout(remaining)
                try:
                    conn, _ = listener.accept()
                    conn.settimeout(max(0.1, deadline - time.monotonic()))
                    process_id = int(conn.recv(16).split(b"\n")[0])
                except (OSError, ValueError):
                    continue
                if 0 < process_id < num_processes and process_id not in arrived:
                    arrived[process_id] = conn
                else:  # not a process of this group, or one that came twice: not kept open
                    conn.close()
            for conn in arrived.values():
                conn.sendall(b"go")
            for conn in arrived.values():  # they hang up first: no TIME_WAIT left on the port
                try:
                    conn.recv(1)
                except OSError:
                    pass
        finally:
            for conn in arrived.values():
                conn.close()


def initialize(group: ProcessGroup) -> None:
    """Joins the process group (blocks until every process has joined, at most `group.timeout_s`).

    Raises:
      ConfigError: a process did not come, the coordinator cannot be reached, or the cluster
        environment names no group.
    """
    global _joined
    if _joined:
        return
    if group.coordinator_address is not None:
        rendezvous(group)
    # Cross-process collectives between CPU devices (the records' gather) need an implementation;
    # accelerators use their own, so this only matters where the devices are CPUs.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(group.coordinator_address, group.num_processes, group.process_id,
                                   initialization_timeout=int(group.timeout_s))
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
