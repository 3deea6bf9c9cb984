"""The wheel: ``pip wheel ./bindings/python`` bundles libvpipe.so when one is given.

``python -m build`` does the same through the same setup.py hook; pip is used here because
it is always installed. Each build runs on a copy of the binding, so the checkout's own
build outputs cannot leak into the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, Optional

import pytest

import vpipe

BINDING_ROOT = Path(__file__).resolve().parents[1]  # bindings/python


def build_wheel(tmp_path: Path, library: Optional[str], tool: str = "pip") -> Path:
    source = tmp_path / "src" / "bindings" / "python"  # no .build/release two levels up
    shutil.copytree(BINDING_ROOT, source, ignore=shutil.ignore_patterns(
        "__pycache__", "*.so", "build", "dist", "*.egg-info", "tests", ".pytest_cache"))
    env: Dict[str, str] = {k: v for k, v in os.environ.items() if k != "VPIPE_LIBRARY"}
    if library:
        env["VPIPE_LIBRARY"] = library
    out = tmp_path / "wheels"
    command = ([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "--disable-pip-version-check", "-q", "-w", str(out), str(source)] if tool == "pip" else
               [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)])
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip(f"cannot build wheels here: {result.stderr.strip()[-200:]}")
    assert result.returncode == 0, f"pip wheel failed: {result.stderr}"
    wheels = list(out.glob("vpipe-*.whl"))
    assert len(wheels) == 1, f"expected one wheel, got {wheels}"
    return wheels[0]


def test_wheel_bundles_the_library(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, os.path.abspath(vpipe.library_path()))
    assert wheel.name.startswith("vpipe-0.1.0-py3-none-linux"), f"expected a py3-none-<platform> wheel, got {wheel.name}"
    names = zipfile.ZipFile(wheel).namelist()
    for want in ("vpipe/libvpipe.so", "vpipe/session.py", "vpipe/__main__.py", "vpipe/vpipe_pb2.py"):
        assert want in names, f"expected {want} in the wheel, got {names}"
    # Installed, it loads its own library with VPIPE_LIBRARY unset.
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    env = {k: v for k, v in os.environ.items() if k not in ("VPIPE_LIBRARY", "PYTHONPATH")}
    env["PYTHONPATH"] = str(target)
    result = subprocess.run([sys.executable, "-c", "import vpipe; print(vpipe.library_path(), vpipe.version())"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(target / "vpipe" / "libvpipe.so"), "0.1.0"], f"got {result.stdout!r}"


def test_python_m_build_makes_the_same_wheel(tmp_path: Path) -> None:
    """``python -m build`` (installed by ``make deps``) goes through the same hook."""
    pytest.importorskip("build", reason="python -m build needs the 'build' package (make deps installs it)")
    wheel = build_wheel(tmp_path, os.path.abspath(vpipe.library_path()), tool="build")
    assert wheel.name.startswith("vpipe-0.1.0-py3-none-linux"), f"got {wheel.name}"
    assert "vpipe/libvpipe.so" in zipfile.ZipFile(wheel).namelist()


def test_wheel_without_a_library_is_pure(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, None)
    assert wheel.name == "vpipe-0.1.0-py3-none-any.whl", f"expected a pure wheel, got {wheel.name}"
    assert "vpipe/libvpipe.so" not in zipfile.ZipFile(wheel).namelist()
    metadata = zipfile.ZipFile(wheel).read("vpipe-0.1.0.dist-info/METADATA").decode()
    assert "Requires-Dist: numpy" in metadata, f"numpy must be a dependency:\n{metadata}"
