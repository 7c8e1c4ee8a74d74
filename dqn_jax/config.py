"""The run configuration: one frozen, typed dataclass whose defaults are the Nature-Atari settings.

A run is configured in layers: the dataclass defaults below (the only place the Nature settings
are written), the game's overlays (`configs/*.toml`, chosen in `run/presets.py`), the
user's `--config` overlay, then the command line. `validate` checks a finished config and is
kept apart from construction. Units are part of every help string: "env steps" count the
transitions collected by one agent summed over its environments; "updates" count gradient steps
of one agent.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from dqn_jax import games
from dqn_jax.errors import ConfigError

__all__ = ["Config", "ConfigError", "FIELD_NAMES", "validate"]


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a DQN run. Derived values are properties, never stored.

    The defaults are the Nature DQN protocol (Mnih et al. 2015, as DeepMind's released code and DQN
    Zoo run it) for any Atari game, stated here once; a game's preset layers its overlays on them
    (`presets.preset`). Every departure (Adam instead of RMSProp, 8 environments stepped together,
    whole evaluation games of up to 30 minutes, ...) is listed with its source in docs/DESIGN.md,
    "The Atari protocol", and said beside its field.
    """

    # --- what to train ---------------------------------------------------------------------
    game: str = "Pong"
    """Game: `CartPole` or any EnvPool Atari game (`Pong`, `Breakout`, `MsPacman`, ...)."""
    seed: int = 0
    """Run seed; every random number of the run (networks, exploration, environments) derives from it."""
    num_seeds: int = 1
    """Independent agents trained together in one program, with seeds `seed`, `seed+1`, ... (count)."""
    total_steps: int = 10_000_000
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
    fire_reset: bool = False
    """Atari: press FIRE after every reset, lost lives included (EnvPool's `use_fire_reset`, on in
    EnvPool unless set; off here, as in DQN Zoo's and Dopamine's Atari wrappers). Given to the
    training and the evaluation pool alike, so evaluation games start as training games do."""

    # --- network ---------------------------------------------------------------------------
    torso: Literal["mlp", "nature_cnn", "nips_cnn"] = "nature_cnn"
    """Feature extractor: `mlp` for vector observations; for 84x84 Atari frames `nature_cnn` (Mnih
    et al. 2015) or `nips_cnn` (Mnih et al. 2013: two convolutions and 256 units, ~1.6x cheaper
    to update on a CPU)."""
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
    bootstrap_epsilon: float = 0.0
    """The bootstrap values the ε-greedy policy at this ε: (1 - ε) Q(s', a*) + ε mean_a Q(s', a),
    Expected SARSA's target (van Seijen et al. 2009), so the greedy policy is the best one under an
    evaluation's random actions (0 = the greedy policy's Q(s', a*), as DQN; a probability)."""
    batch_size: int = 32
    """Transitions per update (count)."""
    learning_rate: float = 1e-4
    """Adam learning rate at the first update (Nature, DQN Zoo's DQN and Dopamine's TensorFlow DQN use
    RMSProp at 2.5e-4; Adam at 1e-4 as CleanRL's dqn_atari_jax; Dopamine's JAX DQN: Adam at 6.25e-5)."""
    learning_rate_end: float = 1e-4
    """Adam learning rate at the end of the decay (linear decay; equal to the start = constant)."""
    learning_rate_decay_start: int = 0
    """The learning rate stays at `learning_rate` until this env step, then decays (env steps)."""
    learning_rate_decay_steps: int = 10_000_000
    """Length of the learning-rate decay (env steps)."""
    adam_eps: float = 1.5e-4
    """Adam epsilon (numerical floor of the second-moment denominator; 1.5e-4 as Dopamine's JAX DQN and
    Rainbow, Hessel et al. 2018)."""
    max_grad_norm: float = 0.0
    """Clip the global gradient norm to this value (0 = no clipping)."""
    train_every: int = 4
    """One update for every this many env steps (env steps per update)."""
    train_every_late: int = 0
    """From env step `train_every_late_start` on, one update for every this many env steps instead of
    `train_every`: fewer updates (and more env steps per minute) once the policy plays well, or more
    (env steps per update; 0 = `train_every` throughout; with it, both must be multiples of num_envs)."""
    train_every_late_start: int = 0
    """The env step from which `train_every_late` applies (env steps)."""
    target_update_every: int = 2_500
    """Copy the online parameters into the target network every this many updates (updates)."""
    reward_scale: float = 1.0
    """Multiply the (clipped) reward by this before it is stored in replay (factor)."""
    target_update_tau: float = 1.0
    """At each target update, target <- tau * online + (1 - tau) * target (fraction; 1 = hard copy)."""
    learning_starts: int = 50_000
    """No updates before this many env steps have been collected (env steps)."""
    redo_every: int = 0
    """ReDo (Sokar et al. 2023): every this many updates, recycle the online network's τ-dormant
    neurons — fresh incoming weights, zero outgoing weights, Adam moments reset (updates; 0 = never)."""
    redo_tau: float = 0.025
    """ReDo: a neuron is dormant when E|h_i| / mean_k E|h_k| over the batch is at most this (score)."""
    replay_capacity: int = 1_000_000
    """Replay size (transitions per agent, all environments together)."""
    prioritized_replay: bool = False
    """Prioritized experience replay, proportional variant (Schaul et al. 2016): draw transitions in
    proportion to (|TD error| + priority_epsilon) ** priority_exponent and weight the loss by importance
    weights (off: uniform, as the Nature DQN)."""
    priority_exponent: float = 0.6
    """Prioritized replay's α (0 = uniform; 0.6 as Schaul et al. 2016 for proportional replay on Atari and
    DQN Zoo's prioritized agent; Dopamine uses 0.5)."""
    priority_epsilon: float = 1e-6
    """Added to |TD error| before the exponent, so that a transition learned perfectly can still be drawn."""
    importance_exponent_start: float = 0.4
    """Prioritized replay's β when learning starts, annealed linearly to `importance_exponent_end` at
    `total_steps` (0.4 → 1 as Schaul et al. 2016 and DQN Zoo; Dopamine keeps 0.5)."""
    importance_exponent_end: float = 1.0
    """Prioritized replay's β at the end of training (1 corrects the sampling bias fully)."""

    # --- exploration -----------------------------------------------------------------------
    epsilon_start: float = 1.0
    """Exploration rate at env step 0 (probability)."""
    epsilon_end: float = 0.1
    """Exploration rate after `epsilon_decay_steps` (probability)."""
    epsilon_decay_steps: int = 1_000_000
    """Length of the linear exploration decay (env steps; 1,000,000 = 4M frames, as DeepMind's
    released DQN code, `eps_endt` = 1M agent steps, and DQN Zoo, 2% of 200M frames; Dopamine:
    250,000). It starts at `learning_starts` with `epsilon_hold_until_learning`, else at step 0."""
    epsilon_hold_until_learning: bool = True
    """Hold ε at `epsilon_start` until `learning_starts`, then decay (as DeepMind's released code, DQN
    Zoo and Dopamine do); off: the decay counts from env step 0."""

    # --- evaluation, logging, run directory ------------------------------------------------
    eval_every: int = 250_000
    """Evaluate the greedy-ish policy every this many env steps (env steps; 250,000 = 1M frames, the
    iteration of DQN Zoo and Dopamine, which then play 125,000 env steps of evaluation)."""
    eval_episodes: int = 8
    """Episodes per evaluation, one per evaluation environment (count)."""
    eval_epsilon: float = 0.05
    """Exploration rate during evaluation (probability)."""
    eval_average_updates: int = 0
    """Evaluations play a running average of the online params instead of the params themselves: the
    mean of every update's params for the first H updates, then an exponential moving average of
    horizon H (each update's params weighted 1/H), as stochastic weight averaging (Izmailov et al.
    2018) and Polyak averaging do. Acting, the TD targets and the target network never read it; the
    best params saved and scored are averaged ones (updates; 0 = evaluate the online params)."""
    eval_max_episode_steps: int = 27_000
    """Atari evaluation games are cut (counted in `eval_truncated`) after this many env steps:
    27,000 = 108,000 frames = 30 minutes of play, as in training; Nature's evaluation stopped at
    5 minutes = 18,000 frames = 4,500 env steps (env steps)."""
    final_eval_episodes: int = 30
    """At the end of a run, each agent's best params play this many fresh games; the summary's
    `best_params_return` is their mean (`max_eval_return`, the best evaluation itself, is a maximum
    of noisy means and biased upward) (count; 0 = skip)."""
    eval_return_window: int = 50
    """`eval_return_mean50`: rolling mean over this many of the latest evaluation episodes (count)."""
    record_video: bool = False
    """Write a video of one evaluation episode at each new best evaluation (needs imageio)."""
    chunk_steps: int = 1_000
    """Env steps per compiled training call; metrics are logged once per call. A call also ends at
    every evaluation and checkpoint; each other length it then has is compiled once more, so keep
    `eval_every` and `checkpoint_every` multiples of it (env steps)."""
    loop: Literal["fused", "host"] = "fused"
    """`fused`: env stepping, replay and learning in one compiled scan (EnvPool XLA interface).
    `host`: EnvPool stepped from Python around jitted act and learn functions."""
    overlap_learning: bool = False
    """Run each vector step's updates while EnvPool steps the envs (fused loop: EnvPool's send, the
    updates, then its receive) instead of after the step. The updates then sample the replay as it
    was before this vector step (its transitions are written once the step returns), so the
    numbers differ from the default's; `--loop=host` runs the same order, without the overlap.
    Faster where the envs and the learner run on different hardware (CPU cores and a GPU)."""
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
    target_return: float = math.inf
    """Stop once every agent's evaluation return (the mean over one evaluation's episodes) has
    reached this; the summary records the env steps and wall-clock seconds at which each agent
    first reached it (return; inf = train to `total_steps`)."""
    time_limit_minutes: float = 0.0
    """Stop before this much wall-clock time has passed, saving a checkpoint first, as SIGTERM
    would; resume with `--resume=RUN_DIR` (minutes, counted from the start of this process; 0 = none)."""
    halt_on: Literal["never", "error"] = "never"
    """`error`: stop the run (checkpoint and metrics saved) at the first error-level health finding.
    A non-finite loss always stops the run."""

    # ---------------------------------------------------------------------------------------
    @property
    def is_atari(self) -> bool:
        """True when `game` is not CartPole (validation has checked that it is an Atari game)."""
        return games.is_atari(self.game)

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

    @property
    def vector_steps_per_update_late(self) -> int:
        """Vectorised env steps between two updates from `train_every_late_start` on (count, >= 1)."""
        return max(1, (self.train_every_late or self.train_every) // self.num_envs)


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Config))

