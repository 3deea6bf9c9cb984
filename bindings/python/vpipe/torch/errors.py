"""The one exception vpipe.torch raises for bad input: a ``VPipeError`` naming the field,
layer, module or rank at fault (also a ``ValueError``, as Python code expects)."""

from __future__ import annotations

import math
from typing import Any

from .._errors import ERR_INVALID_REQUEST, InvalidRequestError


class TorchAdapterError(InvalidRequestError, ValueError):
    """Bad input to vpipe.torch; ``message`` names what is at fault, e.g.
    ``vpipe.torch.profile(): repeats must be >= 1, got 0``."""

    def __init__(self, message: str) -> None:
        InvalidRequestError.__init__(self, ERR_INVALID_REQUEST, message)


def bad(where: str, message: str) -> TorchAdapterError:
    return TorchAdapterError(f"vpipe.torch.{where}: {message}")


def check_positive_int(where: str, field: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad(where, f"{field} must be an integer >= {minimum}, got {value!r}")
    return value


def check_number(where: str, field: str, value: Any, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite number >= minimum (> minimum when strict); NaN, inf and non-numbers are refused."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise bad(where, f"{field} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or v < minimum or (strict and v == minimum):
        op = ">" if strict else ">="
        raise bad(where, f"{field} must be a finite number {op} {minimum:g}, got {value!r}")
    return v
