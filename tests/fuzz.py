"""Command lines of edge values for the config fuzz tests: the same lines for the same seed."""

from __future__ import annotations

import dataclasses
import random
import typing

from dqn_jax.config import Config

INTS = ["-1", "0", "1", "3", "64", "65", "2147483647", "2147483648", "1000000000000", "-9999999999", "1.5", "x", ""]
FLOATS = ["nan", "-nan", "inf", "-inf", "0", "-0.0", "1e-300", "1e300", "-1", "0.5", "1", "2", "abc", ""]
STRINGS = ["", "CartPole", "Pong", "Pongg", "cartpole", "-", "ä", "x" * 300]
SIZES = [[], ["0"], ["1"], ["-3"], ["65537"], ["16", "16"], ["big"]]
SKIP = {"run_dir", "record_video"}  # a path and a video writer: covered by their own tests


def edge_values(name: str, kind) -> list[list[str]]:
    """Returns the argument lists to try for one field: `[--flag=value]`, or the flag and its values."""
    flag = "--" + name.replace("_", "-")
    if kind is bool:
        return [[flag], [f"--no-{flag[2:]}"], [f"{flag}=maybe"]]
    if typing.get_origin(kind) is typing.Literal:
        return [[f"{flag}={choice}"] for choice in (*typing.get_args(kind), "bogus", "")]
    if typing.get_origin(kind) is tuple:
        return [[flag, *values] for values in SIZES]
    values = {int: INTS, float: FLOATS, str: STRINGS}[kind]
    return [[f"{flag}={value}"] for value in values]


def combinations(count: int, seed: int) -> list[list[str]]:
    """Returns `count` command lines of 1 to 3 fields with edge values, the same for the same seed."""
    hints = typing.get_type_hints(Config)
    fields = [f.name for f in dataclasses.fields(Config) if f.name not in SKIP]
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        args = ["--game=CartPole", "--no-progress"]
        for name in rng.sample(fields, rng.randint(1, 3)):
            args += rng.choice(edge_values(name, hints[name]))
        lines.append(args)
    return lines