# --- validation ----------------------------------------------------------------------------

_POSITIVE = (
    "num_seeds total_steps num_envs batch_size train_every target_update_every replay_capacity eval_every "
    "eval_episodes eval_max_episode_steps eval_return_window chunk_steps keep_checkpoints fingerprint_every "
    "health_every n_step max_episode_steps"
).split()
_NON_NEGATIVE = ("final_eval_episodes learning_starts epsilon_decay_steps learning_rate_decay_start "
                 "learning_rate_decay_steps env_threads checkpoint_every redo_every train_every_late "
                 "train_every_late_start eval_average_updates").split()
_PROBABILITIES = ("epsilon_start", "epsilon_end", "eval_epsilon", "repeat_action_probability", "bootstrap_epsilon")
INT32_MAX = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38
MAX_SEED = INT32_MAX  # agents' seeds are seed ... seed + num_seeds - 1, each a 32-bit PRNG seed
MAX_N_STEP = 64  # the n-step return unrolls one replay gather per step into the compiled update
MAX_LAYER_WIDTH = 65_536
CNN_TORSOS = ("nature_cnn", "nips_cnn")  # the torsos for Atari frames (networks.CNN_LAYERS)
MAX_ENVS = 16_384  # EnvPool environments in one pool (training: num_seeds x num_envs)


