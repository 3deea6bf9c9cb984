"""The wheel: ``pip wheel ./bindings/python`` bundles libvpipe.so when one is given.

``python -m build`` does the same through the same setup.py hook; pip is used here because
it is always installed. Each build runs on a copy of the binding, so the checkout's own
build outputs cannot leak into the wheel.
"""

from __future__ import annotations

import json
import os
import re
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


# What a manylinux wheel may leave to the system (the glibc family, the C++ runtime).
SYSTEM_LIBRARIES = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
                    "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "libstdc++.so.6", "libgcc_s.so.1"}


def needed(path: Path) -> list:
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split("[", 1)[1].split("]", 1)[0] for line in out.splitlines() if "(NEEDED)" in line]


def test_repaired_wheel_needs_only_glibc_and_the_cpp_runtime(tmp_path: Path) -> None:
    """``make wheel``'s recipe: the wheel, then ``auditwheel repair``, which copies every
    other library libvpipe.so needs (OpenBLAS, protobuf-c, ...) into ``vpipe.libs/`` and
    points the RPATH there. Installed into a fresh virtual environment, it loads and plans
    with nothing from the system but glibc and the C++ runtime."""
    if shutil.which("auditwheel") is None or shutil.which("patchelf") is None or shutil.which("readelf") is None:
        pytest.skip("auditwheel, patchelf and readelf are needed (make deps installs them)")
    wheel = build_wheel(tmp_path, os.path.abspath(vpipe.library_path()))
    repaired = tmp_path / "repaired"
    plat = subprocess.run(["auditwheel", "show", str(wheel)], capture_output=True, text=True, timeout=300)
    assert plat.returncode == 0, plat.stderr
    tag = plat.stdout.split('platform tag to "', 1)[1].split('"', 1)[0] if 'platform tag to "' in plat.stdout \
        else plat.stdout.split('"')[1]
    result = subprocess.run(["auditwheel", "repair", "--plat", tag, "-w", str(repaired), str(wheel)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"auditwheel repair failed: {result.stderr[-2000:]}"
    wheels = list(repaired.glob("vpipe-*manylinux*.whl"))
    assert len(wheels) == 1, f"expected one manylinux wheel, got {list(repaired.iterdir())}"
    names = zipfile.ZipFile(wheels[0]).namelist()
    bundled = [n for n in names if n.startswith("vpipe.libs/")]
    for want in ("libopenblas", "libprotobuf-c"):
        assert any(want in n for n in bundled), f"expected {want} in vpipe.libs/, got {bundled}"
    # Open MPI is loaded at run time by the first TRANSPORT_MPI session, never linked.
    assert not any("libmpi" in n or "libopen-" in n for n in bundled), f"Open MPI bundled: {bundled}"
    # auditwheel's own view: the libraries the wheel takes from the system are glibc and the
    # C++ runtime only (the rest are its bundled copies, renamed with a hash).
    shown = subprocess.run(["auditwheel", "show", str(wheels[0])], capture_output=True, text=True, timeout=300)
    text = " ".join(shown.stdout.split())
    assert shown.returncode == 0 and "is consistent with the following platform tag" in text, shown.stdout
    from_system = [n for n in re.findall(r"(\S+\.so[.\d]*) with versions", text)
                   if not any(n == Path(b).name for b in bundled)]
    assert set(from_system) <= SYSTEM_LIBRARIES, \
        f"auditwheel show: the repaired wheel takes {sorted(set(from_system) - SYSTEM_LIBRARIES)} from the system:\n{shown.stdout}"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # Without the test run's PYTHONPATH: pip would otherwise find the source tree's vpipe (with
    # an egg-info left by `make wheel`) "already satisfied" and install nothing.
    env = {k: v for k, v in os.environ.items() if k not in ("VPIPE_LIBRARY", "PYTHONPATH", "LD_LIBRARY_PATH")}
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                              "--disable-pip-version-check", str(wheels[0])], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    code = ("import vpipe, json; from vpipe import pb\n"
            "r = pb.PlanRequest(); l = r.model.layers.add(name='a'); l.profile.fwd_seconds = 1e-3\n"
            "l.profile.bwd_seconds = 2e-3; l.profile.output_bytes = 4\n"
            "r.cluster.devices.add(memory_bytes=1 << 30, host_bandwidth=1e9); r.options.micro_batches = 1\n"
            "print(json.dumps([vpipe.library_path(), len(vpipe.plan(r).stages)]))")
    run = subprocess.run([str(python), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    path, stages = json.loads(run.stdout)
    assert path.startswith(str(venv)) and stages == 1, f"expected the venv's library to plan, got {run.stdout}"

    # Every library the installed one loads (directly or through a bundled one) is bundled
    # or is glibc / the C++ runtime.
    site = Path(path).parent.parent
    libraries = [Path(path)] + sorted((site / "vpipe.libs").iterdir())
    own = {p.name for p in libraries}
    for lib in libraries:
        outside = [n for n in needed(lib) if n not in own and n not in SYSTEM_LIBRARIES]
        assert not outside, f"{lib.name} needs {outside} from the system"
    # What the dynamic loader really resolves: every library from the wheel, but glibc and
    # the C++ runtime.
    ldd = subprocess.run(["ldd", path], capture_output=True, text=True, env=env).stdout
    for line in ldd.splitlines():
        if "=>" not in line:
            continue
        name, target = (part.strip() for part in line.split("=>", 1))
        assert "vpipe.libs" in target or name in SYSTEM_LIBRARIES, \
            f"ldd resolves {line.strip()} outside the wheel (only glibc and the C++ runtime may be)"

    # The wheel's library asked for TRANSPORT_MPI without Open MPI: a clear error, no crash.
    mpi_code = ("import vpipe; from vpipe import pb\n"
                "c = pb.SessionConfig(); c.model.layers.add(name='fc', linear=pb.Linear(in_features=2, out_features=2))\n"
                "c.model.layers.add(name='loss', softmax_cross_entropy=pb.SoftmaxCrossEntropy())\n"
                "c.cluster.devices.add(memory_bytes=1 << 26, host_bandwidth=1e9)\n"
                "c.training.micro_batches = 1; c.training.sgd.lr = 0.1; c.training.transport = pb.TRANSPORT_MPI\n"
                "try:\n    vpipe.Session(c)\nexcept vpipe.VPipeError as e:\n    print(e)\n")
    run = subprocess.run([str(python), "-c", mpi_code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**env, "VPIPE_MPI_LIBRARY": str(tmp_path / "no-such-libmpi.so.40")})
    assert run.returncode == 0 and "libmpi.so.40" in run.stdout and "libopenmpi3" in run.stdout, \
        f"expected a VPipeError naming libmpi.so.40 and libopenmpi3, got {run.stdout!r} {run.stderr[-2000:]!r}"
