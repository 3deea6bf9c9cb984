"""``vpipe.Session``: train a model on pipeline stages with libvpipe (``vp_session_*``).

A session owns a model placed on pipeline stages, one thread per stage inside the library,
and trains it one mini-batch at a time. With a plan in the config it runs that plan;
without one, the first ``training.profile_iterations`` steps run on one stage while every
layer is measured, then the library plans (PLANNER_VPIPE) and moves the layers to their
stages. Those first steps are real training steps.

    import numpy as np
    import vpipe
    from vpipe import pb

    config = pb.SessionConfig()
    for kind in (pb.LayerSpec(linear=pb.Linear(in_features=8, out_features=16)),
                 pb.LayerSpec(activation=pb.Activation(kind=pb.ACTIVATION_RELU)),
                 pb.LayerSpec(linear=pb.Linear(in_features=16, out_features=4)),
                 pb.LayerSpec(softmax_cross_entropy=pb.SoftmaxCrossEntropy())):
        config.model.layers.append(kind)
    for _ in range(2):
        config.cluster.devices.add(memory_bytes=64 << 20, host_bandwidth=10e9)
    config.cluster.links.add(bandwidth=10e9)
    config.training.micro_batches = 2
    config.training.sgd.lr = 0.1

    with vpipe.Session(config) as session:
        x = np.random.default_rng(0).standard_normal((16, 8), dtype=np.float32)
        y = np.arange(16) % 4
        for _ in range(5):
            print(session.step(x, y))
        print(session.stats().stages)

Inputs are numpy arrays. Float inputs have shape ``[rows, features]`` (any float dtype,
converted to float32); token models (first layer an embedding) take integer ids of shape
``[rows]`` or ``[batch, seq]``. Targets are integer classes, one per row (any integer dtype,
converted to int32). Arrays are copied only when they are not already contiguous and of
the right dtype.

Threading: a session may be used from several threads; the library serialises the calls.
Closing is idempotent, and a session closes itself when it is garbage collected or leaves
a ``with`` block. Any call after ``close()`` raises ``InvalidArgumentError``.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import List, Optional, Sequence, Union

import numpy as np
from google.protobuf import message as _message

from . import vpipe_pb2 as _pb
from ._errors import ERR_INTERNAL, ERR_INVALID_ARGUMENT, InternalError, InvalidArgumentError, LoadError, LOAD_ERROR
from ._native import Library
from ._native import load as _load

__all__ = ["Session"]

PathLike = Union[str, "os.PathLike[str]"]
_INT32 = np.iinfo(np.int32)


class Session:
    """A training session of libvpipe (``vp_session_open`` ... ``vp_session_close``).

    Args:
        config: a ``vpipe.pb.SessionConfig``: the model (every layer with a kind, the last
            ``softmax_cross_entropy``), the cluster, an optional plan and the training
            options (``micro_batches`` and an optimizer are required).

    Raises:
        TypeError: ``config`` is not a ``vpipe.pb.SessionConfig``.
        InvalidRequestError: a field is invalid; the message names it (e.g.
            ``training.optimizer``, ``model.layers[1].transformer_block.heads``).
        InfeasibleError: the plan does not fit the devices (names stage, layer and bytes).
        VPipeError: any other failure, including a library that cannot be loaded.
    """

    def __init__(self, config: "_pb.SessionConfig") -> None:
        self._handle: Optional[int] = None  # set first, so __del__ is safe if __init__ fails
        self._lock = threading.Lock()
        if not (isinstance(config, _message.Message) and config.DESCRIPTOR.full_name == _pb.SessionConfig.DESCRIPTOR.full_name):
            raise TypeError(f"vpipe.Session(): config must be a vpipe.pb.SessionConfig, got {type(config).__name__}")
        lib = _load()
        if lib.session_functions_missing:
            raise LoadError(LOAD_ERROR, f"{lib.path}: this libvpipe has no training sessions "
                                        f"(missing {', '.join(lib.session_functions_missing)})")
        self._lib: Library = lib
        layers = config.model.layers
        # Decides how step() reads its inputs; the library checks everything else.
        self._tokens = bool(layers) and layers[0].WhichOneof("kind") == "embedding"
        # What step() checks its arrays against, so that a transposed batch is refused
        # (naming the argument) instead of being read row-major as another shape.
        self._features = _input_features(layers[0]) if layers else None
        self._micro_batches = config.training.micro_batches
        data = config.SerializeToString()
        handle = ctypes.c_void_p()
        lib.check(lib.session_open(data, len(data), ctypes.byref(handle)))
        self._handle = handle.value

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Closes the session and frees everything it owns (``vp_session_close``).

        Idempotent: closing a closed session does nothing.
        """
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            self._lib.check(self._lib.session_close(handle))

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> "Session":
        self._live()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Runs also for a half-built object and at interpreter shutdown: never raise here.
        try:
            handle = getattr(self, "_handle", None)
            if handle is not None:
                self._handle = None
                self._lib.session_close(handle)
        except Exception:  # noqa: BLE001  (a finaliser must not raise)
            pass

    def __repr__(self) -> str:
        return f"<vpipe.Session {'closed' if self.closed else hex(self._handle or 0)}>"

    # ------------------------------------------------------------ training

    def step(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        """One training iteration on a mini-batch; returns its mean loss.

        Args:
            inputs: float values of shape ``[rows, features]`` (``features`` = the first
                layer's input width), or, for a token model (first layer an embedding),
                integer token ids of shape ``[rows]`` or ``[batch, seq]`` (one row per token).
            targets: integer classes, one per row: shape ``[rows]``, or the shape of the
                token ids.

        The mini-batch splits into ``training.micro_batches`` equal parts, so ``rows`` must
        be a multiple of it (and, with a transformer block, each part a whole number of
        sequences). On any failure no weight changes.

        Raises:
            TypeError: a dtype is wrong (float ids, integer features, non-integer targets).
            ValueError: a shape is wrong, or a value does not fit in int32.
            InvalidRequestError: the sizes do not fit the model; the library's message says how.
            TrainingError: a stage failed (VP_ERR_RUNTIME); the message names the stage.
        """
        handle = self._live()
        targets_arr = _int32(targets, "targets")
        loss = ctypes.c_float()
        t_ptr = targets_arr.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        if self._tokens:
            tokens = _int32(inputs, "inputs (token ids)")
            if tokens.ndim not in (1, 2):
                raise ValueError(f"Session.step(): token ids must have shape [rows] or [batch, seq], got {tokens.shape}")
            if targets_arr.ndim != 1 and targets_arr.shape != tokens.shape:
                raise ValueError(f"Session.step(): targets must have shape [rows] or the token ids' shape {tokens.shape}, "
                                 f"got {targets_arr.shape}")
            if targets_arr.size != tokens.size:
                raise ValueError(f"Session.step(): targets must hold one class per token ({tokens.size} for inputs of shape "
                                 f"{tokens.shape}), got {targets_arr.size} (shape {targets_arr.shape})")
            status = self._lib.session_step_tokens(
                handle, tokens.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), tokens.size,
                t_ptr, targets_arr.size, ctypes.byref(loss))
        else:
            values = _float32(inputs)
            rows, features = values.shape
            if self._features is not None and features != self._features:
                hint = " (transposed? the shape is [rows, features])" if rows == self._features else ""
                raise ValueError(f"Session.step(): inputs must have shape [rows, {self._features}] (the first layer's input "
                                 f"width), got {values.shape}{hint}")
            if self._micro_batches > 0 and rows % self._micro_batches:
                raise ValueError(f"Session.step(): inputs has {rows} rows, which do not split into "
                                 f"training.micro_batches = {self._micro_batches} equal parts")
            if targets_arr.ndim != 1:
                raise ValueError(f"Session.step(): targets must have shape [rows], got {targets_arr.shape}")
            if targets_arr.shape[0] != rows:
                raise ValueError(f"Session.step(): targets must hold one class per row of inputs ({rows}), "
                                 f"got {targets_arr.shape[0]}")
            status = self._lib.session_step(
                handle, values.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), values.size,
                t_ptr, targets_arr.size, ctypes.byref(loss))
        self._lib.check(status)
        return float(loss.value)

    # ------------------------------------------------------------ inspection

    def stats(self) -> "_pb.SessionStats":
        """Measured statistics (``vp_session_stats``): iterations and their times, the last
        loss, per stage the peak device bytes against the capacity, compute time, swapped
        bytes and recomputed layers, the measured layer profiles and the plan."""
        return _parse(_pb.SessionStats, self._lib.output(self._lib.session_stats, self._live()))

    def parameters(self, layer: int) -> List[np.ndarray]:
        """Layer ``layer``'s parameter tensors as float32 arrays in their shapes (copies).

        A Linear layer gives ``[W (out, in), b (out,)]``; layers without parameters give ``[]``.
        Raises ``InvalidRequestError`` naming ``layer`` when there is no such layer.
        """
        handle = self._live()
        reply = _parse(_pb.LayerParameters,
                       self._lib.output(self._lib.session_get_parameters, handle, _layer_index(layer)))
        return [np.array(t.values, dtype=np.float32).reshape(tuple(t.shape)) for t in reply.tensors]

    def set_parameters(self, layer: int, arrays: Sequence[np.ndarray]) -> None:
        """Replaces layer ``layer``'s parameters; every shape must match what ``parameters``
        returns, in the same order. On error nothing changes.

        Raises:
            TypeError: an array is not numeric.
            InvalidRequestError: a count or shape differs; the message names the tensor.
        """
        handle = self._live()
        index = _layer_index(layer)
        message = _pb.LayerParameters(layer=index)
        for k, array in enumerate(arrays):
            a = np.asarray(array)
            if a.dtype.kind not in "fiu":
                raise TypeError(f"Session.set_parameters(): arrays[{k}] must be numeric, got dtype {a.dtype}")
            tensor = message.tensors.add(shape=list(a.shape))
            tensor.values.extend(a.astype(np.float32, copy=False).ravel().tolist())
        data = message.SerializeToString()
        self._lib.check(self._lib.session_set_parameters(handle, index, data, len(data)))

    def write_trace(self, path: PathLike) -> None:
        """Writes the last iteration as measured: an SVG timeline when ``path`` ends in
        ``.svg``, otherwise a Chrome trace (JSON, for ui.perfetto.dev or chrome://tracing)."""
        handle = self._live()
        self._lib.check(self._lib.session_write_trace(handle, os.fsencode(path)))

    def apply_plan(self, plan: "_pb.Plan") -> None:
        """Live migration to ``plan`` (same model, stage count, schedule and micro-batches):
        layers move between stages and change policies at the next ``step`` while training
        continues, computing exactly what it would have without the move. A plan that
        cannot be applied raises (``InfeasibleError``, ``InvalidRequestError``) and training
        continues on the current plan. Safe to call from another thread while ``step`` runs.
        The outcome is in ``stats().decisions``."""
        if not isinstance(plan, _pb.Plan):
            raise TypeError(f"Session.apply_plan() takes a vpipe.pb.Plan, got {type(plan).__name__}")
        handle = self._live()
        data = plan.SerializeToString()
        self._lib.check(self._lib.session_apply_plan(handle, data, len(data)))

    def save(self, path: PathLike) -> None:
        """Writes the whole training state to ``path`` (docs/checkpoint.md): parameters,
        optimizer state, iteration, plan, async weight versions, the profiler's
        measurements. The file appears atomically; a crash mid-save leaves the previous
        checkpoint intact. With TRANSPORT_MPI every rank calls it with the same path.
        Raises ``CheckpointError`` naming the file and the system's reason."""
        handle = self._live()
        self._lib.check(self._lib.session_save(handle, os.fsencode(path)))

    def load(self, path: PathLike) -> None:
        """Resumes the training state saved at ``path`` into this session (same model and
        optimizer kind; the plan and world size may differ). A truncated or corrupted file,
        a checkpoint of another model, optimizer or seed, or a newer format raises
        ``CheckpointError`` naming what does not match, and the session stays as it was."""
        handle = self._live()
        self._lib.check(self._lib.session_load(handle, os.fsencode(path)))

    # ------------------------------------------------------------ internals

    def _live(self) -> int:
        handle = self._handle
        if handle is None:
            raise InvalidArgumentError(ERR_INVALID_ARGUMENT, "session: closed (vpipe.Session.close() was called)")
        return handle