def _fail(config: Config, field: str, allowed: str):
    raise ConfigError(f"{field} = {getattr(config, field)!r} is invalid: {allowed}")


def _check_ranges(c: Config) -> None:
    """Each field on its own: signs, probabilities, finite numbers."""
    for name in _POSITIVE:
        if getattr(c, name) < 1:
            _fail(c, name, "must be a positive integer")
    for name in _NON_NEGATIVE:
        if getattr(c, name) < 0:
            _fail(c, name, "must be >= 0")
    for name in ("learning_rate", "adam_eps", "init_gain"):
        if not getattr(c, name) > 0:
            _fail(c, name, "must be > 0")
    if not c.learning_rate_end >= 0:
        _fail(c, "learning_rate_end", "must be >= 0 (0 anneals the learning rate to zero)")
    if not c.max_grad_norm >= 0:
        _fail(c, "max_grad_norm", "must be >= 0 (0 turns clipping off)")
    if not 0.0 <= c.gamma <= 1.0:
        _fail(c, "gamma", "must be in [0, 1]")
    if not 0.0 <= c.redo_tau < 1.0:
        _fail(c, "redo_tau", "must be in [0, 1): a dormancy score (1 is the layer's average neuron)")
    if not 0.0 <= c.priority_exponent <= 10.0:
        _fail(c, "priority_exponent", "must be in [0, 10] (0 samples uniformly; 0.5 to 0.6 are the published values)")
    if not 0.0 < c.priority_epsilon <= 1.0:
        _fail(c, "priority_epsilon", "must be in (0, 1]: a small floor under |TD error| (1e-6 by default)")
    for name in ("importance_exponent_start", "importance_exponent_end"):
        if not 0.0 <= getattr(c, name) <= 1.0:
            _fail(c, name, "must be in [0, 1] (0: no importance correction, 1: the sampling bias corrected fully)")
    if not math.isfinite(c.reward_scale):
        _fail(c, "reward_scale", "must be a finite number")
    if not 0.0 < c.target_update_tau <= 1.0:
        _fail(c, "target_update_tau", "must be in (0, 1] (1 copies the online network)")
    for name in _PROBABILITIES:
        if not 0.0 <= getattr(c, name) <= 1.0:
            _fail(c, name, "must be a probability in [0, 1]")
    if not c.hidden_sizes or min(c.hidden_sizes) < 1:
        _fail(c, "hidden_sizes", "must list at least one positive layer width")
    for field in dataclasses.fields(c):
        value = getattr(c, field.name)
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and field.name != "target_return" and not abs(value) <= FLOAT32_MAX:
            _fail(c, field.name, "must be a finite number (within float32's range)")
        if isinstance(value, int) and value > INT32_MAX:
            _fail(c, field.name, f"must be at most {INT32_MAX:,} (counters in the compiled loop are 32-bit)")
    if math.isnan(c.target_return):
        _fail(c, "target_return", "must be a number (inf: no target)")
    if not (math.isfinite(c.time_limit_minutes) and c.time_limit_minutes >= 0):
        _fail(c, "time_limit_minutes", "must be a finite number >= 0 (0: no limit)")
    if not 0 <= c.seed <= MAX_SEED - c.num_seeds + 1:
        _fail(c, "seed", f"must be in [0, {MAX_SEED - c.num_seeds + 1:,}]: the agents' seeds are seed … "
                         "seed + num_seeds - 1, each a non-negative 32-bit integer")
    if c.n_step > MAX_N_STEP:
        _fail(c, "n_step", f"must be at most {MAX_N_STEP}: each step of the return is unrolled into the "
                           "compiled update (1 to 10 is usual)")
    if c.hidden_sizes and max(c.hidden_sizes) > MAX_LAYER_WIDTH:
        _fail(c, "hidden_sizes", f"layers wider than {MAX_LAYER_WIDTH:,} units are refused (a typo?)")
    for name, per_agent in (("num_envs", c.num_envs), ("eval_episodes", c.eval_episodes),
                            ("final_eval_episodes", c.final_eval_episodes)):
        if c.num_seeds * per_agent > MAX_ENVS:
            _fail(c, name, f"× num_seeds ({c.num_seeds}) = {c.num_seeds * per_agent:,} environments in one pool, "
                           f"over the limit of {MAX_ENVS:,}; train fewer seeds per program")
    if c.noop_max < 1:
        _fail(c, "noop_max", "must be >= 1 (EnvPool crashes on reset with 0 no-ops)")


