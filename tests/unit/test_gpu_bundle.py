"""The device bundle's wheel slimming: only the kept files, and a RECORD that matches them."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import zipfile

from helpers import load_benchmark


def test_slim_wheel_keeps_only_the_named_files_with_a_true_record(tmp_path):
    bundle = load_benchmark("gpu_bundle")
    source = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(source, "w") as wheel:
        for name, data in {"pkg/__init__.py": b"import pkg.atari\n", "pkg/entry.py": b"import pkg.mujoco\n",
                           "pkg/atari/__init__.py": b"A = 1\n", "pkg/mujoco/big.so": b"\0" * 1000,
                           "pkg-1.0.dist-info/METADATA": b"Name: pkg\n",
                           "pkg-1.0.dist-info/RECORD": b"stale\n"}.items():
            wheel.writestr(name, data)
    target = tmp_path / "slim" / source.name
    target.parent.mkdir()
    bundle.slim_wheel(source, target, ("pkg/__init__.py", "pkg/entry.py", "pkg/atari/"),
                      {"pkg/entry.py": b"import pkg.atari\n"})
    with zipfile.ZipFile(target) as wheel:
        names = set(wheel.namelist())
        assert names == {"pkg/__init__.py", "pkg/entry.py", "pkg/atari/__init__.py", "pkg-1.0.dist-info/METADATA",
                         "pkg-1.0.dist-info/RECORD"}
        assert wheel.read("pkg/entry.py") == b"import pkg.atari\n"
        record = list(csv.reader(io.StringIO(wheel.read("pkg-1.0.dist-info/RECORD").decode())))
        for path, digest, size in record:
            if path.endswith("RECORD"):
                assert digest == size == ""
                continue
            data = wheel.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expected}" and int(size) == len(data)
        assert {row[0] for row in record} == names


def test_envpool_entry_registers_only_the_kept_families():
    bundle = load_benchmark("gpu_bundle")
    imports = [line for line in bundle.envpool_entry().decode().splitlines() if line.startswith("import")]
    assert imports == ["import envpool.atari.registration  # noqa: F401",
                       "import envpool.classic_control.registration  # noqa: F401"]
    assert all(prefix.startswith("envpool/") for prefix in bundle.ENVPOOL_KEEP)
