"""`python -m dqn_jax.doctor RUN_DIR`: is this run healthy? If not, why, and what to do.

Reads the run directory (`config.toml`, `metrics.jsonl`), runs the rules of `diagnostics.py` for
every seed, prints the verdict and writes `doctor.png` into the run directory: learning curve,
loss, Q values, τ-dormant fraction per layer and gradient norm over env steps.
Exit status: 0 when no finding is an error, 1 when one is, 2 when RUN_DIR is not a run directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from dqn_jax.agent import health_fields as H
from dqn_jax.config import Config
from dqn_jax.health.diagnostics import SEVERITIES, Finding, History, across_seeds, diagnose
from dqn_jax.loop.records import EVAL_RETURN_MEAN
from dqn_jax.run.metrics import CONFIG_FILE, METRICS_FILE, read_metrics
from dqn_jax.run.presets import load_toml

PLOT_FILE = "doctor.png"


def load_run(run_dir: Path) -> tuple[Config, list[dict]]:
    """Returns the run's config and its metrics rows.

    Raises:
      ValueError: RUN_DIR lacks `config.toml` or `metrics.jsonl`, or they cannot be read
        (`ConfigError`, a ValueError, for a config that does not parse).
    """
    for name in (CONFIG_FILE, METRICS_FILE):
        if not (run_dir / name).is_file():
            raise ValueError(f"{run_dir} has no {name}: not a run directory")
    return load_toml(run_dir / CONFIG_FILE), read_metrics(run_dir)


def findings_by_seed(config: Config, rows: list[dict]) -> dict[int, list[Finding]]:
    """Returns each seed's findings for a run's config and metrics rows."""
    seeds = sorted({row["seed"] for row in rows if "seed" in row}) or [config.seed]
    return {seed: diagnose(History.from_rows(config, rows, seed)) for seed in seeds}


def examine(run_dir: Path) -> dict[int, list[Finding]]:
    """Returns each seed's findings for a run directory."""
    return findings_by_seed(*load_run(run_dir))


def plot(run_dir: Path, rows: list[dict]) -> Path:
    """Writes the five health plots (one PNG) and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted({row.get("seed", 0) for row in rows})
    fig, axes = plt.subplots(5, 1, figsize=(8, 14), sharex=True)

    def series(kind: str, key: str, seed: int):
        points = [(r["env_steps"], r[key]) for r in rows
                  if r["kind"] == kind and r.get("seed", 0) == seed and r.get(key) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    for seed in seeds:
        label = f"seed {seed}" if len(seeds) > 1 else None
        axes[0].plot(*series("eval", EVAL_RETURN_MEAN, seed), marker="o", ms=3, label=label)
        axes[1].plot(*series("train", H.LOSS, seed), label=label)
        for key, style in ((H.Q_MEAN, "-"), (H.Q_MAX, ":"), (H.Q_MIN, ":")):
            axes[2].plot(*series("health", key, seed), style, label=f"{key}" + (f" s{seed}" if label else ""))
        # τ-dormant fraction per layer (runs before it was measured: the fraction of dead units).
        stat = H.DORMANT_FRACTION if any(H.DORMANT_FRACTION in r for r in rows) else H.DEAD_FRACTION
        layers = sorted({k for r in rows if r["kind"] == "health" for k in r if H.layer_of(k, stat)})
        for key in layers:
            axes[3].plot(*series("health", key, seed), label=H.layer_of(key, stat) + (f" s{seed}" if label else ""))
        axes[4].plot(*series("health", H.GRAD_NORM, seed), label=label)
    stat = H.DORMANT_FRACTION if any(H.DORMANT_FRACTION in r for r in rows) else H.DEAD_FRACTION
    titles = ("evaluation return", "loss", "Q values (mean, max, min)",
              f"dormant fraction per layer (τ = {H.DORMANT_TAU})" if stat == H.DORMANT_FRACTION
              else "dead fraction per layer", "gradient norm (global)")
    for axis, title in zip(axes, titles, strict=True):
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    for axis in (axes[1], axes[4]):  # log scale only where there is positive data to show
        values = [y for line in axis.get_lines() for y in line.get_ydata() if y > 0]
        if values:
            axis.set_yscale("log")
        else:
            axis.text(0.5, 0.5, "no data in this run", ha="center", va="center", transform=axis.transAxes)
    axes[-1].set_xlabel("env steps")
    fig.tight_layout()
    path = run_dir / PLOT_FILE
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def next_step(findings: dict[int, list[Finding]]) -> str | None:
    """Returns the one thing to try first: the fix of the most severe finding, among equals the one
    most seeds share, then the earliest."""
    by_rule: dict[str, list[Finding]] = {}
    for found in findings.values():
        for finding in found:
            by_rule.setdefault(finding.rule, []).append(finding)
    if not by_rule:
        return None
    first = min(by_rule.values(), key=lambda same: (-SEVERITIES.index(same[0].severity), -len(same),
                                                    min(f.env_steps for f in same)))
    return f"{first[0].fix} ({first[0].rule})"


def report(run_dir: Path, out=print) -> int:
    """Prints the verdict for a run directory, writes its plots; returns the exit code.

    One seed: each finding. Several: each rule once, with how many seeds it names and the first
    of them in full, then a verdict per seed. Either way the report ends with the next thing to try.
    """
    config, rows = load_run(run_dir)
    findings = findings_by_seed(config, rows)
    path = plot(run_dir, rows)
    all_findings = [(seed, f) for seed, found in findings.items() for f in found]
    learned = any(row["kind"] == "train" and row.get("loss") is not None for row in rows)
    if not all_findings and not learned:
        reached = max((row["env_steps"] for row in rows if row["kind"] == "train"), default=0)
        out(f"learning has not started in {run_dir}: no update was made (learning starts at env step "
            f"{config.learning_starts:,}; the run has {reached:,}), so there is nothing to judge yet")
    elif not all_findings:
        out(f"healthy: no finding in {run_dir} ({len(findings)} seed(s) examined)")
    elif len(findings) == 1:
        for _, finding in all_findings:
            out(finding.render())
    else:
        rules = list(dict.fromkeys(f.rule for _, f in all_findings))
        for rule in rules:
            seeds = [seed for seed, f in all_findings if f.rule == rule]
            first = next(f for _, f in all_findings if f.rule == rule)
            out(across_seeds(first, len(seeds), len(findings), seeds))
        for seed, found in findings.items():
            errors = sum(f.severity == "error" for f in found)
            out(f"seed {seed}: " + (f"{errors} error(s), {len(found) - errors} warning(s): "
                                    f"{', '.join(f.rule for f in found)}" if found else "healthy"))
    errors = sum(f.severity == "error" for _, f in all_findings)
    warnings = sum(f.severity == "warning" for _, f in all_findings)
    if all_findings:
        out(f"verdict: {errors} error(s), {warnings} warning(s)")
    out(f"plots: {path}")
    step = next_step(findings)
    if step:
        out(f"next: {step}")
    return 1 if errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m dqn_jax.doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return report(args.run_dir)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