def _check_relations(c: Config) -> None:
    """Fields against each other: the loop's cadence, the replay's size, the network for the game."""
    if c.num_envs % c.train_every and c.train_every % c.num_envs:
        _fail(c, "train_every", f"must divide num_envs ({c.num_envs}) or be a multiple of it")
    if c.train_every_late_start and not c.train_every_late:
        _fail(c, "train_every_late_start", "has no effect without train_every_late: set --train-every-late too")
    if c.train_every_late:
        # The loop's cadence changes in the program (which vector steps learn), not its shape (how
        # many updates a learning step makes): both cadences must be one update per so many vector steps.
        for name in ("train_every", "train_every_late"):
            if getattr(c, name) % c.num_envs:
                _fail(c, name, f"must be a multiple of num_envs ({c.num_envs}) when train_every_late is set "
                               "(one update per learning vector step in both phases)")
    if c.chunk_steps % c.num_envs:
        _fail(c, "chunk_steps", f"must be a multiple of num_envs ({c.num_envs})")
    if c.replay_steps < c.frame_stack + c.n_step + 1:
        _fail(c, "replay_capacity",
              f"must hold at least {c.frame_stack + c.n_step + 1} steps of each of the {c.num_envs} envs")
    if c.batch_size > c.replay_capacity:
        _fail(c, "batch_size", f"must not exceed replay_capacity ({c.replay_capacity})")
    if c.learning_starts < c.batch_size:
        _fail(c, "learning_starts", f"must be at least batch_size ({c.batch_size}) so a first batch exists")
    first_sample = (c.frame_stack + c.n_step + 1) * c.num_envs
    if c.learning_starts < first_sample:
        _fail(c, "learning_starts", f"must be at least {first_sample:,} = (frame_stack {c.frame_stack} + n_step "
                                    f"{c.n_step} + 1) × num_envs {c.num_envs}: before that no env has a whole "
                                    "stack and its next n_step steps stored, and updates would sample empty slots")
    if c.learning_starts > c.replay_capacity:
        _fail(c, "learning_starts", f"must not exceed replay_capacity ({c.replay_capacity})")
    if c.is_atari and c.torso not in CNN_TORSOS:
        _fail(c, "torso", f"Atari frames need a convolutional torso: one of {', '.join(CNN_TORSOS)}")
    if not c.is_atari and c.torso != "mlp":
        _fail(c, "torso", "CartPole observations are vectors: use torso = 'mlp'")


def validate(config: Config) -> Config:
    """Checks every value and the relations between them; returns the config with `game` canonical.

    Raises:
      ConfigError: one line naming the field, the value and what is allowed.
    """
    config = dataclasses.replace(config, game=games.canonical_game(config.game))
    _check_ranges(config)
    _check_relations(config)
    return config
