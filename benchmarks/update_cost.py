"""What one update costs beyond its network maths: the project's update against the bare update.

    python benchmarks/update_cost.py [--game Pong] [--config cpu_atari] [--torsos nature_cnn nips_cnn]
                                     [--batch-sizes 32 64 128] [--updates 20] [--seconds 10]
                                     [--prioritized] [--set FIELD=VALUE ...] [--variant FIELD=VALUE ...]
                                     [--xla-option KEY=VALUE ...] [--out FILE]

Both run `--updates` updates inside one compiled `lax.scan`, as the fused loop does, and are
timed in 5 rounds that take turns (`--seconds` per row in all; the median round is kept), so that
the machine's slow spells fall on every row alike. Rows, in ms per update of one agent:
- `bare_update`: the network maths and Adam alone — online forward on the batch, target forward
  on the next observations (and the online one on them with Double DQN), the TD error and the
  config's loss, their gradient, Adam — on batches
  prepared beforehand (a different one at every update, so XLA cannot hoist work out of the loop);
- `update`: the project's `learner.update` (health statistics off, as in 9 of 10 updates), mapped
  over one agent as the loop maps it (`Loop.over_agents`): sampling from a filled replay, stacks rebuilt, n-step
  returns, target copy, metrics and the batch hash included;
- `update_with_health`: the same with the health statistics (one update in `health_every`);
- with `--prioritized`, `prioritized_update`: `update` with prioritized replay (stratified draws from
  the sum tree, importance-weighted loss, priorities written back), on the same replay with random
  priorities on its sampleable slots; `prioritized_vs_uniform` is prioritized_update / update.
- with `--convs space_to_depth` (the default), `bare_update_space_to_depth`: the bare update with
  the first convolution computed over 4×4 blocks (`PatchConv(space_to_depth=True)`: the same
  products in another order), timed in turns with `bare_update`; `space_to_depth_vs_bare` is
  their ratio.
- with `--xla-option KEY=VALUE` (repeatable, an XLA debug option: `xla_cpu_use_onednn=true`),
  `update_KEY=VALUE`: `update` compiled with that option (`Lowered.compile(compiler_options=...)`,
  so in this process, in turns with the others); `KEY=VALUE_vs_update` is its ratio to `update`,
  `KEY=VALUE_same_bits` whether one call of both from the same state gives the same bits;
- `--set FIELD=VALUE` (repeatable) changes a setting of every row (`--set dueling=true`);
- with `--variant FIELD=VALUE` (repeatable, a `Config` field: `bootstrap_epsilon=0.05`, `dueling=true`),
  `update_FIELD=VALUE`: `update` with that one setting changed, on the same replay and params, timed
  in turns with the others; `FIELD=VALUE_vs_update` is its ratio to `update`.
`overhead` is update / bare_update - 1. Each row also gives `*_per_transition`, ms per sampled
transition (ms per update / batch size): what a replay ratio costs, whatever the batch. One row per
torso (`nature_cnn`, `nips_cnn`) and batch size, on the game's preset with `--config`'s overlay
(Pong's `cpu_atari` by default: 3-step Double DQN, mean squared error, as that preset trains).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
import tomllib
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dqn_jax import games
from dqn_jax.agent import sum_tree
from dqn_jax.agent.learner import td_error, td_loss
from dqn_jax.agent.replay import fill_with_random_steps
from dqn_jax.config import CNN_TORSOS, validate
from dqn_jax.errors import ConfigError
from dqn_jax.loop import envs
from dqn_jax.loop.loop import agent_keys, build_loop
from dqn_jax.run import presets
from dqn_jax.tools.provenance import write_result


def interleaved_ms_per_update(steps: dict, seconds: float, rounds: int = 5) -> dict:
    """Returns the median ms per update of each of `steps` ({name: (step, carry, updates)}: `carry =
    step(carry)` runs `updates` updates and blocks), timed in `rounds` rounds that visit every step
    in turn for `seconds / rounds` each, so that a machine's slow spells fall on all of them alike."""
    carries = {name: step(carry) for name, (step, carry, _) in steps.items()}  # compile
    times: dict = {name: [] for name in steps}
    for _ in range(rounds):
        for name, (step, _, updates) in steps.items():
            calls, start = 0, time.perf_counter()
            while calls < 2 or time.perf_counter() - start < seconds / rounds:
                carries[name] = step(carries[name])
                calls += 1
            times[name].append((time.perf_counter() - start) / (calls * updates) * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


def bare_update_fn(config, network, optimizer):
    """Returns `update(params, target_params, opt_state, batch) -> (params, opt_state, loss)`:
    the network maths and Adam of one DQN update, nothing else."""
    double, loss_kind = config.double_dqn, config.loss

    def loss_fn(params, target_params, obs_tm1, action, reward, discount, obs_t):
        q_tm1 = network.apply(params, obs_tm1)
        q_t_target = network.apply(target_params, obs_t)
        q_t_selector = jax.lax.stop_gradient(network.apply(params, obs_t)) if double else q_t_target
        errors = jax.vmap(td_error)(q_tm1, action, reward, discount, q_t_target, q_t_selector)
        return jnp.mean(jax.vmap(lambda e: td_loss(e, loss_kind))(errors))

    def update(params, target_params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, target_params, *batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return update


def bare_scan_fn(bare):
    """Returns `scan(carry, batches) -> carry`, jitted: `bare` (as from `bare_update_fn`, or mapped
    over agents) applied to each batch of `batches` in turn inside one `lax.scan`; carry =
    (params, target_params, opt_state)."""

    @jax.jit
    def scan(carry, batches):
        def body(carry, batch):
            params, target_params, opt_state = carry
            params, opt_state, _ = bare(params, target_params, opt_state, batch)
            return (params, target_params, opt_state), None

        return jax.lax.scan(body, carry, batches)[0]

    return scan


def update_scan_fn(update, length: int):
    """Returns `scan(learner_part, replay) -> learner_part`, jitted: `length` calls of `update` (the
    learner's, mapped over agents) in one `lax.scan`; the replay is read-only, carried apart."""

    @jax.jit
    def scan(learner_part, replay):
        def body(part, _):
            new, metrics = update(part.replace(replay=replay))
            return new.replace(replay=None), metrics["loss"]

        return jax.lax.scan(body, learner_part, None, length=length)[0]

    return scan


def fill_replay(loop, agents, steps: int):
    """Returns `agents` [S] with `steps` random env steps written to every agent's replay."""
    keys = jax.random.split(jax.random.PRNGKey(0), loop.config.num_seeds)
    fill = jax.jit(jax.vmap(lambda state, key: fill_with_random_steps(loop.replay, state, steps, key, num_actions=2)))
    return agents.replace(replay=fill(agents.replay, keys))


def with_added_state(agents, fresh):
    """Returns `agents` with every optional field that they leave None and `fresh` (a variant's
    freshly initialised agents) holds taken from `fresh`, e.g. the running average of the params;
    not prioritized replay's priorities, which must match the filled replay (`--prioritized`)."""
    added = {f.name: getattr(fresh, f.name) for f in dataclasses.fields(fresh)
             if getattr(agents, f.name) is None and getattr(fresh, f.name) is not None and f.name != "priorities"}
    return agents.replace(**added)


def with_random_priorities(loop, agents):
    """Returns `agents` with priorities in (0, 1] on every sampleable slot of their filled replays
    (`Replay.sampleable`, the slots `Prioritized.add` would have entered), 0 elsewhere."""
    T, E = loop.replay.ring_steps, loop.replay.num_envs

    def one(replay_state, key):
        values = jnp.where(loop.replay.sampleable(replay_state),
                           jax.random.uniform(key, (T, E), minval=1e-3, maxval=1.0), 0.0)
        return sum_tree.set_values(sum_tree.init(T * E), jnp.arange(T * E), values.reshape(-1))

    keys = jax.random.split(jax.random.PRNGKey(1), loop.config.num_seeds)
    nodes = jax.jit(jax.vmap(one))(agents.replay, keys)
    return agents.replace(priorities=agents.priorities.replace(nodes=nodes))


def random_batches(config, obs_shape, num_actions: int, count: int, seed: int = 0):
    """Returns `count` batches (obs_tm1, action, reward, discount, obs_t), each with a leading [count] axis."""
    rng = np.random.default_rng(seed)
    shape = (count, config.batch_size, *obs_shape)
    return (jnp.asarray(rng.integers(0, 255, shape, dtype=np.uint8)),
            jnp.asarray(rng.integers(0, num_actions, (count, config.batch_size), dtype=np.int32)),
            jnp.asarray(rng.standard_normal((count, config.batch_size)).astype(np.float32)),
            jnp.full((count, config.batch_size), config.gamma, jnp.float32),
            jnp.asarray(rng.integers(0, 255, shape, dtype=np.uint8)))


def toml_value(text: str) -> object:
    """Returns `text` read as a TOML value (`true`, `512`, `0.05`), or as it is when TOML cannot read
    it (a bare word: `mse`)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_variant(text: str, config, flag: str = "--variant") -> tuple[str, object]:
    """Returns `(field, value)` for `FIELD=VALUE`: the value read as TOML reads it (a bare word as a
    string: `loss=mse`), then typed and checked as an overlay's values are (`presets.replace_checked`:
    unknown fields with the closest name, wrong types) and by `validate` on `config`; exits with one
    `error:` line otherwise."""
    field, equals, value = text.partition("=")
    if not equals or not value:
        raise SystemExit(f"error: {flag} {text!r} is not FIELD=VALUE (e.g. {flag} bootstrap_epsilon=0.05)")
    parsed = toml_value(value)
    source = f"{flag} {text}"
    try:
        changed = validate(presets.replace_checked(config, {field: parsed}, source=source))
    except ConfigError as err:  # replace_checked's messages name the source, validate's do not
        said = str(err)
        raise SystemExit(f"error: {said if said.startswith(source) else f'{source}: {said}'}") from None
    return field, getattr(changed, field)


def parse_xla_option(text: str) -> tuple[str, object]:
    """Returns `(key, value)` for `KEY=VALUE`, an XLA debug option (`xla_...`) with its value read as
    TOML reads it (`true`, `512`; a bare word as a string); exits with one `error:` line otherwise."""
    key, equals, value = text.partition("=")
    if not equals or not value or not key.startswith("xla_"):
        raise SystemExit(f"error: --xla-option {text!r} is not KEY=VALUE with an XLA option as the key "
                         "(e.g. --xla-option xla_cpu_use_onednn=true)")
    return key, toml_value(value)


def compiled_with(scan, args: tuple, options: dict, source: str):
    """Returns the jitted `scan` compiled for `args` with XLA `options`; exits with one `error:` line
    naming `source` when XLA refuses an option."""
    try:
        return scan.lower(*args).compile(compiler_options=options)
    except jax.errors.JaxRuntimeError as err:
        raise SystemExit(f"error: {source}: {str(err).splitlines()[0]}") from None


def measure(config, updates: int, seconds: float, prioritized: bool = False, convs: Sequence[str] = (),
            variants: Sequence[tuple[str, object]] = (), xla_options: Sequence[tuple[str, object]] = ()) -> dict:
    """Returns the rows' ms per update for one config (one agent); with `convs` (AtariCNNTorso's
    `conv` choices, e.g. `space_to_depth`), also `bare_update_<conv>`: the bare update with the
    torso's convolutions computed that way, timed in turns with the others on the same params."""
    loop = build_loop(config)
    agents = fill_replay(loop, loop.init(agent_keys(config)).agents, 4 * config.batch_size)
    network, optimizer = loop.learner.network, loop.learner.optimizer
    bare = bare_update_fn(config, network, optimizer)
    facts = envs.facts(loop.pool)
    batches = random_batches(config, facts.obs_shape, facts.num_actions, updates)
    params = jax.tree.map(lambda x: x[0], agents.params)

    bare_scan = bare_scan_fn(bare)

    steps = {"bare_update": (lambda carry: jax.block_until_ready(bare_scan(carry, batches)),
                             (params, jax.tree.map(jnp.copy, params), optimizer.init(params)), updates)}
    for conv in convs:
        variant = network.clone(torso=network.torso.clone(conv=conv))
        scan = bare_scan_fn(bare_update_fn(config, variant, optimizer))
        steps[f"bare_update_{conv}"] = (lambda carry, scan=scan: jax.block_until_ready(scan(carry, batches)),
                                        (params, jax.tree.map(jnp.copy, params), optimizer.init(params)), updates)
    scans = {name: update_scan_fn(loop.over_agents(functools.partial(loop.learner.update, with_health=with_health)),
                                  updates)
             for name, with_health in (("update", False), ("update_with_health", True))}
    for name, scan in scans.items():
        steps[name] = (lambda part, scan=scan: jax.block_until_ready(scan(part, agents.replay)),
                       agents.replace(replay=None), updates)
    if prioritized:
        per_loop = build_loop(dataclasses.replace(config, prioritized_replay=True))
        fresh = per_loop.init(agent_keys(config)).agents.priorities
        per_agents = with_random_priorities(per_loop, agents.replace(priorities=fresh))
        scan = update_scan_fn(per_loop.over_agents(functools.partial(per_loop.learner.update, with_health=False)),
                              updates)
        steps["prioritized_update"] = (lambda part, scan=scan: jax.block_until_ready(scan(part, agents.replay)),
                                       per_agents.replace(replay=None), updates)
    for field, value in variants:  # the same agents, and the state a variant adds (`average_params`) fresh
        variant_loop = build_loop(dataclasses.replace(config, **{field: value}))
        variant_agents = with_added_state(agents, variant_loop.init(agent_keys(config)).agents)
        scan = update_scan_fn(variant_loop.over_agents(functools.partial(variant_loop.learner.update,
                                                                         with_health=False)), updates)
        steps[f"update_{field}={value}"] = (lambda part, scan=scan: jax.block_until_ready(scan(part, agents.replay)),
                                            variant_agents.replace(replay=None), updates)
    same_bits = {}
    part = agents.replace(replay=None)
    for key, value in xla_options:  # the `update` row's program, only compiled otherwise
        compiled = compiled_with(scans["update"], (part, agents.replay), {key: value}, f"--xla-option {key}={value}")
        steps[f"update_{key}={value}"] = (lambda part, c=compiled: jax.block_until_ready(c(part, agents.replay)),
                                          part, updates)
        same_bits[f"{key}={value}_same_bits"] = bool(jax.tree.all(jax.tree.map(
            np.array_equal, jax.device_get(scans["update"](part, agents.replay)),
            jax.device_get(compiled(part, agents.replay)))))
    rows = interleaved_ms_per_update(steps, (3 + prioritized + len(convs) + len(variants) + len(xla_options)) * seconds)
    rows = {k: round(v, 2) for k, v in rows.items()}
    for key, value in xla_options:
        rows[f"{key}={value}_vs_update"] = round(rows[f"update_{key}={value}"] / rows["update"], 3)
    rows.update(same_bits)
    if prioritized:
        rows["prioritized_vs_uniform"] = round(rows["prioritized_update"] / rows["update"], 3)
    for conv in convs:
        rows[f"{conv}_vs_bare"] = round(rows[f"bare_update_{conv}"] / rows["bare_update"], 3)
    for field, value in variants:
        rows[f"{field}={value}_vs_update"] = round(rows[f"update_{field}={value}"] / rows["update"], 3)
    rows["overhead"] = round(rows["update"] / rows["bare_update"] - 1, 3)
    rows["overhead_with_health"] = round(rows["update_with_health"] / rows["bare_update"] - 1, 3)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="Pong")
    parser.add_argument("--config", default="cpu_atari", help="an overlay of configs/ ('' for none)")
    parser.add_argument("--torsos", nargs="+", default=["nature_cnn", "nips_cnn"], choices=list(CNN_TORSOS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--updates", type=int, default=20, help="updates per compiled call")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--prioritized", action="store_true", help="also time the prioritized update")
    parser.add_argument("--convs", nargs="*", default=["space_to_depth"],
                        help="other ways to compute the torso's convolutions, each timed as a bare update in turns "
                             "with the default (patches on CPU); none: --convs")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="settings",
                        help="change this Config field in every row (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="FIELD=VALUE",
                        help="also time the update with this Config field changed (repeatable)")
    parser.add_argument("--xla-option", action="append", default=[], metavar="KEY=VALUE", dest="xla_options",
                        help="also time the update compiled with this XLA option (repeatable)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    xla_options = [parse_xla_option(text) for text in args.xla_options]
    game = games.canonical_game(args.game)
    base = presets.preset(game)
    if args.config:
        base = presets.load_toml(presets.overlay_path(args.config), base)
    base = dataclasses.replace(base, **dict(parse_variant(text, base, "--set") for text in args.settings))
    results = []
    for torso in args.torsos:
        for batch_size in args.batch_sizes:
            config = validate(dataclasses.replace(
                base, torso=torso, batch_size=batch_size, replay_capacity=20_000,
                learning_starts=max(batch_size * 4, (base.frame_stack + base.n_step + 1) * base.num_envs),
                progress=False))
            variants = [parse_variant(v, config) for v in args.variant]
            rows = measure(config, args.updates, args.seconds, args.prioritized, args.convs, variants, xla_options)
            per_transition = {f"{name}_per_transition": round(value / batch_size, 4) for name, value in rows.items()
                              if "overhead" not in name and "_vs_" not in name and not name.endswith("_same_bits")}
            row = {"torso": torso, "batch_size": batch_size, "double_dqn": config.double_dqn, "loss": config.loss,
                   "n_step": config.n_step, **rows, **per_transition}
            print(row, flush=True)
            results.append(row)
    name = f"update_cost_{game.lower()}_{jax.default_backend()}{'_prioritized' if args.prioritized else ''}.json"
    out = args.out or str(Path(__file__).parent / "results" / name)
    write_result(out, {"benchmark": "update_cost", "game": game, "config": args.config or None,
                       "updates_per_call": args.updates,
                       "settings": args.settings, "variants": args.variant, "xla_options": args.xla_options,
                       "unit": "ms per update of one agent; *_per_transition: ms per sampled transition",
                       "rows": results})
    return 0


if __name__ == "__main__":
    main()
