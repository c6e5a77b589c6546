"""The checks every config and argument validator is built from (model config,
training config, generation): each returns ``[]`` or the one problem, worded
``key=value: expected ...``, so that a caller can list every problem at once."""
from __future__ import annotations

import math
from typing import Any, Iterable

import jax.numpy as jnp
import numpy as np


def is_int(value: Any) -> bool:
    """A Python or NumPy integer, and not a bool (``True`` is an ``int`` to Python)."""
    return isinstance(value, int) and not isinstance(value, bool) or (
        hasattr(value, "dtype") and getattr(value, "shape", None) == ()
        and jnp.issubdtype(value.dtype, jnp.integer))


def integer(key: str, value: Any, minimum: int, meaning: str = "") -> list[str]:
    """``[]`` when ``value`` is an integer >= ``minimum``, else the one problem."""
    if is_int(value) and value >= minimum:
        return []
    return [f"{key}={value!r}: expected an integer >= {minimum}{meaning}"]


def number(key: str, value: Any, low: float, high: float = math.inf, *,
           low_open: bool = False, high_open: bool = True, meaning: str = "") -> list[str]:
    """``[]`` when ``value`` is a finite number in the interval, else the one problem."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if above and below:
            return []
    if high == math.inf:
        allowed = f"{'>' if low_open else '>='} {low:g}"
    else:
        allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return [f"{key}={value!r}: expected a finite number {allowed}{meaning}"]


def text(key: str, value: Any, *, optional: bool = False, meaning: str = "") -> list[str]:
    """``[]`` for a non-empty string (or ``None`` when ``optional``)."""
    if (optional and value is None) or (isinstance(value, str) and value):
        return []
    none = " or null" if optional else ""
    return [f"{key}={value!r}: expected a non-empty string{none}{meaning}"]


def boolean(key: str, value: Any) -> list[str]:
    return [] if isinstance(value, bool) else [f"{key}={value!r}: expected true/false"]


def one_of(key: str, value: Any, allowed: Iterable[Any], meaning: str = "") -> list[str]:
    allowed = tuple(allowed)
    if any(value is a or (isinstance(value, str) and value == a) for a in allowed):
        return []
    return [f"{key}={value!r}: expected one of {allowed}{meaning}"]


def token_ids(key: str, ids: np.ndarray, vocab_size: int) -> list[str]:
    """``[]`` when every id of the integer array ``ids`` is in ``[0, vocab_size)``, else
    the one problem: the first id outside, by its index, and how many are."""
    outside = (ids < 0) | (ids >= vocab_size)
    if not outside.any():
        return []
    first = np.unravel_index(np.argmax(outside), ids.shape)
    where = "".join(f"[{int(i)}]" for i in first)
    return [f"{key}{where}={ids[first]}: token ids must be in [0, vocab_size={vocab_size}) "
            f"({int(outside.sum())} of the {ids.size} ids of {key} are outside)"]
