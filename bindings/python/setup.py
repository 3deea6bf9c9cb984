"""Bundles libvpipe.so into the wheel when one is found at build time.

Everything else is in pyproject.toml. Where the library comes from, first found wins:

1. ``$VPIPE_LIBRARY`` (it must exist when set: a typo should fail the build, not ship a
   wheel without the library);
2. ``vpipe/libvpipe.so`` already copied into the package directory;
3. the repository's ``.build/release/libvpipe.so`` (``swift build -c release``).

With none of them the wheel is the pure-Python binding, which finds the library at run time
(``vpipe._native``). With a library the wheel is tagged ``py3-none-<platform>``: the library
is native code but does not depend on the Python version.
"""

import os
import shutil
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1: the wheel package provides it
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
LIBRARY = "libvpipe.so"


def found_library():
    env = os.environ.get("VPIPE_LIBRARY")
    if env:
        if not Path(env).is_file():
            raise SystemExit(f"VPIPE_LIBRARY={env}: no such file")
        return Path(env)
    for candidate in (HERE / "vpipe" / LIBRARY, HERE.parents[1] / ".build" / "release" / LIBRARY):
        if candidate.is_file():
            return candidate
    return None


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        library = found_library()
        if library is not None:
            target = Path(self.build_lib) / "vpipe" / LIBRARY
            if library.resolve() != target.resolve():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(library, target)
            print(f"vpipe: bundling {library}")


class MaybeNativeDistribution(Distribution):
    def has_ext_modules(self):
        # A bundled library makes the wheel platform-specific (files go to platlib).
        return found_library() is not None


class PlatformWheel(bdist_wheel):
    def get_tag(self):
        python, abi, platform = super().get_tag()
        return ("py3", "none", platform) if found_library() is not None else (python, abi, platform)


setup(distclass=MaybeNativeDistribution, cmdclass={"build_py": BuildWithLibrary, "bdist_wheel": PlatformWheel})
