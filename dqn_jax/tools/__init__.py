"""Tools over run directories: reports, sweeps, reproducibility, the doctor and provenance.

Owns the score tables (`report`) and the comparison of two configurations (`compare`), with the
statistics of `scores`; sweeps of games × seeds (`sweep`), bit-reproducibility checks (`repro`), the doctor's
verdict on a run (`doctor`) and the provenance a benchmark result records (`provenance`).

May import: every layer below (the base, `agent`, `loop`, `health`, `run`).
"""
