"""The run configuration: one frozen, typed dataclass, TOML presets, and validation.

A run is configured in three layers: the dataclass defaults below, the game's preset in
`configs/` (`cartpole.toml`, `pong.toml`, … or `atari.toml` for any other Atari game), and the
command line. Units are part of every help string: "env steps" count the transitions collected by
one agent summed over its environments; "updates" count gradient steps of one agent.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import types
import typing
from pathlib import Path
from typing import Literal

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A configuration value is invalid; the message is one line naming field, value and fix."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a DQN run. Derived values are properties, never stored."""

    # --- what to train ---------------------------------------------------------------------
    game: str = "CartPole"
    """Game: `CartPole` or any EnvPool Atari game (`Pong`, `Breakout`, `MsPacman`, ...)."""
    seed: int = 0
    """Run seed; every random number of the run (networks, exploration, environments) derives from it."""
    num_seeds: int = 1
    """Independent agents trained together in one program, with seeds `seed`, `seed+1`, ... (count)."""
    total_steps: int = 100_000
    """Length of the run (env steps per agent)."""

    # --- environments ----------------------------------------------------------------------
    num_envs: int = 8
    """Training environments per agent (count)."""
    env_threads: int = 0
    """EnvPool worker threads (count; 0 = one per CPU core, at most one per environment)."""
    episodic_life: bool = True
    """Atari: a lost life ends the episode for the TD target (not for stacking or reported returns)."""
    reward_clip: bool = True
    """Atari: clip training rewards to their sign (+1, 0, -1). Reported returns are always raw."""
    repeat_action_probability: float = 0.0
    """Atari: sticky actions (probability); Machado et al. 2018 use 0.25."""
    full_action_space: bool = False
    """Atari: use all 18 actions instead of the game's minimal set."""
    noop_max: int = 30
    """Atari: at most this many no-op actions at the start of every game (frames / frame skip; >= 1)."""
    max_episode_steps: int = 27_000
    """Atari: episode cap (env steps; 27,000 = 108,000 frames). CartPole always stops at 500."""

    # --- network ---------------------------------------------------------------------------
    torso: Literal["mlp", "nature_cnn"] = "mlp"
    """Feature extractor: `mlp` for vector observations, `nature_cnn` for 84x84 Atari frames."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """MLP torso: width of each hidden layer (units)."""
    activation: Literal["relu", "leaky_relu"] = "relu"
    """Hidden-layer activation. The Q head is always linear."""
    normalization: Literal["none", "layer_norm"] = "none"
    """Normalisation after each hidden layer, before its activation."""
    initializer: Literal["lecun_normal", "orthogonal"] = "lecun_normal"
    """Weight initializer of every layer."""
    init_gain: float = math.sqrt(2.0)
    """Orthogonal initializer: gain of the hidden layers (the Q head uses gain 1)."""
    dueling: bool = False
    """Dueling head: Q = V + A - mean(A)."""

    # --- learning --------------------------------------------------------------------------
    gamma: float = 0.99
    """Discount per env step."""
    n_step: int = 1
    """Rewards summed (discounted) before bootstrapping, fewer at an episode's end (env steps; 1 = one-step DQN)."""
    loss: Literal["huber", "mse"] = "huber"
    """TD loss: Huber (Nature's error clipping, delta 1) or mean squared error."""
    double_dqn: bool = False
    """Double DQN target: the online network picks the next action, the target network scores it."""
    batch_size: int = 128
    """Transitions per update (count)."""
    learning_rate: float = 2.5e-4
    """Adam learning rate at the first update."""
    learning_rate_end: float = 2.5e-4
    """Adam learning rate at the end of the decay (linear decay; equal to the start = constant)."""
    learning_rate_decay_start: int = 0
    """The learning rate stays at `learning_rate` until this env step, then decays (env steps)."""
    learning_rate_decay_steps: int = 100_000
    """Length of the learning-rate decay (env steps)."""
    adam_eps: float = 1e-8
    """Adam epsilon (numerical floor of the second-moment denominator)."""
    max_grad_norm: float = 0.0
    """Clip the global gradient norm to this value (0 = no clipping)."""
    train_every: int = 4
    """One update for every this many env steps (env steps per update)."""
    target_update_every: int = 250
    """Copy the online parameters into the target network every this many updates (updates)."""
    reward_scale: float = 1.0
    """Multiply the (clipped) reward by this before it is stored in replay (factor)."""
    target_update_tau: float = 1.0
    """At each target update, target <- tau * online + (1 - tau) * target (fraction; 1 = hard copy)."""
    learning_starts: int = 10_000
    """No updates before this many env steps have been collected (env steps)."""
    replay_capacity: int = 100_000
    """Replay size (transitions per agent, all environments together)."""

    # --- exploration -----------------------------------------------------------------------
    epsilon_start: float = 1.0
    """Exploration rate at env step 0 (probability)."""
    epsilon_end: float = 0.05
    """Exploration rate after `epsilon_decay_steps` (probability)."""
    epsilon_decay_steps: int = 50_000
    """Length of the linear exploration decay (env steps)."""

    # --- evaluation, logging, run directory ------------------------------------------------
    eval_every: int = 10_000
    """Evaluate the greedy-ish policy every this many env steps (env steps)."""
    eval_episodes: int = 10
    """Episodes per evaluation, one per evaluation environment (count)."""
    eval_epsilon: float = 0.05
    """Exploration rate during evaluation (probability)."""
    eval_return_window: int = 50
    """`eval_return_mean50`: rolling mean over this many of the latest evaluation episodes (count)."""
    record_video: bool = False
    """Write a video of one evaluation episode at each new best evaluation (needs imageio)."""
    chunk_steps: int = 1_000
    """Env steps per compiled training call; metrics are logged once per call (env steps)."""
    loop: Literal["fused", "host"] = "fused"
    """`fused`: env stepping, replay and learning in one compiled scan (EnvPool XLA interface).
    `host`: EnvPool stepped from Python around jitted act and learn functions."""
    run_dir: str = ""
    """Run directory (default: `runs/<game>-s<seed>-<timestamp>`)."""
    checkpoint_every: int = 250_000
    """Save the whole agent state (replay included) every this many env steps; a checkpoint is
    also saved at the end and on SIGINT/SIGTERM (env steps; 0 = only those)."""
    keep_checkpoints: int = 2
    """How many of the newest state checkpoints to keep (count)."""
    health_every: int = 10
    """Measure the health statistics (dead units, gradient norms, ...) every this many updates (updates)."""
    fingerprint_every: int = 500
    """Write a hash of the online params and of the sampled batch every this many updates (updates)."""
    progress: bool = True
    """Show a progress bar on the console."""
    halt_on: Literal["never", "error"] = "never"
    """`error`: stop the run (checkpoint and metrics saved) at the first error-level health finding.
    A non-finite loss always stops the run."""

    # ---------------------------------------------------------------------------------------
    @property
    def is_atari(self) -> bool:
        """True when `game` is not CartPole (validation has checked that it is an Atari game)."""
        return self.game != "CartPole"

    @property
    def frame_stack(self) -> int:
        """Frames per observation (count): 4 for Atari, 1 (the raw vector) for CartPole."""
        return 4 if self.is_atari else 1

    @property
    def frame_skip(self) -> int:
        """Emulator frames per env step (frames): 4 for Atari, 1 for CartPole."""
        return 4 if self.is_atari else 1

    @property
    def replay_steps(self) -> int:
        """Replay ring length (time slots; each slot holds one step of every environment)."""
        return self.replay_capacity // self.num_envs

    @property
    def vector_steps_per_update(self) -> int:
        """Vectorised env steps between two rounds of updates (count, >= 1)."""
        return max(1, self.train_every // self.num_envs)

    @property
    def updates_per_vector_step(self) -> int:
        """Updates in each round of updates (count, >= 1)."""
        return max(1, self.num_envs // self.train_every)


# --- TOML presets --------------------------------------------------------------------------

FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Config))


