"""Splitting work between processes: the sweep's shares and train's process-group flags."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from dqn_jax.config import ConfigError
from dqn_jax.loop.distributed import ProcessGroup, localhost_group_flags, rendezvous, split_flags
from dqn_jax.tools import sweep


def test_sweep_shares_from_the_flag_or_slurm():
    assert sweep.parse_share("1/3", environ={}) == (1, 3)
    assert sweep.parse_share(None, environ={}) == (0, 1)
    assert sweep.parse_share(None, environ={"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}) == (2, 4)
    assert sweep.parse_share(None, environ={"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == (0, 1)
    for bad in ("3/3", "x", "1/0", "-1/2", "1/2/3"):
        with pytest.raises(ConfigError, match="expected I/N"):
            sweep.parse_share(bad, environ={})


def test_process_group_flags_are_split_from_the_run_flags():
    flags = ["--game=Pong", "--coordinator-address=10.0.0.1:1234", "--num-processes=4", "--process-id=3",
             "--seed=2"]
    assert split_flags(flags) == (ProcessGroup("10.0.0.1:1234", 4, 3), ["--game=Pong", "--seed=2"])
    assert split_flags(["--distributed", "--seed=2"]) == (ProcessGroup(), ["--seed=2"])
    assert split_flags(["--seed=2"]) == (None, ["--seed=2"])
    with pytest.raises(ConfigError, match="go together"):
        split_flags(["--num-processes=2", "--process-id=0"])
    with pytest.raises(ConfigError, match="must be in 0..1"):
        split_flags(["--coordinator-address=h:1", "--num-processes=2", "--process-id=2"])
    with pytest.raises(ConfigError, match="whole numbers"):
        split_flags(["--coordinator-address=h:1", "--num-processes=two", "--process-id=0"])
    assert split_flags(["--distributed", "--distributed-timeout=30"])[0] == ProcessGroup(timeout_s=30.0)
    with pytest.raises(ConfigError, match="--distributed-timeout=soon: give the seconds"):
        split_flags(["--distributed", "--distributed-timeout=soon"])


def test_a_sweep_refuses_shares_together_with_a_process_group(tmp_path, capsys):
    assert sweep.main(["--games=CartPole", f"--out={tmp_path}", "--share=0/2", "--distributed"]) == 2
    assert capsys.readouterr().err.startswith("error: --share splits the games between processes")


def test_localhost_group_flags_make_one_group_that_split_flags_reads():
    flags = localhost_group_flags(3)
    groups = [split_flags(["--seed=1", *place])[0] for place in flags]
    assert [g.process_id for g in groups] == [0, 1, 2] and {g.num_processes for g in groups} == {3}
    (address,) = {g.coordinator_address for g in groups}
    assert address.startswith("localhost:") and int(address.split(":")[1]) > 0


def _groups(num_processes: int, timeout_s: float) -> list[ProcessGroup]:
    return [dataclasses.replace(split_flags(place)[0], timeout_s=timeout_s)
            for place in localhost_group_flags(num_processes)]


def test_the_processes_of_a_group_meet_whichever_starts_first():
    groups = _groups(3, timeout_s=20)
    errors = []

    def meet(group, delay):
        time.sleep(delay)
        try:
            rendezvous(group)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=meet, args=(g, d)) for g, d in zip(groups, (0.5, 0.0, 1.0), strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and not any(t.is_alive() for t in threads)


def test_a_group_that_cannot_form_says_who_is_missing_within_its_timeout():
    coordinator, _, late = _groups(3, timeout_s=1.5)
    joined = threading.Thread(target=lambda: pytest.raises(ConfigError, rendezvous, late))
    joined.start()
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"did not form within 1.5 s: process 1 of 3 never came"):
        rendezvous(coordinator)
    assert time.monotonic() - start < 5
    joined.join(10)
    alone = _groups(2, timeout_s=1.0)[1]
    with pytest.raises(ConfigError, match=r"process 1 of 2 could not meet process 0 at localhost:\d+ within 1 s"):
        rendezvous(alone)
