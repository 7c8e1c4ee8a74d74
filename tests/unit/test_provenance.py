"""Provenance: what a benchmark result records of the machine beside its numbers."""

from __future__ import annotations

import platform

from dqn_jax.tools.provenance import cpu_features, cpu_model

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2 sha_ni

processor\t: 1
cpu family\t: 26
flags\t\t: fpu avx2 avx512f
"""


def test_cpu_features_tell_apart_two_cpus_that_share_a_model_name():
    assert cpu_features(ZEN3) == {"family": 25, "model": 1, "avx2": True, "avx512f": False}  # the first block only
    zen4 = ZEN3.replace("sha_ni", "sha_ni avx512f avx512bw").replace("model\t\t: 1", "model\t\t: 17")
    assert cpu_features(zen4) == {"family": 25, "model": 17, "avx2": True, "avx512f": True}


def test_cpu_features_are_empty_where_the_text_has_no_flags():
    assert cpu_features("") == {} and cpu_features("processor\t: 0\nmodel name\t: Apple M2\n") == {}


def test_cpu_model_is_the_first_processors_name_else_the_platforms():
    assert cpu_model(ZEN3) == "AMD EPYC"
    assert cpu_model("processor\t: 0\nflags\t: fpu\n") == (platform.processor() or "unknown")