def preset_path(game: str) -> Path:
    """Returns the preset file for `game`: `configs/<game>.toml`, else `configs/atari.toml`."""
    specific = CONFIGS_DIR / f"{game.lower()}.toml"
    if specific.exists():
        return specific
    return CONFIGS_DIR / ("cartpole.toml" if game == "CartPole" else "atari.toml")


def preset(game: str) -> Config:
    """Returns the preset config of a canonical game name, with `game` set."""
    return dataclasses.replace(load_toml(preset_path(game)), game=game)


def load_toml(path: Path | str, base: Config | None = None) -> Config:
    """Returns `base` (default: the dataclass defaults) overridden by the values in a TOML file.

    Raises:
      ConfigError: the file is missing or unreadable, or names a field that does not exist.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    return replace_checked(base or Config(), values, source=str(path))


def replace_checked(config: Config, values: dict, source: str = "overrides") -> Config:
    """Returns `config` with `values` replaced, refusing unknown keys and values of the wrong type."""
    hints = typing.get_type_hints(Config)
    converted = {}
    for key, value in values.items():
        if key not in FIELD_NAMES:
            close = difflib.get_close_matches(key, FIELD_NAMES, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{source}: unknown config field '{key}'{hint}")
        converted[key] = _coerce(key, value, hints[key], source)
    return dataclasses.replace(config, **converted)


def _coerce(key: str, value, annotation, source: str):
    """Checks one TOML value against the field's type; TOML arrays become tuples."""
    origin = typing.get_origin(annotation)
    wrong = ConfigError(f"{source}: field '{key}' = {value!r} has the wrong type (expected {annotation})")
    if origin is Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(
                f"{source}: field '{key}' = {value!r} is not one of {list(typing.get_args(annotation))}"
            )
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            raise wrong
        return tuple(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise wrong
        return value
    if isinstance(annotation, types.UnionType):  # pragma: no cover - no such field today
        return value
    raise wrong


def to_toml(config: Config) -> str:
    """Returns the config as TOML text (every field, tuples as arrays)."""
    values = {
        k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()
    }
    return tomli_w.dumps(values)


# --- validation ----------------------------------------------------------------------------


def validate(config: Config) -> Config:
    """Checks every value and the relations between them; returns the config with `game` canonical.

    Raises:
      ConfigError: one line naming the field, the value and what is allowed.
    """
    from dqn_jax import envs  # local import: envpool is only needed once a game is named

    config = dataclasses.replace(config, game=envs.canonical_game(config.game))
    c = config

    def fail(field: str, allowed: str):
        raise ConfigError(f"{field} = {getattr(c, field)!r} is invalid: {allowed}")

    positive_ints = (
        "num_seeds total_steps num_envs batch_size train_every target_update_every "
        "replay_capacity eval_every eval_episodes eval_return_window chunk_steps keep_checkpoints "
        "fingerprint_every health_every n_step"
    ).split()
    for name in positive_ints:
        if getattr(c, name) < 1:
            fail(name, "must be a positive integer")
    for name in ("learning_starts", "epsilon_decay_steps", "learning_rate_decay_start", "learning_rate_decay_steps",
                 "env_threads", "checkpoint_every"):
        if getattr(c, name) < 0:
            fail(name, "must be >= 0")
    for name in ("learning_rate", "adam_eps"):
        if not getattr(c, name) > 0:
            fail(name, "must be > 0")
    if not c.learning_rate_end >= 0:
        fail("learning_rate_end", "must be >= 0 (0 anneals the learning rate to zero)")
    if c.max_grad_norm < 0:
        fail("max_grad_norm", "must be >= 0 (0 turns clipping off)")
    if not 0.0 <= c.gamma <= 1.0:
        fail("gamma", "must be in [0, 1]")
    if not math.isfinite(c.reward_scale):
        fail("reward_scale", "must be a finite number")
    if not 0.0 < c.target_update_tau <= 1.0:
        fail("target_update_tau", "must be in (0, 1] (1 copies the online network)")
    for name in ("epsilon_start", "epsilon_end", "eval_epsilon", "repeat_action_probability"):
        if not 0.0 <= getattr(c, name) <= 1.0:
            fail(name, "must be a probability in [0, 1]")
    if c.init_gain <= 0:
        fail("init_gain", "must be > 0")
    if not c.hidden_sizes or min(c.hidden_sizes) < 1:
        fail("hidden_sizes", "must list at least one positive layer width")
    if c.noop_max < 1:
        fail("noop_max", "must be >= 1 (EnvPool crashes on reset with 0 no-ops)")
    if c.max_episode_steps < 1:
        fail("max_episode_steps", "must be a positive integer")
    if c.num_envs % c.train_every and c.train_every % c.num_envs:
        fail("train_every", f"must divide num_envs ({c.num_envs}) or be a multiple of it")
    if c.chunk_steps % c.num_envs:
        fail("chunk_steps", f"must be a multiple of num_envs ({c.num_envs})")
    if c.replay_steps < c.frame_stack + c.n_step + 1:
        fail("replay_capacity",
             f"must hold at least {c.frame_stack + c.n_step + 1} steps of each of the {c.num_envs} envs")
    if c.batch_size > c.replay_capacity:
        fail("batch_size", f"must not exceed replay_capacity ({c.replay_capacity})")
    if c.learning_starts < c.batch_size:
        fail("learning_starts", f"must be at least batch_size ({c.batch_size}) so a first batch exists")
    if c.learning_starts > c.replay_capacity:
        fail("learning_starts", f"must not exceed replay_capacity ({c.replay_capacity})")
    if c.is_atari and c.torso != "nature_cnn":
        fail("torso", "Atari frames need torso = 'nature_cnn'")
    if not c.is_atari and c.torso != "mlp":
        fail("torso", "CartPole observations are vectors: use torso = 'mlp'")
    return config
