"""`benchmarks/update_cost.py`'s settings from the command line: `--set` and `--variant`."""

from __future__ import annotations

import pytest
from helpers import load_benchmark, tiny_cartpole_config

update_cost = load_benchmark("update_cost")


def test_a_variant_is_parsed_as_toml_and_checked_as_a_config():
    config = tiny_cartpole_config()
    assert update_cost.parse_variant("bootstrap_epsilon=0.05", config) == ("bootstrap_epsilon", 0.05)
    assert update_cost.parse_variant("dueling=true", config) == ("dueling", True)
    assert update_cost.parse_variant("loss=mse", config) == ("loss", "mse")  # a bare word: a string
    assert update_cost.parse_variant("batch_size=64", config) == ("batch_size", 64)


@pytest.mark.parametrize("text, says", [("nope=1", "unknown config field 'nope'"), ("dueling", "is not FIELD=VALUE"),
                                        ("dueling=1", "write true or false"),
                                        ("bootstrap_epsilon=2", "must be a probability")])
def test_a_bad_variant_is_one_error_line_naming_the_flag(text, says):
    with pytest.raises(SystemExit) as exit_:
        update_cost.parse_variant(text, tiny_cartpole_config(), "--set")
    message = str(exit_.value)
    assert message.startswith("error: --set") and says in message and "\n" not in message, message


def test_an_xla_option_is_read_as_toml_and_a_bad_one_is_one_error_line():
    assert update_cost.parse_xla_option("xla_cpu_use_onednn=true") == ("xla_cpu_use_onednn", True)
    assert update_cost.parse_xla_option("xla_cpu_prefer_vector_width=512") == ("xla_cpu_prefer_vector_width", 512)
    assert update_cost.parse_xla_option("xla_cpu_max_isa=AVX2") == ("xla_cpu_max_isa", "AVX2")
    for text in ("use_onednn=true", "xla_cpu_use_onednn", "xla_cpu_use_onednn="):
        with pytest.raises(SystemExit) as exit_:
            update_cost.parse_xla_option(text)
        assert str(exit_.value).startswith("error: --xla-option") and "\n" not in str(exit_.value)


def test_an_option_xla_refuses_is_one_error_line_naming_the_flag():
    import jax
    import jax.numpy as jnp

    scan = jax.jit(lambda x: x + 1)
    compiled = update_cost.compiled_with(scan, (jnp.ones(3),), {"xla_cpu_prefer_vector_width": 512}, "--xla-option a")
    assert (compiled(jnp.ones(3)) == 2).all()
    with pytest.raises(SystemExit) as exit_:
        update_cost.compiled_with(scan, (jnp.ones(3),), {"xla_cpu_max_isa": 7}, "--xla-option xla_cpu_max_isa=7")
    message = str(exit_.value)
    assert message.startswith("error: --xla-option xla_cpu_max_isa=7: ") and "\n" not in message, message


def test_a_variant_that_adds_state_gets_it_fresh_and_keeps_the_rest(tiny_cartpole):
    import dataclasses

    import chex
    import jax

    from dqn_jax.loop.loop import agent_keys, build_loop

    agents = build_loop(tiny_cartpole).init(agent_keys(tiny_cartpole)).agents
    averaging = dataclasses.replace(tiny_cartpole, eval_average_updates=100, prioritized_replay=True)
    fresh = build_loop(averaging).init(agent_keys(averaging)).agents
    varied = update_cost.with_added_state(agents, fresh)
    chex.assert_trees_all_equal(varied.average_params, fresh.average_params)
    assert varied.priorities is None and varied.replay is agents.replay
    assert jax.tree.structure(varied.replace(average_params=None)) == jax.tree.structure(agents)
