"""Frames per second against the ceilings measured in the same run.

    python benchmarks/fps.py --game=Pong [--config cpu_atari] [--quick] [--seeds 1 2 4 8] [--batch-size B]
        [--out FILE]

For each number of seeds S (agents trained in one program) it measures:
- `env_only`: the S*E-env EnvPool pool stepped from Python with random actions;
- `learner_only`: S agents (mapped as the loop maps them) doing updates at the preset batch, on a
  replay filled with random frames (updates/s, and the env steps/s they would sustain at the
  preset's `train_every`);
- `act_fused`: the fused loop before learning starts (acting, env stepping, replay writes);
- `bare_update`: the network maths and Adam alone (`update_cost.bare_update_fn`), vmapped over
  the agents (one agent unbatched), in a compiled scan on fresh random batches: the floor under `learner_only`
  (`learner_over_bare` = its ms per update / the bare update's);
- `train_fused` (and `train_host` for S = 1): training at the preset's replay ratio.
Training rows carry `fraction_of_bound` = measured / min(env_only, the faster learner ceiling ×
train_every) for the same S; `train_fused` also carries `ms_per_update_in_loop` (the whole vector
step counted against its updates) and `in_loop_over_bare` (that / the bare update's ms).
`--config` layers an overlay of `configs/` on the game's preset (its schedule, network and replay
kind; the replay's size, learning start, evaluation and checkpoints stay the benchmark's).
Rates count env steps of all agents together; frames = env steps * frame skip. The replay is
shrunk to `--replay` transitions per agent (its size does not change the work per step; 8 full
Atari replays would need 56 GB).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from pathlib import Path

import jax
import numpy as np
from update_cost import (  # benchmarks/, beside this file
    bare_scan_fn,
    bare_update_fn,
    fill_replay,
    interleaved_ms_per_update,
    random_batches,
    update_scan_fn,
)

from dqn_jax import games
from dqn_jax.config import validate
from dqn_jax.errors import ConfigError
from dqn_jax.loop import envs
from dqn_jax.loop.loop import agent_keys, build_loop, over_agents
from dqn_jax.loop.schedule import ChunkSchedule, run_chunks
from dqn_jax.run import presets
from dqn_jax.tools.provenance import write_result


def timed(step, carry, min_seconds: float, min_calls: int = 2) -> tuple[float, int]:
    """Runs `carry = step(carry)` (which blocks) until both minimums are met; returns (seconds, calls)."""
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        carry = step(carry)
        calls += 1
    return time.perf_counter() - start, calls


def env_only(config, seconds: float) -> float:
    """Returns env steps/s of the training pool (all S*E envs) stepped with random actions."""
    pool = envs.make_train_pool(config)
    pool.reset()
    count = config.num_seeds * config.num_envs
    num_actions = envs.facts(pool).num_actions
    rng = np.random.default_rng(0)
    for _ in range(20):
        pool.step(rng.integers(0, num_actions, count))

    def step_batch(_):
        for _ in range(50):
            pool.step(rng.integers(0, num_actions, count))

    elapsed, calls = timed(step_batch, None, seconds)
    pool.close()
    return calls * 50 * count / elapsed


def learner_and_bare(loop, agents, seconds: float, updates_per_call: int) -> tuple[float, float]:
    """Returns updates/s per agent of (the learner, the bare update) for S agents, timed in turns
    (`update_cost.interleaved_ms_per_update`) so that both see the machine alike.

    The learner: the faster of a compiled scan of `updates_per_call` updates (no per-call
    overhead; what small networks need) and one jitted update per Python call (XLA's CPU backend
    runs some kernels slower inside a loop body), mapped over the agents as the loop maps them.
    The bare update (`update_cost.bare_update_fn`: the network maths and Adam alone, one agent
    unbatched) runs in a scan on fresh random batches: the floor under the learner.
    """
    # Health statistics are measured on one update in `health_every`; leave them out of the ceiling.
    update = loop.over_agents(functools.partial(loop.learner.update, with_health=False))

    many = update_scan_fn(update, updates_per_call)

    @jax.jit
    def one(learner_part, replay):
        return update(learner_part.replace(replay=replay))[0].replace(replay=None)

    config, num_seeds = loop.config, loop.config.num_seeds
    bare = over_agents(bare_update_fn(config, loop.learner.network, loop.learner.optimizer), unbatch_one=True)
    facts = envs.facts(loop.pool)
    batches = jax.tree.map(lambda x: x.reshape(updates_per_call, num_seeds, *x.shape[1:]),
                           random_batches(config, facts.obs_shape, facts.num_actions, updates_per_call * num_seeds))

    bare_many = bare_scan_fn(bare)
    replay, part = agents.replay, agents.replace(replay=None)
    ms = interleaved_ms_per_update({
        "many": (lambda p: jax.block_until_ready(many(p, replay)), part, updates_per_call),
        "one": (lambda p: jax.block_until_ready(one(p, replay)), part, 1),
        "bare": (lambda c: jax.block_until_ready(bare_many(c, batches)),
                 (agents.params, agents.target_params, agents.opt_state), updates_per_call),
    }, 1.5 * seconds)  # as long as the two timings it replaced, plus half
    return 1e3 / min(ms["many"], ms["one"]), 1e3 / ms["bare"]


def timing_config(config, num_seeds: int, replay: int, chunk_steps: int, **changes):
    """Returns `config` (validated) set up to time its loop with `loop_rates`: `num_seeds` agents, a
    replay of `replay` transitions per agent (at least 64 vector steps), chunks of `chunk_steps`
    env steps rounded down to whole vector steps, learning from the end of the fourth chunk, no
    evaluation or checkpoint; `changes` set further fields."""
    chunk = max(config.num_envs, chunk_steps // config.num_envs * config.num_envs)
    return validate(dataclasses.replace(
        config, num_seeds=num_seeds, replay_capacity=max(replay, config.num_envs * 64), chunk_steps=chunk,
        learning_starts=max(4 * chunk, config.batch_size), progress=False, eval_every=10**9, checkpoint_every=0,
        **changes))


def loop_rates(config, act_seconds: float, train_seconds: float, chunk_steps: int) -> dict:
    """Returns env steps/s (all agents) of a loop acting only and then training, plus its agents.

    Chunks that compile (the first, and the first that learns: the host loop compiles its update
    there) are not timed; acting is timed for at most `act_seconds` before learning starts.
    """
    loop = build_loop(config)
    E = config.num_envs
    iterations = max(1, chunk_steps // E)
    learn_at = config.learning_starts // E
    schedule = ChunkSchedule(E, iterations, total_iterations=2**31 - 1)
    act_steps, act_time, train_steps, train_time = 0, 0.0, 0, 0.0
    seen_learning = False
    for chunk in run_chunks(loop, loop.init(agent_keys(config)), schedule):
        steps = (chunk.end_iteration - chunk.start_iteration) * E * config.num_seeds
        learned = bool(np.asarray(chunk.records.learn.learned).any())
        if not learned:
            if chunk.start_iteration > 0 and chunk.end_iteration <= learn_at and act_time < act_seconds:
                act_steps, act_time = act_steps + steps, act_time + chunk.seconds
        elif not seen_learning:
            seen_learning = True
        else:
            train_steps, train_time = train_steps + steps, train_time + chunk.seconds
            if train_time >= train_seconds:
                break
    return {"act": act_steps / act_time if act_time else None, "train": train_steps / train_time,
            "loop": loop, "agents": chunk.state.agents, "mode": loop.mode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="Pong")
    parser.add_argument("--quick", action="store_true", help="shorter measurements (under 5 minutes on 2 cores)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--replay", type=int, default=None, help="replay transitions per agent")
    parser.add_argument("--batch-size", type=int, default=None, help="updates' batch (default: the preset's)")
    parser.add_argument("--config", default="", help="an overlay of configs/ layered on the game's preset")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    game = games.canonical_game(args.game)
    base = presets.preset(game)
    if args.config:
        try:
            base = presets.load_toml(presets.overlay_path(args.config), base)
        except ConfigError as error:
            raise SystemExit(f"error: --config: {error}") from None
    if args.batch_size:
        base = dataclasses.replace(base, batch_size=args.batch_size)
    seconds = 3.0 if args.quick else 10.0
    replay = args.replay or (20_000 if base.is_atari else base.replay_capacity)
    chunk_steps = 200 if base.is_atari else 2_000

    def learning_start(chunk: int) -> int:
        """Learning starts once the replay holds enough to sample; timing starts after compilation."""
        start = max(4 * chunk, base.batch_size * 4)
        return start if args.quick else max(start, 20 * chunk)

    config = validate(dataclasses.replace(
        base, replay_capacity=replay, learning_starts=learning_start(chunk_steps), progress=False,
        eval_every=10**9, checkpoint_every=0))
    frame_skip = config.frame_skip
    updates_per_call = 20 if config.is_atari else 200
    rows = []

    def add(mode: str, num_seeds: int, steps_per_sec: float, **extra) -> None:
        row = {"game": game, "mode": mode, "num_seeds": num_seeds, "env_steps_per_sec": round(steps_per_sec, 1),
               "frames_per_sec": round(steps_per_sec * frame_skip, 1), **extra}
        rows.append(row)
        shown = ", ".join(f"{k}={v}" for k, v in extra.items())
        print(f"{mode:>13}  S={num_seeds}  {steps_per_sec:>10,.0f} env steps/s  "
              f"{steps_per_sec * frame_skip:>10,.0f} frames/s  {shown}", flush=True)

    for num_seeds in args.seeds:
        # --quick keeps the work per compiled call constant as S grows (S agents do S times the
        # updates per call), so the minimum of two timed calls does not grow with S.
        seed_chunk = max(config.num_envs, chunk_steps // num_seeds) if args.quick else chunk_steps
        seed_updates = max(1, updates_per_call // num_seeds) if args.quick else updates_per_call
        seeded = dataclasses.replace(config, num_seeds=num_seeds, learning_starts=learning_start(seed_chunk))
        env_rate = env_only(seeded, seconds)
        add("env_only", num_seeds, env_rate)
        fused = loop_rates(seeded, seconds, seconds, seed_chunk)
        agents = fill_replay(fused["loop"], fused["agents"], 2 * config.frame_stack + config.batch_size)
        updates, bare = learner_and_bare(fused["loop"], agents, seconds, seed_updates)
        learner_rate = updates * num_seeds * config.train_every
        add("learner_only", num_seeds, learner_rate, updates_per_sec=round(updates, 1),
            ms_per_update=round(1e3 / updates, 2), batch_size=config.batch_size)
        bare_rate = bare * num_seeds * config.train_every
        add("bare_update", num_seeds, bare_rate, updates_per_sec=round(bare, 1), ms_per_update=round(1e3 / bare, 2),
            learner_over_bare=round(bare / updates, 3), batch_size=config.batch_size)
        # The faster learner ceiling: the project's update, or the bare maths if they are faster.
        bound = min(env_rate, max(learner_rate, bare_rate))
        if fused["act"]:
            add("act_fused", num_seeds, fused["act"])
        if fused["mode"] != "fused":
            print(f"warning: the fused loop was unavailable; its rows measure the {fused['mode']} loop")
        # ms of one update inside the fused loop, counting the whole vector step (acting, env step,
        # replay write) against its updates: an upper bound on the update's own cost there.
        in_loop_ms = 1e3 * num_seeds * config.train_every / fused["train"] if fused["train"] else None
        add("train_fused", num_seeds, fused["train"], fraction_of_bound=round(fused["train"] / bound, 3),
            train_every=config.train_every, ms_per_update_in_loop=round(in_loop_ms, 2),
            in_loop_over_bare=round(in_loop_ms * bare / 1e3, 3))
        del fused, agents
        if num_seeds == 1:
            host = loop_rates(dataclasses.replace(seeded, loop="host"), 0.0, seconds, seed_chunk)
            add("train_host", 1, host["train"], fraction_of_bound=round(host["train"] / bound, 3),
                train_every=config.train_every)
            del host

    named = f"_{Path(args.config).stem}" if args.config else ""
    out = args.out or str(Path(__file__).parent / "results" /
                          f"fps_{game.lower()}{named}_{jax.default_backend()}.json")
    write_result(out, {
        "benchmark": "fps", "game": game, "config": args.config or None, "quick": args.quick,
        "replay_per_agent": replay,
        "num_envs_per_agent": config.num_envs, "train_every": config.train_every,
        "batch_size": config.batch_size, "frame_skip": frame_skip, "rows": rows,
    })


if __name__ == "__main__":
    main()
