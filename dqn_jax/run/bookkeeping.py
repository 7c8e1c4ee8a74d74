"""The trainer's own state beside the agents': where the run is, its evaluations, what it reported.

Everything here is plain Python (no arrays), changes only between chunks, and round-trips through
the `meta` record of a state checkpoint, so a resumed run carries on with the same evaluation
history, best scores and already-reported findings. The meta keys are an interface (checkpoints
written by earlier versions are read back): extend them, rename none.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


def finite_or_none(value: float) -> float | None:
    """Returns `value`, or None where it is NaN or infinite (JSON has neither)."""
    return value if math.isfinite(value) else None


@dataclasses.dataclass
class Bookkeeping:
    """One run's counters and evaluation record; lists hold one entry per agent [S]."""

    num_envs: int
    iteration: int  # vector steps taken (each is `num_envs` env steps of every agent)
    eval_history: list[list[float]]  # each agent's latest evaluation returns, at most the window
    best: list[float]  # best mean evaluation return so far (-inf before the first)
    last_eval: list[float]  # the latest mean evaluation return (NaN before the first)
    evaluated_at: int = 0  # env steps at the latest evaluation
    checkpointed_at: int = -1  # env steps at the latest state checkpoint (-1: none)
    reported_findings: set[tuple[int, str]] = dataclasses.field(default_factory=set)  # (seed, rule)
    wall_seconds_before: float = 0.0  # wall-clock seconds spent by the processes before a resume
    target_reached: list[dict | None] = dataclasses.field(default_factory=list)  # per agent, see reach_target

    @property
    def env_steps(self) -> int:
        """Env steps taken by each agent."""
        return self.iteration * self.num_envs

    @classmethod
    def fresh(cls, num_seeds: int, num_envs: int) -> "Bookkeeping":
        """Returns the bookkeeping of a run that has not started."""
        return cls(num_envs, 0, [[] for _ in range(num_seeds)], [-math.inf] * num_seeds, [math.nan] * num_seeds,
                   target_reached=[None] * num_seeds)

    @classmethod
    def from_meta(cls, meta: dict, num_seeds: int, num_envs: int) -> "Bookkeeping":
        """Returns the bookkeeping saved in a checkpoint's `meta` (the run continues from that checkpoint)."""
        return cls(
            num_envs=num_envs,
            iteration=int(meta["iteration"]),
            eval_history=meta.get("eval_history", [[] for _ in range(num_seeds)]),
            best=[-math.inf if b is None else b for b in meta.get("best", [None] * num_seeds)],
            last_eval=[math.nan if x is None else x for x in meta.get("last_eval", [None] * num_seeds)],
            evaluated_at=int(meta.get("evaluated_at", 0)),
            checkpointed_at=int(meta["iteration"]) * num_envs,
            reported_findings={tuple(x) for x in meta.get("reported_findings", [])},
            wall_seconds_before=float(meta.get("wall_seconds", 0.0)),
            target_reached=meta.get("target_reached", [None] * num_seeds),
        )

    def to_meta(self, wall_seconds: float) -> dict:
        """Returns the JSON record saved with a state checkpoint; `wall_seconds`: the run's time so far."""
        return {"env_steps": self.env_steps, "iteration": self.iteration, "eval_history": self.eval_history,
                "wall_seconds": wall_seconds, "target_reached": self.target_reached,
                "best": [finite_or_none(b) for b in self.best],
                "last_eval": [finite_or_none(x) for x in self.last_eval],
                "evaluated_at": self.evaluated_at, "reported_findings": sorted(self.reported_findings)}

    def record_evaluation(self, returns: np.ndarray, window: int) -> list[bool]:
        """Adds one evaluation's returns [S, episodes]; returns, per agent, whether it set a new best."""
        improved = []
        for s, agent_returns in enumerate(returns):
            self.eval_history[s] = (self.eval_history[s] + agent_returns.tolist())[-window:]
            self.last_eval[s] = float(agent_returns.mean())
            improved.append(self.last_eval[s] > self.best[s])
            self.best[s] = max(self.best[s], self.last_eval[s])
        self.evaluated_at = self.env_steps
        return improved

    def reach_target(self, target: float, wall_seconds: float) -> bool:
        """Notes, for each agent whose latest evaluation return is at least `target` for the first
        time, `{"env_steps", "wall_seconds"}`; returns True once every agent has reached it."""
        for s, value in enumerate(self.last_eval):
            if self.target_reached[s] is None and value >= target:
                self.target_reached[s] = {"env_steps": self.env_steps, "wall_seconds": round(wall_seconds, 2)}
        return all(reached is not None for reached in self.target_reached)

    def window_means(self) -> list[float]:
        """Returns each agent's mean over its latest evaluation episodes (the `eval_return_mean<window>` field)."""
        return [float(np.mean(h)) for h in self.eval_history]
