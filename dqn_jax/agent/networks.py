"""Flax Q-networks: an MLP or an Atari CNN torso (Nature 2015 or NIPS 2013), then a linear Q head
(plain or dueling).

There is deliberately no activation after the Q head: a ReLU there clamps every Q value to >= 0
and kills the gradient of every negative output, so the network answers zeros forever.
Every hidden layer's output is sown into the `intermediates` collection (a no-op unless the caller
asks for that collection), which is how the health checks see dead units.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqn_jax.config import Config

ACTIVATIONS: dict[str, Callable] = {"relu": nn.relu, "leaky_relu": nn.leaky_relu}


def kernel_initializer(name: str, gain: float):
    """Returns a Flax kernel initializer: `lecun_normal`, or `orthogonal` scaled by `gain`."""
    if name == "orthogonal":
        return nn.initializers.orthogonal(gain)
    return nn.initializers.lecun_normal()


class MLPTorso(nn.Module):
    """Dense layers for vector observations: [B, ...] float → [B, hidden_sizes[-1]]."""

    hidden_sizes: Sequence[int]
    activation: str = "relu"
    normalization: str = "none"
    initializer: str = "lecun_normal"
    init_gain: float = 1.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs.astype(jnp.float32).reshape(obs.shape[0], -1)
        for i, width in enumerate(self.hidden_sizes):
            x = nn.Dense(width, kernel_init=kernel_initializer(self.initializer, self.init_gain))(x)
            if self.normalization == "layer_norm":
                x = nn.LayerNorm()(x)
            x = ACTIVATIONS[self.activation](x)
            self.sow("intermediates", f"dense_{i}", x)
        return x


class PatchConv(nn.Module):
    """A VALID, strided 2-D convolution [B, H, W, C] → [B, H', W', features] as patches @ kernel.

    Same parameters (`kernel` [k, k, C, features], `bias`) and same result as `nn.Conv`. On CPU,
    XLA runs convolution gradients inside a loop body (our fused `lax.scan`) many times slower
    than outside one; strided slices and one matmul are as fast inside the loop as outside
    (docs/DESIGN.md, "PatchConv on CPU").

    With `space_to_depth` (for a kernel that is a whole number of strides, k = m·s), the input is
    first cut into s×s blocks stacked as channels ([B, H/s, W/s, s·s·C]) and the kernel regrouped
    to match, so that the patches are m·m unstrided slices instead of k·k strided ones: the same
    products, summed in another order (equal to `nn.Conv` to float rounding, not bit for bit).
    """

    features: int
    kernel_size: int
    stride: int
    kernel_init: Callable = nn.initializers.lecun_normal()
    space_to_depth: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s = self.kernel_size, self.stride
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        out_h, out_w = (x.shape[1] - k) // s + 1, (x.shape[2] - k) // s + 1
        if self.space_to_depth and k % s == 0:
            x, kernel, k, s = _as_blocks(x, kernel, s, out_h, out_w)
        patches = jnp.concatenate([
            x[:, u:u + s * (out_h - 1) + 1:s, v:v + s * (out_w - 1) + 1:s, :]
            for u in range(k) for v in range(k)
        ], axis=-1)  # [B, H', W', k*k*C], ordered like the kernel's (u, v, c)
        return patches @ kernel.reshape(-1, self.features) + bias.reshape(1, 1, 1, -1)


def _as_blocks(x: jax.Array, kernel: jax.Array, s: int, out_h: int, out_w: int):
    """Returns `(x, kernel, k, 1)` of the same convolution over s×s blocks: x [B, h, w, s·s·C]
    (the rows and columns the output reads, blocks as channels ordered (i, j, c)), kernel
    [m, m, s·s·C, F] for the original [m·s, m·s, C, F], and its new size m and stride 1."""
    B, _, _, C = x.shape
    m, F = kernel.shape[0] // s, kernel.shape[-1]
    h, w = out_h + m - 1, out_w + m - 1
    blocks = x[:, :h * s, :w * s, :].reshape(B, h, s, w, s, C).transpose(0, 1, 3, 2, 4, 5).reshape(B, h, w, s * s * C)
    regrouped = kernel.reshape(m, s, m, s, C, F).transpose(0, 2, 1, 3, 4, 5).reshape(m, m, s * s * C, F)
    return blocks, regrouped, m, 1


CNN_LAYERS: dict[str, tuple[tuple[tuple[int, int, int], ...], int]] = {
    # torso: ((features, kernel, stride) of each VALID conv, width of the dense layer)
    "nature_cnn": (((32, 8, 4), (64, 4, 2), (64, 3, 1)), 512),  # Mnih et al. 2015
    "nips_cnn": (((16, 8, 4), (32, 4, 2)), 256),  # Mnih et al. 2013, also A3C's
}


class AtariCNNTorso(nn.Module):
    """Convolutions then one dense layer, as `CNN_LAYERS[layers]` lists them: `nature_cnn` (conv
    32x8x8/4, 64x4x4/2, 64x3x3/1, dense 512) or `nips_cnn` (conv 16x8x8/4, 32x4x4/2, dense 256).

    Takes uint8 frames [B, stack, 84, 84] (EnvPool's channel-first layout), scales them to [0, 1]
    inside the network and returns features [B, dense width]. Layers are named `Conv_i` and
    `Dense_0` and sow `conv_i` and `dense_0`, whichever the torso: ReDo and the health statistics
    find them by those names.
    """

    layers: str = "nature_cnn"
    activation: str = "relu"
    normalization: str = "none"
    initializer: str = "lecun_normal"
    init_gain: float = 1.0
    conv: str = "auto"
    """`xla` (lax convolutions), `patches` (PatchConv), `space_to_depth` (PatchConv, the first
    layer over 4×4 blocks) or `auto`: patches on CPU, xla elsewhere."""

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        convs, dense = CNN_LAYERS[self.layers]
        use_patches = self.conv in ("patches", "space_to_depth") or (
            self.conv == "auto" and jax.default_backend() == "cpu")
        x = jnp.transpose(obs.astype(jnp.float32) / 255.0, (0, 2, 3, 1))
        act = ACTIVATIONS[self.activation]
        init = kernel_initializer(self.initializer, self.init_gain)
        for i, (features, kernel, stride) in enumerate(convs):
            if use_patches:
                x = PatchConv(features, kernel, stride, kernel_init=init, name=f"Conv_{i}",
                              space_to_depth=self.conv == "space_to_depth" and i == 0)(x)
            else:
                x = nn.Conv(features, (kernel, kernel), (stride, stride), padding="VALID", kernel_init=init,
                            name=f"Conv_{i}")(x)
            if self.normalization == "layer_norm":
                x = nn.LayerNorm()(x)
            x = act(x)
            self.sow("intermediates", f"conv_{i}", x)
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(dense, kernel_init=init, name="Dense_0")(x)
        if self.normalization == "layer_norm":
            x = nn.LayerNorm()(x)
        x = act(x)
        self.sow("intermediates", "dense_0", x)
        return x


NatureCNNTorso = AtariCNNTorso  # the Nature CNN is the default layers; the name older code imports


class QNetwork(nn.Module):
    """A torso and a linear Q head: observations [B, ...] → Q values [B, num_actions] float32."""

    torso: nn.Module
    num_actions: int
    dueling: bool = False
    initializer: str = "lecun_normal"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        features = self.torso(obs)
        head_init = kernel_initializer(self.initializer, 1.0)
        if not self.dueling:
            return nn.Dense(self.num_actions, kernel_init=head_init, name="q_head")(features)
        value = nn.Dense(1, kernel_init=head_init, name="value_head")(features)
        advantage = nn.Dense(self.num_actions, kernel_init=head_init, name="advantage_head")(features)
        return value + advantage - advantage.mean(axis=-1, keepdims=True)


def make_network(config: Config, num_actions: int) -> QNetwork:
    """Returns the Q-network the config describes, for `num_actions` actions."""
    common = dict(
        activation=config.activation, normalization=config.normalization,
        initializer=config.initializer, init_gain=config.init_gain,
    )
    if config.torso in CNN_LAYERS:
        torso = AtariCNNTorso(layers=config.torso, **common)
    else:
        torso = MLPTorso(hidden_sizes=tuple(config.hidden_sizes), **common)
    return QNetwork(torso=torso, num_actions=num_actions, dueling=config.dueling,
                    initializer=config.initializer)
