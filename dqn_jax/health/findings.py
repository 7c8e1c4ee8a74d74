"""What the health rules read and return: one agent's metric `History` and a `Finding`.

Apart from the rules (`rules.py`) and their verdict (`diagnostics.py`) so that both can use them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

from dqn_jax.agent import health_fields as H
from dqn_jax.config import Config

SEVERITIES = ("info", "warning", "error")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One diagnosis: what is wrong, the numbers that show it, and what to do."""

    rule: str
    severity: str  # info | warning | error
    env_steps: int  # where the evidence is (env steps)
    evidence: str
    explanation: str
    fix: str

    def as_row(self, seed: int) -> dict:
        """Returns the finding as a `kind: "finding"` metrics row."""
        return {"kind": "finding", "env_steps": self.env_steps, "seed": seed, **dataclasses.asdict(self)}

    def render(self) -> str:
        """Returns the finding as plain text: headline, evidence, explanation, fix."""
        return (f"[{self.severity}] {self.rule} (env step {self.env_steps:,}): {self.evidence}\n"
                f"  why: {self.explanation}\n  fix: {self.fix}")


# Rows of each kind a bounded History keeps: more than the longest window a rule reads (5 rows).
TAIL = 16


@dataclasses.dataclass
class Earlier:
    """What the rules need to know of the rows a bounded `History` no longer holds: running folds
    over them, in order (nothing, for a History that keeps every row)."""

    env_reward_nonzero_max: float | None = None
    finished_return_max: float | None = None
    life_losses: int = 0
    life_loss_terminals: int = 0
    first_life_loss: dict | None = None  # the first health row that lost a life
    grad_norms: int = 0  # finite gradient norms seen
    early_grad_norms: list[float] = dataclasses.field(default_factory=list)  # the first three of them
    episode_rows: list[dict] = dataclasses.field(default_factory=list)  # the last 5 learning rows with episodes
    dormant_lowest: dict[str, float] = dataclasses.field(default_factory=dict)  # per layer, learning rows
    srank_peak: float = 0.0  # the highest srank of learning rows
    churn_rows: int = 0  # learning rows with a policy churn
    first_learning_train: dict | None = None  # the first train row with a learning rate
    last_eval_before_learning: dict | None = None
    evals_since_learning: int = 0
    best_eval_since_learning: float | None = None
    last_eval_since_learning: dict | None = None

    def absorb(self, row: dict, learning: bool) -> None:
        """Folds in one row as it leaves the History (`learning`: it was written once learning had started)."""
        if row["kind"] == "train":
            if self.first_learning_train is None and row.get("learning_rate") is not None:
                self.first_learning_train = row
        elif row["kind"] == "eval":
            if not learning:
                self.last_eval_before_learning = row
                return
            value = number(row.get("eval_return_mean"))
            self.evals_since_learning += 1
            self.best_eval_since_learning = fold_max(self.best_eval_since_learning, value)
            self.last_eval_since_learning = row
        elif row["kind"] == "health":
            self._absorb_health(row, learning)

    def _absorb_health(self, row: dict, learning: bool) -> None:
        self.env_reward_nonzero_max = fold_max(self.env_reward_nonzero_max, number(row.get(H.ENV_REWARD_NONZERO)))
        if row.get(H.FINISHED_RETURN_MEAN) is not None:
            self.finished_return_max = fold_max(self.finished_return_max, row[H.FINISHED_RETURN_MEAN])
        self.life_losses += int(row.get(H.LIFE_LOSSES) or 0)
        self.life_loss_terminals += int(row.get(H.LIFE_LOSS_TERMINALS) or 0)
        if self.first_life_loss is None and row.get(H.LIFE_LOSSES):
            self.first_life_loss = row
        norm = number(row.get(H.GRAD_NORM))
        if math.isfinite(norm):
            self.grad_norms += 1
            if len(self.early_grad_norms) < 3:
                self.early_grad_norms.append(norm)
        if not learning:
            return
        if row.get(H.EPISODES, 0) and row.get(H.TRUNCATED_FRACTION) is not None:
            self.episode_rows = [*self.episode_rows, row][-5:]
        if row.get(H.DORMANT_FRACTION) is not None:
            for key, value in row.items():
                layer = H.layer_of(key, H.DORMANT_FRACTION)
                if layer is not None:
                    lowest = self.dormant_lowest.get(layer, math.inf)
                    self.dormant_lowest[layer] = min(lowest, number(value)) if math.isfinite(number(value)) else lowest
            self.srank_peak = max(self.srank_peak, number(row.get(H.SRANK)))
        if row.get(H.POLICY_CHURN) is not None:
            self.churn_rows += 1


