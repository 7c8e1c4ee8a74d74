"""What the health rules read and return: one agent's metric `History` and a `Finding`.

Apart from the rules (`rules.py`) and their verdict (`diagnostics.py`) so that both can use them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

from dqn_jax import health as H
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


@dataclasses.dataclass
class History:
    """One agent's rows, in order, and the run's config."""

    config: Config
    train: list[dict]
    eval: list[dict]
    health: list[dict]

    @classmethod
    def from_rows(cls, config: Config, rows: Sequence[dict], seed: int | None = None) -> "History":
        """Splits metrics rows by kind, keeping only `seed`'s rows when given."""
        rows = [r for r in rows if seed is None or r.get("seed", seed) == seed]
        return cls(config=config, train=[r for r in rows if r["kind"] == "train"],
                   eval=[r for r in rows if r["kind"] == "eval"],
                   health=[r for r in rows if r["kind"] == "health"])


    def learning(self, rows: list[dict]) -> list[dict]:
        """Returns the rows written once learning had started — health rows of chunks with updates,
        other rows after `learning_starts` env steps: a rule that judges learning must not judge
        the random steps before it."""
        return [r for r in rows if ((r.get(H.UPDATES) or 0) > 0 if r["kind"] == "health"
                                    else r["env_steps"] > self.config.learning_starts)]


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
