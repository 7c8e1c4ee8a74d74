"""Health checks: plant each failure for real and check that its rule, and only it, fires."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax
import pytest
from helpers import ConstantQ, acting_only, plants

from dqn_jax.agent.networks import QNetwork, make_network
from dqn_jax.loop.loop import agent_keys, build_loop
from dqn_jax.run import checkpoint, presets
from dqn_jax.run.metrics import read_metrics
from dqn_jax.run.train import train
from dqn_jax.tools.doctor import examine, report
from dqn_jax.tools.doctor import main as doctor_main


def evaluated_at_chunk_ends(config):
    """Returns `config` evaluating at its nearest chunk end at or before `eval_every`: every chunk
    then has one length, and the fused chunk compiles once instead of twice (the plants evaluate
    every 1,000 env steps in chunks of 400)."""
    return dataclasses.replace(config, eval_every=max(config.chunk_steps,
                                                      config.eval_every // config.chunk_steps * config.chunk_steps))


@pytest.fixture
def health_cartpole():
    # The preset's target period (the tiny fixture's copies every 20 updates, and its Q values do diverge).
    return evaluated_at_chunk_ends(plants.small_cartpole(2_400))


def findings_of(run_dir):
    (findings,) = examine(run_dir).values()
    return {f.rule: f for f in findings}


@pytest.mark.parametrize("reward_scale", [1.0, -1.0])
def test_healthy_tiny_cartpole_has_no_finding(health_cartpole, tmp_path, reward_scale):
    train(dataclasses.replace(health_cartpole, reward_scale=reward_scale), run_dir=tmp_path)
    assert findings_of(tmp_path) == {}
    assert doctor_main([str(tmp_path)]) == 0
    assert (tmp_path / "doctor.png").stat().st_size > 10_000
    health = read_metrics(tmp_path, "health")
    learned = [r for r in health if r.get("loss") is not None]
    assert learned and {"dead_fraction/torso/dense_0", "grad_norm/q_head", "update_ratio", "optimizer_steps",
                        "batch_reward_nonzero", "env_reward_nonzero", "q_zero_fraction"} <= learned[-1].keys()
    assert learned[-1]["optimizer_steps"] == learned[-1]["updates"]


def test_relu_after_the_q_head_is_a_dead_head(health_cartpole, tmp_path):
    # Negative returns, as on most Atari games before the agent scores: the ReLU pins every Q at 0.
    negative = dataclasses.replace(health_cartpole, reward_scale=-1.0)
    network = plants.ReluAfterHead(make_network(negative, 2))
    summary = train(dataclasses.replace(negative, halt_on="error"), run_dir=tmp_path, network=network)
    assert set(findings_of(tmp_path)) == {"dead_q_head"}
    assert summary["halted"] == "dead_q_head" and summary["checkpoint"]  # --halt-on=error saved and stopped
    assert summary["env_steps"] < health_cartpole.total_steps
    assert len(read_metrics(tmp_path, "finding")) == 1  # printed and recorded once, not every chunk
    assert doctor_main([str(tmp_path)]) == 1


def test_a_reward_that_is_always_zero(health_cartpole, tmp_path):
    train(dataclasses.replace(health_cartpole, reward_scale=0.0), run_dir=tmp_path)
    found = findings_of(tmp_path)
    assert set(found) == {"reward_signal_empty"} and found["reward_signal_empty"].severity == "error"


def test_an_optimizer_reinitialised_every_update(health_cartpole, tmp_path):
    optimizer = plants.reinitialised_every_update(optax.adam(1e-3))
    train(health_cartpole, run_dir=tmp_path, optimizer=optimizer)
    assert set(findings_of(tmp_path)) == {"optimizer_reset"}


def test_a_learning_rate_large_enough_to_diverge(health_cartpole, tmp_path):
    # One-step targets without LayerNorm: the preset's 5-step returns (which bootstrap from only
    # gamma**5 of the target) and bounded features both damp the feedback loop being planted.
    diverging = dataclasses.replace(health_cartpole, learning_rate=0.05, learning_rate_end=0.05, loss="mse",
                                    target_update_every=1, normalization="none", n_step=1)
    train(diverging, run_dir=tmp_path)
    assert set(findings_of(tmp_path)) == {"q_divergence"}


def test_a_nan_in_the_batch_stops_the_run(health_cartpole, tmp_path):
    network = plants.NaNNearTheEdge(make_network(health_cartpole, 2))
    config = dataclasses.replace(health_cartpole, total_steps=20_000, checkpoint_every=400)
    summary = train(config, run_dir=tmp_path, network=network)
    assert set(findings_of(tmp_path)) == {"non_finite"}
    assert summary["halted"] == "non_finite_loss" and summary["env_steps"] < 20_000
    # The last good checkpoint is kept, and it is good: finite params, saved before the NaN.
    step = checkpoint.latest_step(tmp_path)
    assert step is not None and step < summary["env_steps"]
    loop = build_loop(config, network)
    agents, _, _ = checkpoint.restore_state(tmp_path, loop.abstract_agents(agent_keys(config)))
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(agents.params))


def test_an_episode_length_exploit(tmp_path):
    # Time limit far below a Pong game's length: every episode ends at the cap, none really ends.
    # The rule judges the learned policy, so only once learning has started (at 1,600 here).
    capped = dataclasses.replace(acting_only("Pong", max_episode_steps=100), learning_starts=1_600)
    train(capped, run_dir=tmp_path, network=ConstantQ(num_actions=6))
    assert min(f.env_steps for f in examine(tmp_path)[0]) > 1_600
    assert set(findings_of(tmp_path)) == {"episode_length_exploit"}


@pytest.mark.parametrize("episodic_life", [False, True])
def test_life_loss_not_terminal_on_breakout(tmp_path, episodic_life):
    train(acting_only("Breakout", episodic_life=episodic_life, max_episode_steps=400), run_dir=tmp_path,
          network=ConstantQ(num_actions=4))
    found = set(findings_of(tmp_path))
    assert found == (set() if episodic_life else {"life_loss_not_terminal"})


def test_doctor_reads_a_run_without_health_rows(tmp_path):
    import json

    (tmp_path / "config.toml").write_text(presets.to_toml(presets.preset("Breakout")))
    rows = [{"kind": "train", "env_steps": 1000, "seed": 0, "epsilon": 1.0, "loss": None, "learning_rate": None},
            {"kind": "eval", "env_steps": 1000, "seed": 0, "eval_return_mean": 1.5, "eval_return_std": 0.5,
             "eval_episodes": 2}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert doctor_main([str(tmp_path)]) == 0
    assert (tmp_path / "doctor.png").exists()
    assert doctor_main([str(tmp_path / "missing")]) == 2


def test_doctor_on_several_seeds_names_each_rule_once_gives_each_seed_a_verdict_and_the_next_step(tmp_path):
    import json

    (tmp_path / "config.toml").write_text(presets.to_toml(dataclasses.replace(presets.preset("CartPole"), num_seeds=3)))
    rows = []
    for seed in (0, 1, 2):
        for i in range(1, 8):
            zero = seed > 0 and i > 2  # seeds 1 and 2: the batches stop holding any reward
            rows.append({"kind": "health", "env_steps": 1000 * i, "seed": seed, "updates": 500 * i,
                         "batch_reward_nonzero": 0.0 if zero else 1.0, "env_reward_nonzero": 1.0})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = []
    assert report(tmp_path, out=lines.append) == 1
    assert lines[0].startswith("2 of 3 seeds (seed 1, 2): [error] reward_signal_empty (env step 3,000)")
    assert lines[1:4] == ["seed 0: healthy", "seed 1: 1 error(s), 0 warning(s): reward_signal_empty",
                          "seed 2: 1 error(s), 0 warning(s): reward_signal_empty"]
    assert lines[-1].startswith("next: check the reward path") and lines[-1].endswith("(reward_signal_empty)")


@pytest.mark.parametrize("redo_every", [0, 25])
def test_redo_revives_a_collapsed_layer(health_cartpole, tmp_path, redo_every):
    config = dataclasses.replace(health_cartpole, normalization="none", redo_every=redo_every)
    network = QNetwork(torso=plants.CollapsedMLPTorso(hidden_sizes=(32, 32)), num_actions=2)
    train(config, run_dir=tmp_path, network=network)
    last = read_metrics(tmp_path, "health")[-1]
    recycled = sum(row.get("neurons_recycled") or 0 for row in read_metrics(tmp_path, "train"))
    if not redo_every:  # the planted collapse stays, and is named
        assert last["dormant_fraction/torso/dense_1"] == 1.0 and recycled == 0
        assert "dead_layer" in findings_of(tmp_path)
    else:  # the first recycling brings all 32 units back; they stay alive
        assert recycled >= 32 and last["dormant_fraction/torso/dense_1"] < 0.5
        assert "dead_layer" not in findings_of(tmp_path)


@pytest.mark.parametrize("rule", ["exploding_gradients", "vanishing_gradients", "epsilon_floor_before_learning",
                                  "q_overestimation", "plasticity_loss", "policy_churn", "no_learning_progress",
                                  "replay_collapse"])
def test_a_planted_failure_is_named_by_its_rule(tmp_path, rule):
    """The plants of `benchmarks/plants.py` (the detection benchmark's) at their shortest: the rule
    fires, and nothing else does — except that Q values pushed up also kill units of the second
    layer on the way (their inflated TD targets), which `plasticity_loss` rightly names too."""
    config, network, optimizer = plants.plant(rule).build(2_400)
    train(evaluated_at_chunk_ends(config), run_dir=tmp_path, network=network, optimizer=optimizer)
    also = {"q_overestimation": {"plasticity_loss"}}.get(rule, set())
    assert set(findings_of(tmp_path)) == {rule} | also


def test_a_conv_layer_collapsed_on_breakout_is_a_dead_layer(tmp_path):
    config, network, _ = plants.plant("dead_layer", game="Breakout").build(0)
    # One chunk of learning, at a quarter of the plant's update rate: at the suite's unoptimized
    # compilation the Nature CNN's updates are this test's cost, and the rule reads one health row
    # per chunk, whether 50 updates made it or 200.
    config = dataclasses.replace(config, total_steps=2_400, eval_every=2_400, train_every=16)
    train(config, run_dir=tmp_path, network=network)
    found = findings_of(tmp_path)
    assert set(found) == {"dead_layer"} and "torso/conv_1" in found["dead_layer"].evidence


def test_a_short_pong_run_through_the_nips_torso_reports_each_of_its_layers(tmp_path):
    # 100 updates (one per 8 env steps, from env step 1,600), the last of them a ReDo recycle.
    config = dataclasses.replace(plants.small_atari("Pong", total_steps=2_400), torso="nips_cnn", train_every=8,
                                 health_every=10, redo_every=100)
    summary = train(config, run_dir=tmp_path)
    learned = [r for r in read_metrics(tmp_path, "health") if r.get("loss") is not None]
    assert learned and summary["env_steps"] == 2_400 and np.isfinite(learned[-1]["loss"])
    layers = {key.split("/", 1)[1] for key in learned[-1] if key.startswith("dead_fraction/")}
    assert {"torso/conv_0", "torso/conv_1", "torso/dense_0"} <= layers and "torso/conv_2" not in layers
    assert {"grad_norm/torso/Conv_1", "grad_norm/torso/Dense_0", "grad_norm/q_head"} <= learned[-1].keys()