def _int32(values: object, name: str) -> np.ndarray:
    """``values`` as a C-contiguous int32 array (copied only if needed), or a clear error."""
    a = np.asarray(values)
    if a.dtype.kind not in "iu":
        raise TypeError(f"Session.step(): {name} must be integers, got dtype {a.dtype}")
    if a.dtype != np.int32 and a.size:
        low, high = int(a.min()), int(a.max())
        if low < _INT32.min or high > _INT32.max:
            raise ValueError(f"Session.step(): {name} must fit in int32, got values in [{low}, {high}]")
    return np.ascontiguousarray(a, dtype=np.int32)


def _input_features(layer: "_pb.LayerSpec") -> Optional[int]:
    """The first layer's input width (values per row), or None when its kind does not say."""
    kind = layer.WhichOneof("kind")
    if kind == "linear":
        return layer.linear.in_features
    if kind == "external":
        return layer.external.in_features
    if kind in ("layer_norm", "transformer_block", "choice_block"):
        return getattr(layer, kind).features
    return None


def _float32(values: object) -> np.ndarray:
    a = np.asarray(values)
    if a.dtype.kind != "f":
        hint = " (token ids are for models whose first layer is an embedding)" if a.dtype.kind in "iu" else ""
        raise TypeError(f"Session.step(): inputs must be floats of shape [rows, features], got dtype {a.dtype}{hint}")
    if a.ndim != 2:
        raise ValueError(f"Session.step(): inputs must have shape [rows, features], got {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _layer_index(layer: object) -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise TypeError(f"layer must be an int, got {type(layer).__name__}")
    if not 0 <= int(layer) <= 0xFFFFFFFF:
        raise ValueError(f"layer must be in [0, 2^32), got {layer}")
    return int(layer)


def _parse(cls: type, data: bytes) -> _message.Message:
    try:
        return cls.FromString(data)
    except _message.DecodeError as e:
        raise InternalError(ERR_INTERNAL, f"the library's reply ({len(data)} bytes) is not a {cls.DESCRIPTOR.full_name}: {e}") from None
