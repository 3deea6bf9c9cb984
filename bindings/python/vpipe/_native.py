"""Finding, loading and calling libvpipe.so through ctypes (internal).

Why ctypes and not a compiled extension: the library's ABI (include/vpipe.h) is a handful of
plain C functions that take and return protobuf bytes, so a compiled module would add a
build step for each Python version and nothing else. This module owns everything that
touches C: the search for the library, the ABI check, the function signatures, the
ownership of returned buffers and the translation of statuses into exceptions. The public
surface lives in ``vpipe/__init__.py``.

Where the library is looked for, in this order (the first that exists wins):

1. ``$VPIPE_LIBRARY``, if set and non-empty: exactly that path, nothing else is tried; a
   path that does not load is an error naming it.
2. ``libvpipe.so`` inside this package's directory (a wheel that bundles the library).
3. The repository's build outputs, for a source checkout: ``<repo>/.build/release`` then
   ``<repo>/.build/debug``, where ``<repo>`` is three levels above this package
   (``bindings/python/vpipe`` -> ``<repo>``).
4. ``ctypes.util.find_library("vpipe")`` (the system's library search path).

The library is loaded on first use, not on import, so ``import vpipe`` always works and a
missing library is reported by the first call that needs it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path
from typing import List, Optional, Tuple

from ._errors import LOAD_ERROR, LoadError, VPipeError

#: The ABI version this binding was written against (VPIPE_ABI_VERSION in vpipe.h).
ABI_VERSION = 1

#: The environment variable naming the library to load.
LIBRARY_ENV = "VPIPE_LIBRARY"

_LIBRARY_NAME = "libvpipe.so"
_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PACKAGE_DIR.parents[2]


class VpBytes(ctypes.Structure):
    """``vp_bytes``: a buffer the library returns; the host frees it with ``vp_bytes_free``."""

    _fields_ = [("data", ctypes.POINTER(ctypes.c_uint8)), ("len", ctypes.c_size_t)]


class Library:
    """A loaded libvpipe with every function's signature declared.

    The attributes are the C functions themselves (ctypes function pointers); ``call``
    is the one way the rest of the binding runs a bytes-in, bytes-out function.
    """

    def __init__(self, path: str, cdll: ctypes.CDLL) -> None:
        self.path = path
        self._cdll = cdll
        try:
            self.abi_version = cdll.vp_abi_version
            self.version = cdll.vp_version
            self.last_error = cdll.vp_last_error
            self.bytes_free = cdll.vp_bytes_free
            self.plan = cdll.vp_plan
            self.evaluate = cdll.vp_evaluate
        except AttributeError as e:
            raise LoadError(LOAD_ERROR, f"{path}: not a libvpipe (missing symbol: {e})") from None

        self.abi_version.argtypes = []
        self.abi_version.restype = ctypes.c_uint32
        self.version.argtypes = []
        self.version.restype = ctypes.c_char_p
        self.last_error.argtypes = []
        self.last_error.restype = ctypes.c_char_p
        self.bytes_free.argtypes = [ctypes.POINTER(VpBytes)]
        self.bytes_free.restype = None
        # const uint8_t *request, size_t request_len, vp_bytes *out -> vp_status (int32_t).
        # c_char_p passes a bytes object's buffer without copying; the library only reads it.
        for fn in (self.plan, self.evaluate):
            fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(VpBytes)]
            fn.restype = ctypes.c_int32

        self._declare_sessions(cdll)

        abi = self.abi_version()
        if abi != ABI_VERSION:
            raise LoadError(
                LOAD_ERROR,
                f"{path}: the library's ABI version is {abi}, this binding needs {ABI_VERSION}; "
                "install a vpipe Python package that matches the library (or point "
                f"{LIBRARY_ENV} at a matching libvpipe.so)",
            )

    def _declare_sessions(self, cdll: ctypes.CDLL) -> None:
        """Declares the vp_session_* functions (used by ``vpipe.session``).

        They are looked up here but not required: a library without them still plans, and
        ``vpipe.Session`` reports their absence (``session_functions_missing``) when used.
        A session handle is an opaque ``vp_session *``: ``c_void_p`` on this side.
        """
        handle, size, f32p, i32p = ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int32)
        signatures = {
            # (const uint8_t *config, size_t config_len, vp_session **session_out)
            "session_open": [ctypes.c_char_p, size, ctypes.POINTER(handle)],
            # (vp_session *, const float *inputs, size_t, const int32_t *targets, size_t, float *loss_out)
            "session_step": [handle, f32p, size, i32p, size, f32p],
            # (vp_session *, const int32_t *tokens, size_t, const int32_t *targets, size_t, float *loss_out)
            "session_step_tokens": [handle, i32p, size, i32p, size, f32p],
            # (vp_session *, vp_bytes *stats_out)
            "session_stats": [handle, ctypes.POINTER(VpBytes)],
            # (vp_session *, const char *path)
            "session_write_trace": [handle, ctypes.c_char_p],
            # (vp_session *, uint32_t layer, vp_bytes *parameters_out)
            "session_get_parameters": [handle, ctypes.c_uint32, ctypes.POINTER(VpBytes)],
            # (vp_session *, uint32_t layer, const uint8_t *parameters, size_t parameters_len)
            "session_set_parameters": [handle, ctypes.c_uint32, ctypes.c_char_p, size],
            # (vp_session *)
            "session_close": [handle],
            # (vp_session *, const uint8_t *plan, size_t plan_len)
            "session_apply_plan": [handle, ctypes.c_char_p, size],
            # (vp_session *, const char *path)
            "session_save": [handle, ctypes.c_char_p],
            "session_load": [handle, ctypes.c_char_p],
            # (const char *callback, vp_external_forward, vp_external_backward, void *user_data)
            "register_external_layer": [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p],
        }
        self.session_functions_missing: List[str] = []
        for name, argtypes in signatures.items():
            fn = getattr(cdll, f"vp_{name}", None)
            if fn is None:
                self.session_functions_missing.append(f"vp_{name}")
            else:
                fn.argtypes = argtypes
                fn.restype = ctypes.c_int32
            setattr(self, name, fn)

    def error(self, status: int) -> VPipeError:
        """The exception for a non-zero ``status`` with ``vp_last_error()``'s message; call it
        on the failing thread, right after the failing call."""
        raw = self.last_error()
        return VPipeError.from_status(status, raw.decode("utf-8", errors="replace") if raw else "")

    def check(self, status: int) -> None:
        """Raises ``error(status)`` unless ``status`` is VP_OK."""
        if status != 0:
            raise self.error(status)

    def call(self, fn: "ctypes._CFuncPtr", data: bytes) -> bytes:
        """Runs ``fn(data, len(data), &out)`` and returns the bytes it produced (see ``output``)."""
        return self.output(fn, data, len(data))

    def output(self, fn: "ctypes._CFuncPtr", *args: object) -> bytes:
        """Runs ``fn(*args, &out)`` for a function whose last parameter is a ``vp_bytes *``
        and returns the bytes it produced.

        On a non-zero status raises the matching ``VPipeError`` with ``vp_last_error()``'s
        message (read on this thread, right after the failing call, as the header requires).
        The returned buffer is always released with ``vp_bytes_free``.
        """
        out = VpBytes()
        status = fn(*args, ctypes.byref(out))
        try:
            self.check(status)
            if not out.data or out.len == 0:
                return b""
            return ctypes.string_at(out.data, out.len)
        finally:
            # Harmless on {NULL, 0}; the header promises the library leaves that on failure.
            self.bytes_free(ctypes.byref(out))


_lock = threading.Lock()
_library: Optional[Library] = None


def candidates() -> List[Tuple[str, str]]:
    """The places the library is looked for, in order, as (description, path) pairs.

    With ``$VPIPE_LIBRARY`` set the list holds that path only.
    """
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return [(f"${LIBRARY_ENV}", env)]
    found: List[Tuple[str, str]] = [
        ("bundled in the package", str(_PACKAGE_DIR / _LIBRARY_NAME)),
        ("repository release build", str(_REPO_ROOT / ".build" / "release" / _LIBRARY_NAME)),
        ("repository debug build", str(_REPO_ROOT / ".build" / "debug" / _LIBRARY_NAME)),
    ]
    system = ctypes.util.find_library("vpipe")
    if system:
        found.append(("system library path", system))
    return found


def _open(path: str, source: str) -> Library:
    try:
        cdll = ctypes.CDLL(path)
    except OSError as e:
        raise LoadError(LOAD_ERROR, f"cannot load libvpipe from {path} ({source}): {e}") from None
    return Library(path, cdll)


def load() -> Library:
    """The loaded library, loading it on first use (thread-safe).

    Raises ``VPipeError`` (status ``LOAD_ERROR``) when no library is found, the one found
    does not load, or its ABI version differs from ``ABI_VERSION``. A failed load is not
    remembered: the next call searches again (after ``$VPIPE_LIBRARY`` is fixed, say).
    """
    global _library
    lib = _library
    if lib is not None:
        return lib
    with _lock:
        if _library is not None:
            return _library
        places = candidates()
        for source, path in places:
            # With $VPIPE_LIBRARY set, `places` holds that path only and it must load.
            # find_library returns a bare soname, which only dlopen can resolve.
            if source != f"${LIBRARY_ENV}" and os.sep in path and not os.path.exists(path):
                continue
            _library = _open(path, source)
            return _library
        tried = "; ".join(f"{what}: {path}" for what, path in places)
        raise LoadError(
            LOAD_ERROR,
            f"libvpipe.so not found (tried {tried}; ctypes.util.find_library('vpipe') found nothing). "
            f"Build it (swift build -c release) or set {LIBRARY_ENV} to its path.",
        )
