"""Where chunks end, and the one iterator that runs them.

A chunk is a number of loop iterations (vector steps of every environment) run as one compiled
call. `ChunkSchedule` says where each chunk ends: after `chunk_steps` env steps, at the end of
the run, and at every multiple of the given periods (evaluation, checkpoint), so that evaluations
and checkpoints land on exact env-step multiples. `run_chunks` runs a loop chunk by chunk and
serves the trainer, `repro`, the benchmarks and the tests alike.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Iterator, NamedTuple

from dqn_jax.config import Config
from dqn_jax.loop import distributed


@dataclasses.dataclass(frozen=True)
class ChunkSchedule:
    """Chunk ends, in iterations; an iteration is `num_envs` env steps of every agent."""

    num_envs: int
    chunk_iterations: int  # the longest chunk
    total_iterations: int  # where the run ends
    periods: tuple[int, ...] = ()  # env steps; chunks also end at every multiple of each (0 = none)

    @classmethod
    def for_run(cls, config: Config) -> "ChunkSchedule":
        """Returns the trainer's schedule: chunks end at evaluation and checkpoint points too."""
        return cls.for_steps(config, config.total_steps, periods=(config.eval_every, config.checkpoint_every))

    @classmethod
    def for_steps(cls, config: Config, total_steps: int, periods: tuple[int, ...] = ()) -> "ChunkSchedule":
        """Returns a schedule of `chunk_steps` chunks for `total_steps` env steps (rounded up to whole iterations)."""
        E = config.num_envs
        return cls(E, max(1, config.chunk_steps // E), math.ceil(total_steps / E), tuple(p for p in periods if p))

    def next_end(self, iteration: int) -> int:
        """Returns the iteration at which the chunk starting at `iteration` ends (> `iteration`)."""
        end = min(iteration + self.chunk_iterations, self.total_iterations)
        for every in self.periods:
            multiple = (iteration * self.num_envs) // every + 1  # the next multiple of `every` after here
            end = min(end, math.ceil(multiple * every / self.num_envs))
        return max(end, iteration + 1)

    def crossed(self, every: int, done_at: int, env_steps: int) -> bool:
        """True when `env_steps` has passed a multiple of `every` that `done_at` had not (`every` 0: never)."""
        return bool(every) and env_steps // every > done_at // every


class Chunk(NamedTuple):
    """One chunk's outcome."""

    state: object  # the loop state after the chunk (the one passed in was donated)
    records: object  # the chunk's stacked `StepRecord` [K, ...], on the host
    start_iteration: int
    end_iteration: int
    seconds: float  # wall time of the compiled call, records copied to the host included


def run_chunks(loop, state, schedule: ChunkSchedule, start_iteration: int = 0) -> Iterator[Chunk]:
    """Runs `loop` from `state` chunk by chunk until `schedule.total_iterations`, yielding each `Chunk`.

    The caller may stop early by leaving the loop; it must continue from the last chunk's state.
    """
    iteration = start_iteration
    while iteration < schedule.total_iterations:
        end = schedule.next_end(iteration)
        started = time.perf_counter()
        state, records = loop.run_chunk(state, end - iteration)
        records = distributed.to_host(records)  # blocks: the time below is the chunk's
        yield Chunk(state, records, iteration, end, time.perf_counter() - started)
        iteration = end
