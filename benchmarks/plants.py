"""Planted failures: each health rule's failure, made for real through a network, an optimizer or a
config, for `tests/integration/test_health.py` and `benchmarks/health_detection.py`.

Each `Plant` builds, from a small CartPole (or Atari) config, the run that shows one failure, and
names the rule that must fire. Nothing here is used by training itself.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dqn_jax.agent.learner import make_optimizer
from dqn_jax.agent.networks import PatchConv, QNetwork, make_network
from dqn_jax.config import Config, validate
from dqn_jax.run import presets


class ReluAfterHead(nn.Module):
    """The config's Q-network with the classic bug, a ReLU on its outputs."""

    inner: nn.Module

    @nn.compact
    def __call__(self, obs):
        return nn.relu(self.inner(obs))


class NaNNearTheEdge(nn.Module):
    """Q values become NaN for observations with the cart far from the centre."""

    inner: nn.Module

    @nn.compact
    def __call__(self, obs):
        q = self.inner(obs)
        return jnp.where(jnp.abs(obs[:, :1]) > 0.5, jnp.nan, q)


class NoGradient(nn.Module):
    """Q values that no gradient flows back from (a `stop_gradient` left in the forward pass)."""

    inner: nn.Module

    @nn.compact
    def __call__(self, obs):
        return jax.lax.stop_gradient(self.inner(obs))


class CollapsedMLPTorso(nn.Module):
    """The project's MLP torso (same names, same sown activations) with one layer collapsed from
    the start — its biases at -10, so its ReLUs output 0 for every input and get no gradient: a
    dead layer that only recycling (ReDo) can bring back."""

    hidden_sizes: tuple[int, ...]
    collapsed: int = 1

    @nn.compact
    def __call__(self, obs):
        x = obs.astype(jnp.float32).reshape(obs.shape[0], -1)
        for i, width in enumerate(self.hidden_sizes):
            bias_init = nn.initializers.constant(-10.0) if i == self.collapsed else nn.initializers.zeros
            x = nn.relu(nn.Dense(width, bias_init=bias_init, name=f"Dense_{i}")(x))
            self.sow("intermediates", f"dense_{i}", x)
        return x


class CollapsedNatureCNNTorso(nn.Module):
    """The project's Nature CNN (PatchConv layers, same names, same sown activations) with one conv
    layer collapsed from the start — its biases at -10, so every feature map outputs 0: the
    collapse of a conv layer on Atari, named `dead_layer` on that layer."""

    collapsed: int = 1

    @nn.compact
    def __call__(self, obs):
        x = jnp.transpose(obs.astype(jnp.float32) / 255.0, (0, 2, 3, 1))
        for i, (features, kernel, stride) in enumerate(((32, 8, 4), (64, 4, 2), (64, 3, 1))):
            x = PatchConv(features, kernel, stride, name=f"Conv_{i}")(x)
            if i == self.collapsed:
                x = x + self.param("collapse", nn.initializers.constant(-10.0), (features,)).reshape(1, 1, 1, -1)
            x = nn.relu(x)
            self.sow("intermediates", f"conv_{i}", x)
        x = nn.relu(nn.Dense(512, name="Dense_0")(x.reshape(x.shape[0], -1)))
        self.sow("intermediates", "dense_0", x)
        return x


