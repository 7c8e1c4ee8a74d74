"""Presets and overlays: TOML files of settings layered on the `Config` defaults, and the command line.

The defaults of `Config` are the Nature-Atari settings. An overlay is a TOML file that states only
what differs from the config it is layered on. The shipped overlays are the checkout's `configs/`
(the wheel carries them as `dqn_jax/configs`): a game's preset is the defaults plus the overlays `GAME_OVERLAYS` names
for it; users add their own with `--config=NAME_OR_FILE`. TOML values are turned into
command-line arguments and parsed by tyro, the same typed path as the command line itself, so a
value is accepted or refused the same way wherever it is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import re
import tomllib
from pathlib import Path
from typing import Sequence

import tomli_w

from dqn_jax import games
from dqn_jax.config import FIELD_NAMES, Config, validate
from dqn_jax.errors import ConfigError


def _overlays_dir() -> Path:
    """Returns the folder of the shipped overlays: `dqn_jax/configs` in an installed wheel (mapped
    there from the checkout's `configs/` by `pyproject.toml`), else the checkout's own `configs/`
    (an editable install or a source tree, a git worktree of it included, reads its own files)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


OVERLAYS_DIR = _overlays_dir()
# The overlays that make a game's preset, in order; any other Atari game uses the defaults alone.
GAME_OVERLAYS: dict[str, tuple[str, ...]] = {
    "CartPole": ("cartpole",),
    "Pong": ("vanilla_dqn",),
    "Breakout": ("vanilla_dqn",),
}


MEASURED_FILE = OVERLAYS_DIR / "measured.json"  # what shipped overlays were measured to do (see `measured`)


def measured(overlay: str) -> dict | None:
    """Returns the measured run that messages quote for a shipped overlay, or None: `{game, seed,
    eval_return, env_steps, minutes, reached_target, target_return, cpu, cores, result}` from
    `configs/measured.json`, whose figures are those of `result` (a file of benchmarks/results/;
    a test checks that they agree), so that no message carries a figure of its own."""
    import json

    return json.loads(MEASURED_FILE.read_text()).get(overlay)


def shipped_overlays() -> tuple[str, ...]:
    """Returns the names of the overlays shipped with the package (`machado`, `vanilla_dqn`, ...)."""
    return tuple(sorted(p.stem for p in OVERLAYS_DIR.glob("*.toml")))


def overlay_path(name_or_path: str | Path) -> Path:
    """Returns the file for `--config`: an existing path, else the shipped overlay of that name.

    `configs/machado.toml` (the overlay's path in a checkout, run from elsewhere) and `machado`
    both name the shipped `machado` overlay when no such file exists here.

    Raises:
      ConfigError: neither a file nor a shipped overlay.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = OVERLAYS_DIR / f"{path.stem}.toml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"config file {path} does not exist (shipped overlays: {', '.join(shipped_overlays())})")


def preset(game: str) -> Config:
    """Returns the validated preset config of a game, as `--game=GAME` gets it: the defaults, then
    the game's overlays, with the name spelled canonically (`pong` and `Pong-v5` give `Pong`'s preset).

    Raises:
      ConfigError: the game is unknown (the message names the closest known games).
    """
    game = games.canonical_game(game)
    config = Config(game=game)
    for name in GAME_OVERLAYS.get(game, ()):
        config = load_toml(OVERLAYS_DIR / f"{name}.toml", config)
    return validate(dataclasses.replace(config, game=game))


def load_toml(path: Path | str, base: Config | None = None) -> Config:
    """Returns `base` (default: the `Config` defaults) with the values of a TOML file layered on.

    Raises:
      ConfigError: the file is missing or unreadable, names a field that does not exist, or holds
        a value of the wrong type.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read ({err})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    return replace_checked(base or Config(), values, source=f"config file {path}")


def replace_checked(config: Config, values: dict, source: str = "overrides") -> Config:
    """Returns `config` with `values` ({field: value}) replaced, typed and checked as command-line flags are.

    Raises:
      ConfigError: an unknown field (with the closest name), or a value tyro refuses for its type.
    """
    for key in values:
        if key not in FIELD_NAMES:
            close = difflib.get_close_matches(key, FIELD_NAMES, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{source}: unknown config field '{key}'{hint}")
    try:
        args = as_arguments(values)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return override(config, args, source=source)


def as_arguments(values: dict) -> list[str]:
    """Returns the command-line arguments that set `values` ({field: TOML value})."""
    args = []
    flags = {f.name for f in dataclasses.fields(Config) if isinstance(f.default, bool)}  # no value on the CLI
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if key in flags and not isinstance(value, bool):
            raise ConfigError(f"field '{key}' = {value!r} has the wrong type: write true or false")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif isinstance(value, list):
            args += [flag, *(str(v) for v in value)]
        elif isinstance(value, dict):
            raise ConfigError(f"field '{key}' = {value!r}: a TOML table is not a config value")
        else:
            args += [flag, str(value)]
    return args


def override(config: Config, args: Sequence[str], source: str = "command line", prog: str | None = None,
             description: str | None = None) -> Config:
    """Returns `config` with command-line `args` (`--seed=3 --hidden-sizes 64 64`) applied by tyro.

    `--help` prints the help (every field, its unit and its value in `config`) and exits.

    Raises:
      ConfigError: tyro refused an argument; its message, in one line.
    """
    import tyro

    kwargs = dict(default=config, args=list(args), prog=prog, description=description)
    if "-h" in args or "--help" in args:
        return tyro.cli(Config, **kwargs)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            return tyro.cli(Config, **kwargs)
    except SystemExit:
        message = _tyro_message(captured.getvalue())
        raise ConfigError(f"{source}: {_as_given(message, args, toml=source.startswith('config file'))}") from None


def flag_names() -> list[str]:
    """Returns every config flag as the command line spells it (`--learning-rate`, `--no-progress`, ...)."""
    names = []
    for field in dataclasses.fields(Config):
        flag = field.name.replace("_", "-")
        names += [f"--{flag}", f"--no-{flag}"] if isinstance(field.default, bool) else [f"--{flag}"]
    return names


def _as_given(message: str, args: Sequence[str], toml: bool) -> str:
    """Returns tyro's message with its option named as the user wrote it (`--learning_rate` or the
    TOML key `learning_rate`, not tyro's `--learning-rate`), and a "did you mean" for unknown flags."""
    match = re.match(r"Unrecognized options?: (\S+)", message)
    if match:
        unknown = match.group(1).split("=")[0]
        close = difflib.get_close_matches(unknown.replace("_", "-"), flag_names() + ["--config", "--resume"], n=1)
        return f"unknown option {unknown}" + (f"; did you mean {close[0]}?" if close else " (--help lists them)")
    match = re.match(r"Error parsing (--[\w-]+)", message)
    if match:
        canonical = match.group(1)
        given = next((a.split("=")[0] for a in args if a.split("=")[0].replace("_", "-") == canonical), canonical)
        return message.replace(canonical, canonical[2:].replace("-", "_") if toml else given, 1)
    return message


def _tyro_message(text: str) -> str:
    """Returns the line that says what is wrong from tyro's boxed error output."""
    lines = [line.strip(" │╭╮╰╯─-") for line in text.splitlines()]
    lines = [line for line in lines if line]
    # The box: a title line, a rule, then the message.
    useful = [line for line in lines[1:] if not line.startswith(("For full helptext", "Argument helptext"))]
    return useful[0] if useful else (lines[0] if lines else "invalid arguments")


def to_toml(config: Config) -> str:
    """Returns the config as TOML text (every field, tuples as arrays)."""
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}
    return tomli_w.dumps(values)
