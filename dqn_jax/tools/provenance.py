"""Provenance: the machine and the library versions that every benchmark result records beside its numbers."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

PACKAGES = ("jax", "jaxlib", "flax", "optax", "chex", "envpool", "numpy")


def first_processor(cpuinfo: str | None = None) -> dict[str, str]:
    """Returns the first processor's block of `/proc/cpuinfo` (or of the text `cpuinfo`) as
    `{field: value}`; `{}` where there is none (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if not key:
            break  # the blocks of the other processors repeat it
        fields.setdefault(key, value.strip())
    return fields


def cpu_model(cpuinfo: str | None = None) -> str:
    """Returns the CPU's model name (Linux), else the platform's processor string."""
    return first_processor(cpuinfo).get("model name") or platform.processor() or "unknown"


def cpu_features(cpuinfo: str | None = None) -> dict:
    """Returns what tells two CPUs of one model name apart (Linux; `{}` elsewhere): `{"family",
    "model", "avx2", "avx512f"}` from `/proc/cpuinfo` (or the text `cpuinfo`). Cloud machines name
    themselves only "AMD EPYC", and the ones without AVX-512 run the Nature CNN slower
    (docs/results.md, "Pong on 2 CPU cores")."""
    fields = first_processor(cpuinfo)
    if "flags" not in fields:
        return {}
    flags = set(fields["flags"].split())
    family, model = fields.get("cpu family", ""), fields.get("model", "")
    return {"family": int(family) if family.isdigit() else None, "model": int(model) if model.isdigit() else None,
            "avx2": "avx2" in flags, "avx512f": "avx512f" in flags}


def machine() -> dict:
    """Returns the machine: CPU model and features, core count, memory, accelerator (if JAX sees one)."""
    import jax

    devices = jax.devices()
    memory_gb = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gb = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "platform": platform.platform(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [d.device_kind for d in devices],
    }


def versions() -> dict:
    """Returns the Python version and the versions of the packages that matter for speed."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    if os.environ.get("DQN_JAX_COMMIT"):  # a copy of the tree without .git (the GPU machine's)
        found["dqn_jax_commit"] = os.environ["DQN_JAX_COMMIT"]
        return found
    here = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=here).stdout.strip()
        # With uncommitted changes (results aside), the figures are not the commit's: say so.
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".", ":!benchmarks/results"],
                                 cwd=here.parent).returncode != 0
        found["dqn_jax_commit"] = commit + ("+uncommitted" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        found["dqn_jax_commit"] = None
    return found


def write_result(path: Path | str, payload: dict, quiet: bool = False) -> None:
    """Writes `payload` with `machine`, `versions` and `date` added, as indented JSON."""
    payload = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": machine(), "versions": versions(), **payload}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    if not quiet:
        print(f"wrote {path}")