def reinitialised_every_update(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """An optimizer whose state is thrown away and re-created at every update."""

    def update(grads, state, params=None):
        return inner.update(grads, inner.init(params), params)

    return optax.GradientTransformation(inner.init, update)


def nudging(inner: optax.GradientTransformation, path: tuple[str, ...], step: float) -> optax.GradientTransformation:
    """The optimizer `inner`, plus `step` added at every update to the params whose path ends with
    `path` (e.g. ("q_head", "bias"): Q values that drift up whatever the TD error says)."""

    def update(grads, state, params=None):
        updates, state = inner.update(grads, state, params)

        def nudge(key_path, u):
            keys = tuple(getattr(k, "key", k) for k in key_path)
            return u + step if keys[-len(path):] == path else u

        return jax.tree_util.tree_map_with_path(nudge, updates), state

    return optax.GradientTransformation(inner.init, update)


def spiking(inner: optax.GradientTransformation, path: tuple[str, ...], size: float,
            at: int) -> optax.GradientTransformation:
    """The optimizer `inner`, plus `size` added to the params whose path ends with `path` at its
    update number `at` (0-based) and taken off again at the next: one update's TD errors are
    huge, and everything else is as without it."""

    def update(grads, state, params=None):
        inner_state, count = state
        updates, inner_state = inner.update(grads, inner_state, params)
        shift = jnp.where(count == at, size, 0.0) - jnp.where(count == at + 1, size, 0.0)

        def spike(key_path, u):
            keys = tuple(getattr(k, "key", k) for k in key_path)
            return u + shift if keys[-len(path):] == path else u

        return jax.tree_util.tree_map_with_path(spike, updates), (inner_state, count + 1)

    return optax.GradientTransformation(lambda params: (inner.init(params), jnp.zeros((), jnp.int32)), update)


def small_cartpole(total_steps: int = 2_400) -> Config:
    """The CartPole run most plants start from: 4 envs, one update per vector step, 32x32 units,
    learning from env step 400, an evaluation every 1,000."""
    return validate(dataclasses.replace(
        presets.preset("CartPole"), total_steps=total_steps, num_envs=4, train_every=4, learning_starts=400,
        batch_size=32, replay_capacity=max(4_000, total_steps), eval_every=1_000, eval_episodes=2,
        chunk_steps=400, hidden_sizes=(32, 32), target_update_every=128, final_eval_episodes=0, progress=False))


def small_atari(game: str, total_steps: int = 4_000, **changes) -> Config:
    """An Atari run that acts with a constant network (`ConstantQ` in the plants that use it):
    8 envs, learning from env step 1,600, small replay, one short evaluation at the end."""
    return validate(dataclasses.replace(
        presets.preset(game), total_steps=total_steps, num_envs=8, replay_capacity=4_000, learning_starts=1_600,
        batch_size=32, eval_every=total_steps, eval_episodes=1, final_eval_episodes=0, chunk_steps=800,
        progress=False, **changes))


class ConstantQ(nn.Module):
    """Q values that ignore the observation (a learned bias per action): for runs where the network
    is not the point and a Nature CNN would only cost compilation time."""

    num_actions: int

    @nn.compact
    def __call__(self, obs):
        bias = self.param("bias", nn.initializers.zeros, (self.num_actions,))
        return jnp.zeros((obs.shape[0], self.num_actions)) + bias[None]


def rescaling(inner: optax.GradientTransformation, up: str, down: str, factor: float, start: int,
              updates: int) -> optax.GradientTransformation:
    """The optimizer `inner`, then, for `updates` updates from update `start`, layer `up` (kernel and bias)
    multiplied by `factor` and layer `down`'s kernel divided by it. With ReLUs, no normalisation
    between them and `down` reading `up`, the Q values do not change, but the gradient of `down`'s
    kernel grows by `factor` at every update: exploding gradients, with nothing else wrong (starting
    after the rule's first three measurements, which set the norm it compares against)."""

    def init(params):
        return inner.init(params), jnp.zeros((), jnp.int32)

    def update(grads, state, params=None):
        inner_state, count = state
        steps, inner_state = inner.update(grads, inner_state, params)
        scale = jnp.where((count >= start) & (count < start + updates), factor, 1.0)

        def rescale(key_path, step, param):
            keys = tuple(getattr(k, "key", k) for k in key_path)
            if up in keys:
                return (param + step) * scale - param
            if down in keys and keys[-1] == "kernel":
                return (param + step) / scale - param
            return step

        return jax.tree_util.tree_map_with_path(rescale, steps, params), (inner_state, count + 1)

    return optax.GradientTransformation(init, update)


def flipping(inner: optax.GradientTransformation, step: float) -> optax.GradientTransformation:
    """The optimizer `inner`, plus a push on the Q head's bias towards action 0, then action 1, in
    turn at every update: the greedy action of most states flips back and forth (policy churn)."""

    def init(params):
        return inner.init(params), jnp.zeros((), jnp.int32)

    def update(grads, state, params=None):
        inner_state, count = state
        steps, inner_state = inner.update(grads, inner_state, params)
        sign = jnp.where(count % 2 == 0, 1.0, -1.0)

        def flip(key_path, u):
            keys = tuple(getattr(k, "key", k) for k in key_path)
            if keys[-2:] != ("q_head", "bias"):
                return u
            return u + sign * step * jnp.where(jnp.arange(u.shape[0]) == 0, 2.0, -2.0)

        return jax.tree_util.tree_map_with_path(flip, steps), (inner_state, count + 1)

    return optax.GradientTransformation(init, update)


class Plant(NamedTuple):
    """One planted failure: the rule that must name it, and the run that shows it (`build` takes the
    run's length in env steps and returns its config, and the network and optimizer to use instead
    of the config's, or None)."""

    name: str
    rule: str
    build: Callable[[int], tuple[Config, nn.Module | None, optax.GradientTransformation | None]]
    game: str = "CartPole"


def _network(config: Config) -> nn.Module:
    return make_network(config, 2)


def _cartpole(changes: dict | None = None, network=None, optimizer=None):
    """Returns a `Plant.build` for the small CartPole run with `changes`; `network` and `optimizer`
    are functions of the finished config."""

    def build(total_steps: int):
        config = validate(dataclasses.replace(small_cartpole(total_steps), **(changes or {})))
        return config, network and network(config), optimizer and optimizer(config)

    return build


PLANTS: tuple[Plant, ...] = (
    Plant("ReLU after the Q head (negative returns)", "dead_q_head",
          _cartpole({"reward_scale": -1.0}, network=lambda c: ReluAfterHead(_network(c)))),
    Plant("reward scaled to 0", "reward_signal_empty", _cartpole({"reward_scale": 0.0})),
    Plant("Adam re-created at every update", "optimizer_reset",
          _cartpole(optimizer=lambda c: reinitialised_every_update(optax.adam(1e-3)))),
    Plant("learning rate 0.05, MSE, target copied every update", "q_divergence",
          _cartpole({"learning_rate": 0.05, "learning_rate_end": 0.05, "loss": "mse", "target_update_every": 1,
                     "normalization": "none", "n_step": 1})),
    Plant("NaN Q values for some observations", "non_finite", _cartpole(network=lambda c: NaNNearTheEdge(_network(c)))),
    Plant("a hidden layer collapsed from the start", "dead_layer",
          _cartpole({"normalization": "none"},
                    network=lambda c: QNetwork(torso=CollapsedMLPTorso(tuple(c.hidden_sizes)), num_actions=2))),
    Plant("a layer's weights scaled up and the next one's down, Q unchanged", "exploding_gradients",
          _cartpole({"normalization": "none", "learning_rate": 1e-5, "learning_rate_end": 1e-5},
                    optimizer=lambda c: rescaling(make_optimizer(c)[0], "Dense_1", "q_head", 1.1, 250, 100))),
    Plant("no gradient reaches the parameters", "vanishing_gradients",
          _cartpole(network=lambda c: NoGradient(_network(c)))),
    Plant("exploration at its floor before learning", "epsilon_floor_before_learning",
          _cartpole({"epsilon_decay_steps": 200})),
    Plant("the Q head's bias pushed up at every update", "q_overestimation",
          _cartpole({"eval_every": 400}, optimizer=lambda c: nudging(make_optimizer(c)[0], ("q_head", "bias"), 0.2))),
    Plant("hidden biases pushed down at every update", "plasticity_loss",
          _cartpole({"normalization": "none"},
                    optimizer=lambda c: nudging(make_optimizer(c)[0], ("Dense_1", "bias"), -1e-2))),
    Plant("the Q head's bias pushed to one action, then the other, at every update", "policy_churn",
          _cartpole(optimizer=lambda c: flipping(make_optimizer(c)[0], 20.0))),
    # Update 104's spike is seen by update 105 alone, which measures no health (one in 10: updates
    # 1, 11, ... of this run), so no Q-value rule sees it; its TD errors set the maximum priority.
    Plant("prioritized replay after one update's outlier TD errors: every new transition enters at their "
          "priority", "replay_collapse",
          _cartpole({"prioritized_replay": True},
                    optimizer=lambda c: spiking(make_optimizer(c)[0], ("q_head", "bias"), 1e6, at=104))),
    Plant("updates that change nothing", "no_learning_progress",
          _cartpole({"eval_every": 400, "eval_episodes": 16}, optimizer=lambda c: optax.set_to_zero())),
    Plant("a conv layer of the Nature CNN collapsed from the start (Breakout)", "dead_layer",
          lambda total: (small_atari("Breakout"), QNetwork(torso=CollapsedNatureCNNTorso(), num_actions=4), None),
          game="Breakout"),
    Plant("Pong with a 100-step time limit", "episode_length_exploit",
          lambda total: (small_atari("Pong", max_episode_steps=100), ConstantQ(6), None), game="Pong"),
    Plant("Breakout with life loss not terminal", "life_loss_not_terminal",
          lambda total: (small_atari("Breakout", episodic_life=False, max_episode_steps=400), ConstantQ(4), None),
          game="Breakout"),
)


def plant(rule: str, game: str = "CartPole") -> Plant:
    """Returns the plant on `game` whose failure `rule` must name."""
    return next(p for p in PLANTS if p.rule == rule and p.game == game)
