"""Game names: which games `--game` accepts, their canonical spelling and EnvPool's task ids.

Apart from `envs` so that configuration can check a name without building a pool, and without
importing EnvPool at module level: the Atari list is read from EnvPool's registry on first use.
"""

from __future__ import annotations

import difflib
import functools

from dqn_jax.errors import ConfigError

CARTPOLE = "CartPole"
ATARI_SUFFIX = "-v5"


@functools.cache
def _atari_tasks() -> dict[str, str]:
    """Returns {game: ALE task name} (`BankHeist`: `bank_heist`) for every Atari game EnvPool
    registers: its `-v5` tasks built by `envpool.atari` (MuJoCo's `Ant-v5` and the like are not)."""
    from envpool.registration import registry

    return {name[: -len(ATARI_SUFFIX)]: kwargs.get("task", "") for name, (module, _, kwargs) in registry.specs.items()
            if name.endswith(ATARI_SUFFIX) and "/" not in name and module == "envpool.atari"}


def atari_games() -> tuple[str, ...]:
    """Returns the names of every Atari game EnvPool registers, without the `-v5` suffix, sorted."""
    return tuple(sorted(_atari_tasks()))


def ale_name(game: str) -> str | None:
    """Returns the ALE's name of an Atari game (`MsPacman` → `ms_pacman`), None for CartPole."""
    return _atari_tasks().get(game)


def known_games() -> tuple[str, ...]:
    """Returns every game name `--game` accepts: CartPole and the Atari games."""
    return (CARTPOLE, *atari_games())


def is_atari(game: str) -> bool:
    """Returns True for a canonical Atari game name (anything but CartPole)."""
    return game != CARTPOLE


def canonical_game(name: str) -> str:
    """Returns the canonical spelling of a game name (`pong`, `Pong-v5` → `Pong`).

    Raises:
      ConfigError: the name is unknown; the message suggests the closest known names.
    """
    bare = name.strip()
    for suffix in (ATARI_SUFFIX, "-v1", "-v0"):
        if bare.endswith(suffix):
            bare = bare[: -len(suffix)]
    if bare.lower() == CARTPOLE.lower():  # no need to read EnvPool's registry for the sanity problem
        return CARTPOLE
    by_lower = {g.lower(): g for g in known_games()}
    if bare.lower() in by_lower:
        return by_lower[bare.lower()]
    close = difflib.get_close_matches(bare.lower(), list(by_lower), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(by_lower[c] for c in close)}?" if close else ""
    raise ConfigError(
        f"game = {name!r} is not an EnvPool game{hint} (CartPole or any of the "
        f"{len(atari_games())} Atari games, e.g. Pong, Breakout, MsPacman)"
    )


def task_id(game: str) -> str:
    """Returns EnvPool's task id for a canonical game name (`Pong` → `Pong-v5`)."""
    return "CartPole-v1" if game == CARTPOLE else game + ATARI_SUFFIX