@dataclasses.dataclass
class History:
    """One agent's rows, in order, and the run's config.

    A full History (`from_rows`) holds every row. A bounded one (`bounded`, fed with `add` chunk by
    chunk while training) holds the last `TAIL` rows of each kind and folds the older ones into
    `earlier`, so that the rules cost the same at the 10,000th chunk as at the 10th. The rules read
    both alike: recent windows from the lists, everything older from `earlier`.
    """

    config: Config
    train: list[dict]
    eval: list[dict]
    health: list[dict]
    earlier: Earlier = dataclasses.field(default_factory=Earlier)
    limit: int | None = None  # rows kept per kind; None keeps all

    @classmethod
    def from_rows(cls, config: Config, rows: Sequence[dict], seed: int | None = None) -> "History":
        """Splits metrics rows by kind, keeping only `seed`'s rows when given."""
        rows = [r for r in rows if seed is None or r.get("seed", seed) == seed]
        return cls(config=config, train=[r for r in rows if r["kind"] == "train"],
                   eval=[r for r in rows if r["kind"] == "eval"],
                   health=[r for r in rows if r["kind"] == "health"])

    @classmethod
    def bounded(cls, config: Config, limit: int = TAIL) -> "History":
        """Returns an empty History that keeps `limit` rows of each kind (see the class)."""
        return cls(config=config, train=[], eval=[], health=[], limit=limit)

    def add(self, rows: Sequence[dict]) -> None:
        """Appends one agent's new rows (train, eval and health; others are ignored), in order."""
        for row in rows:
            kept = {"train": self.train, "eval": self.eval, "health": self.health}.get(row["kind"])
            if kept is None:
                continue
            kept.append(row)
            if self.limit is not None and len(kept) > self.limit:
                oldest = kept.pop(0)
                self.earlier.absorb(oldest, self.is_learning(oldest))

    def is_learning(self, row: dict) -> bool:
        """Whether `row` was written once learning had started: a health row of a chunk with
        updates, another row after `learning_starts` env steps."""
        if row["kind"] == "health":
            return (row.get(H.UPDATES) or 0) > 0
        return row["env_steps"] > self.config.learning_starts

    def learning(self, rows: list[dict]) -> list[dict]:
        """Returns the rows written once learning had started: a rule that judges learning must not
        judge the random steps before it."""
        return [r for r in rows if self.is_learning(r)]


def fold_max(current: float | None, value: float) -> float:
    """One step of Python's `max` over a sequence: `value` replaces `current` only when greater."""
    return value if current is None or value > current else current


def number(value) -> float:
    """Returns a row's value as a float, NaN where it is missing (None)."""
    return math.nan if value is None else float(value)


def streak(rows: list[dict], predicate: Callable[[dict], bool], length: int) -> dict | None:
    """Returns the row that starts the first run of `length` consecutive rows satisfying `predicate`."""
    count = 0
    for i, row in enumerate(rows):
        count = count + 1 if predicate(row) else 0
        if count >= length:
            return rows[i - length + 1]
    return None


# --- the rules ---------------------------------------------------------------------------------
