"""Status codes of libvpipe (vp_status in include/vpipe.h) and the exceptions they become."""

from __future__ import annotations

from typing import Dict, Type

OK = 0
ERR_INVALID_ARGUMENT = 1  #: a NULL pointer or an impossible length was passed
ERR_DECODE = 2  #: the bytes are not a valid protobuf message of the expected type
ERR_INVALID_REQUEST = 3  #: the message decoded but a field's value is invalid
ERR_INFEASIBLE = 4  #: no plan fits the devices' memory
ERR_NOT_IMPLEMENTED = 5  #: the requested feature (e.g. a planner) is not available yet
ERR_INTERNAL = 6  #: a bug in libvpipe
ERR_RUNTIME = 7  #: training failed: out of device memory, a stage failed, bad data
ERR_CHECKPOINT = 8  #: a checkpoint could not be written or read, is damaged, newer, or of another model
#: Not a library status: the binding could not find, load or accept libvpipe.so.
LOAD_ERROR = -1

STATUS_NAMES: Dict[int, str] = {
    OK: "VP_OK",
    ERR_INVALID_ARGUMENT: "VP_ERR_INVALID_ARGUMENT",
    ERR_DECODE: "VP_ERR_DECODE",
    ERR_INVALID_REQUEST: "VP_ERR_INVALID_REQUEST",
    ERR_INFEASIBLE: "VP_ERR_INFEASIBLE",
    ERR_NOT_IMPLEMENTED: "VP_ERR_NOT_IMPLEMENTED",
    ERR_INTERNAL: "VP_ERR_INTERNAL",
    ERR_RUNTIME: "VP_ERR_RUNTIME",
    ERR_CHECKPOINT: "VP_ERR_CHECKPOINT",
    LOAD_ERROR: "LOAD_ERROR",
}


class VPipeError(Exception):
    """A failure reported by libvpipe, or a failure to load it.

    Attributes:
        status: the ``vp_status`` code (``ERR_*``), or ``LOAD_ERROR`` (-1) when the library
            could not be found, loaded or accepted.
        message: the library's ``vp_last_error()`` text, which names the field, layer,
            stage or device at fault (e.g. ``model.layers[1].profile.fwd_seconds: ...``).
        status_name: the C name of the status, e.g. ``"VP_ERR_INVALID_REQUEST"``.

    Each status has a subclass (``InvalidRequestError``, ``InfeasibleError``, ...), so a
    host can catch one kind; catching ``VPipeError`` catches them all.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, f"VP_ERR_UNKNOWN({self.status})")

    def __str__(self) -> str:
        return f"{self.status_name}: {self.message}"

    @staticmethod
    def from_status(status: int, message: str) -> "VPipeError":
        """The exception for ``status``: its subclass, or ``VPipeError`` for unknown codes."""
        return _BY_STATUS.get(status, VPipeError)(status, message)


class InvalidArgumentError(VPipeError):
    """VP_ERR_INVALID_ARGUMENT: a NULL pointer or an impossible length reached the library."""


class DecodeError(VPipeError):
    """VP_ERR_DECODE: the bytes are not a valid protobuf message of the expected type."""


class InvalidRequestError(VPipeError):
    """VP_ERR_INVALID_REQUEST: a field's value is invalid; the message names the field."""


class InfeasibleError(VPipeError):
    """VP_ERR_INFEASIBLE: nothing fits the devices' memory; the message says where and by how much."""


class NotImplementedByLibraryError(VPipeError):
    """VP_ERR_NOT_IMPLEMENTED: the requested feature (e.g. a planner) is not available yet."""


class InternalError(VPipeError):
    """VP_ERR_INTERNAL: a bug in libvpipe (or a reply the binding cannot read)."""


class TrainingError(VPipeError):
    """VP_ERR_RUNTIME: a training step failed (out of device memory, a stage failed, bad data);
    the message names the stage, layer or row. The session stays usable: no weight changed."""


class CheckpointError(VPipeError):
    """VP_ERR_CHECKPOINT: a checkpoint could not be written or read, is damaged (truncated,
    checksum), of a newer format, or of another model; the message names the file and what
    does not match. A refused load leaves the session as it was."""


class LoadError(VPipeError):
    """LOAD_ERROR: libvpipe.so was not found, did not load, or has another ABI version."""


_BY_STATUS: Dict[int, Type[VPipeError]] = {
    ERR_INVALID_ARGUMENT: InvalidArgumentError,
    ERR_DECODE: DecodeError,
    ERR_INVALID_REQUEST: InvalidRequestError,
    ERR_INFEASIBLE: InfeasibleError,
    ERR_NOT_IMPLEMENTED: NotImplementedByLibraryError,
    ERR_INTERNAL: InternalError,
    ERR_RUNTIME: TrainingError,
    ERR_CHECKPOINT: CheckpointError,
    LOAD_ERROR: LoadError,
}
