"""How the binding finds and checks libvpipe.so.

Loading is lazy and happens once per process, so each case runs in a fresh interpreter
(a subprocess) with its own environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Optional

import pytest

import vpipe
from vpipe import _native

BINDING_ROOT = Path(__file__).resolve().parents[1]  # bindings/python


def run_python(code: str, library: Optional[str], pythonpath: Path = BINDING_ROOT) -> subprocess.CompletedProcess:
    env: Dict[str, str] = {k: v for k, v in os.environ.items() if k not in ("VPIPE_LIBRARY", "PYTHONPATH")}
    env["PYTHONPATH"] = str(pythonpath)
    if library is not None:
        env["VPIPE_LIBRARY"] = library
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=60)


PROBE = """
    import vpipe
    try:
        print("loaded", vpipe.library_path(), vpipe.version())
    except vpipe.VPipeError as e:
        print("error", type(e).__name__, e.status, e.status_name)
        print(e.message)
"""


def probe(library: Optional[str], pythonpath: Path = BINDING_ROOT) -> str:
    result = run_python(PROBE, library, pythonpath)
    assert result.returncode == 0, f"expected a clean exit, got {result.returncode}: {result.stderr}"
    return result.stdout


def test_missing_library_names_the_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere" / "libvpipe.so")
    out = probe(missing)
    assert out.startswith("error LoadError -1 LOAD_ERROR"), f"expected a LoadError, got {out!r}"
    assert missing in out, f"expected the message to name {missing}, got {out!r}"
    assert "VPIPE_LIBRARY" in out, f"expected the message to name VPIPE_LIBRARY, got {out!r}"


def test_import_does_not_load() -> None:
    result = run_python("import vpipe, vpipe.pb; print(vpipe.pb.PLANNER_GPIPE, vpipe._native._library)",
                        "/nonexistent/libvpipe.so")
    assert result.returncode == 0 and result.stdout.split() == ["6", "None"], \
        f"expected import to succeed without loading, got rc={result.returncode} {result.stdout!r} {result.stderr!r}"


def test_not_a_library(tmp_path: Path) -> None:
    fake = tmp_path / "libvpipe.so"
    fake.write_text("not an ELF file\n")
    out = probe(str(fake))
    assert out.startswith("error LoadError"), f"expected a LoadError, got {out!r}"
    assert str(fake) in out, f"expected the message to name {fake}, got {out!r}"


def test_env_var_wins() -> None:
    real = vpipe.library_path()
    out = probe(real)
    assert out.split() == ["loaded", real, "0.1.0"], f"expected {real} to load, got {out!r}"


def test_bundled_library_is_found(tmp_path: Path) -> None:
    """A libvpipe.so copied into the package directory is used when VPIPE_LIBRARY is unset."""
    package = tmp_path / "site" / "vpipe"
    shutil.copytree(BINDING_ROOT / "vpipe", package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(vpipe.library_path(), package / "libvpipe.so")
    out = probe(None, tmp_path / "site")
    assert out.split() == ["loaded", str(package / "libvpipe.so"), "0.1.0"], f"expected the bundled library, got {out!r}"


def test_nothing_found_lists_the_places_tried(tmp_path: Path) -> None:
    package = tmp_path / "a" / "bindings" / "python" / "vpipe"  # as in a checkout whose build is gone
    shutil.copytree(BINDING_ROOT / "vpipe", package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    out = probe(None, package.parent)
    if out.startswith("loaded"):
        pytest.skip(f"a libvpipe is installed on the system library path: {out}")
    assert out.startswith("error LoadError"), f"expected a LoadError, got {out!r}"
    for place in (package / "libvpipe.so", tmp_path / "a" / ".build" / "release" / "libvpipe.so"):
        assert str(place) in out, f"expected the message to list {place}, got {out!r}"


def test_search_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VPIPE_LIBRARY", raising=False)
    paths = [path for _, path in _native.candidates()]
    repo = BINDING_ROOT.parents[1]
    want = [str(BINDING_ROOT / "vpipe" / "libvpipe.so"), str(repo / ".build" / "release" / "libvpipe.so")]
    assert paths[:2] == want, f"expected the search to start with {want}, got {paths}"
    monkeypatch.setenv("VPIPE_LIBRARY", "/x/libvpipe.so")
    assert [p for _, p in _native.candidates()] == ["/x/libvpipe.so"], "with VPIPE_LIBRARY set, only it is tried"


FAKE_C = """
#include <stdint.h>
#include <stddef.h>
uint32_t vp_abi_version(void) { return ABI; }
const char *vp_version(void) { return "9.9.9"; }
#ifndef PARTIAL
const char *vp_last_error(void) { return ""; }
void vp_bytes_free(void *b) { (void)b; }
int32_t vp_plan(const uint8_t *r, size_t n, void *o) { (void)r; (void)n; (void)o; return 6; }
int32_t vp_evaluate(const uint8_t *r, size_t n, void *o) { (void)r; (void)n; (void)o; return 6; }
#endif
"""


def build_fake(tmp_path: Path, *flags: str) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler to build a fake libvpipe")
    src = tmp_path / "fake.c"
    src.write_text(FAKE_C)
    lib = tmp_path / "libfake.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src), *flags], check=True)
    return lib


def test_abi_mismatch(tmp_path: Path) -> None:
    lib = build_fake(tmp_path, "-DABI=2")
    out = probe(str(lib))
    assert out.startswith("error LoadError"), f"expected a LoadError, got {out!r}"
    for needle in (str(lib), "ABI version is 2", "needs 1"):
        assert needle in out, f"expected {needle!r} in {out!r}"


def test_missing_symbols(tmp_path: Path) -> None:
    lib = build_fake(tmp_path, "-DABI=1", "-DPARTIAL")
    out = probe(str(lib))
    assert out.startswith("error LoadError") and str(lib) in out and "missing symbol" in out, \
        f"expected a LoadError naming {lib} and the missing symbol, got {out!r}"
