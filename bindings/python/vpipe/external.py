"""Host-defined layers: Python functions as the forward and backward of a pipeline layer.

    import numpy as np, vpipe

    def forward(x, y):            # x: [rows, in] float32 (read), y: [rows, out] (fill)
        np.tanh(x, out=y)

    def backward(x, y, dy, dx):   # dx: [rows, in] (fill)
        np.multiply(dy, 1 - y * y, out=dx)

    vpipe.register_layer("tanh", forward, backward)
    # then a LayerSpec with external {callback: "tanh", in_features: 16, out_features: 16}

The arrays are views of buffers the library owns (in the stage's memory arena), valid only
during the call. The callbacks run on the stages' worker threads; ctypes takes the GIL for
each call, so Python callbacks of different stages run one at a time. An exception in a
callback fails the training step on every stage with its message.
"""

from __future__ import annotations

import ctypes
from typing import Callable, Dict, List, Tuple

import numpy as np

from ._native import load as _load

__all__ = ["register_layer"]

_FORWARD = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float),
                            ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_size_t)
_BACKWARD = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float),
                             ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float), ctypes.c_int64, ctypes.c_int64,
                             ctypes.c_int64, ctypes.c_void_p, ctypes.c_size_t)

# The ctypes trampolines must outlive every session that uses them. A session opened before
# a re-registration still calls the old ones, so none is ever dropped (they are small).
_registered: Dict[str, List[Tuple[object, object]]] = {}


def _view(pointer, rows: int, columns: int) -> np.ndarray:
    return np.ctypeslib.as_array(pointer, shape=(rows, columns))


def _report(error: int, error_len: int, exc: BaseException) -> int:
    text = f"{type(exc).__name__}: {exc}".encode("utf-8", errors="replace")[: max(0, error_len - 1)]
    ctypes.memmove(error, text + b"\0", len(text) + 1)
    return 1


def register_layer(name: str, forward: Callable[[np.ndarray, np.ndarray], None],
                   backward: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]) -> None:
    """Registers ``forward(x, y)`` and ``backward(x, y, dy, dx)`` as the external layer
    ``name`` for sessions opened afterwards (re-registering replaces it)."""
    if not isinstance(name, str):
        raise TypeError(f"register_layer: name must be a str, got {type(name).__name__}")
    if not name or "\0" in name:
        # The C ABI takes a NUL-terminated name: "a\0b" would register "a".
        raise ValueError(f"register_layer: name must be non-empty and contain no NUL character, got {name!r}")
    if not callable(forward) or not callable(backward):
        raise TypeError("register_layer: forward and backward must be callables")

    def c_forward(_user, x, y, rows, n_in, n_out, error, error_len):
        try:
            forward(_view(x, rows, n_in), _view(y, rows, n_out))
            return 0
        except BaseException as exc:  # noqa: BLE001 — any failure must reach the library, not unwind through C
            return _report(error, error_len, exc)

    def c_backward(_user, x, y, dy, dx, rows, n_in, n_out, error, error_len):
        try:
            backward(_view(x, rows, n_in), _view(y, rows, n_out), _view(dy, rows, n_out), _view(dx, rows, n_in))
            return 0
        except BaseException as exc:  # noqa: BLE001
            return _report(error, error_len, exc)

    f, b = _FORWARD(c_forward), _BACKWARD(c_backward)
    lib = _load()
    if lib.register_external_layer is None:
        raise RuntimeError("this libvpipe has no vp_register_external_layer")
    lib.check(lib.register_external_layer(name.encode("utf-8"), ctypes.cast(f, ctypes.c_void_p), ctypes.cast(b, ctypes.c_void_p), None))
    _registered.setdefault(name, []).append((f, b))
