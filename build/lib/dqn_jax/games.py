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
def atari_games() -> tuple[str, ...]:
    """Returns the names of every Atari game EnvPool registers, without the `-v5` suffix, sorted."""
    import envpool

    return tuple(
        sorted(name[: -len(ATARI_SUFFIX)] for name in envpool.list_all_envs()
               if name.endswith(ATARI_SUFFIX) and "/" not in name)
    )


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
