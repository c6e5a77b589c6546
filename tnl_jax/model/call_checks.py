"""The argument checks of the model's public call (``LanguageModel.__call__``,
``hidden_states``, ``prefill``): each bad argument is named, with its value and what is
expected, while tracing.

Without them an id ``>= vocab_size`` looks up no embedding row (NaN logits), a negative
one wraps to the last rows, and a float, 1-D or mis-shaped argument fails deep inside
jax. Shapes and dtypes are checked always (free: they are static); the ids' values only
when they are concrete (an eager call), so a jitted call costs nothing more.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tnl_jax.range_checks import token_ids


def _array(name: str, x: Any) -> tuple[tuple[int, ...], Any]:
    """``(shape, dtype)`` of an integer array, else a TypeError naming ``name``."""
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise TypeError(f"{name} is a {type(x).__name__}: expected a (batch, tokens) "
                        "integer array")
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{name} has dtype {x.dtype}: expected an integer array")
    return tuple(x.shape), x.dtype


def _concrete(x: Any) -> np.ndarray | None:
    """The values of ``x`` when they are known now: not a tracer, and on this host."""
    if isinstance(x, jax.core.Tracer) or not getattr(x, "is_fully_addressable", True):
        return None
    return np.asarray(x)


def check_call_arguments(input_ids: Any, segment_ids: Any, positions: Any,
                         vocab_size: int) -> None:
    """``input_ids (B, T)`` integers in ``[0, vocab_size)`` (the values when concrete);
    ``segment_ids`` and ``positions``, if given, integer arrays of its shape."""
    shape, _ = _array("input_ids", input_ids)
    if len(shape) != 2:
        raise ValueError(f"input_ids has shape {shape}: expected (batch, tokens) token ids "
                         "(one prompt: input_ids[None])")
    for name, x in (("segment_ids", segment_ids), ("positions", positions)):
        if x is not None and _array(name, x)[0] != shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}: expected input_ids' shape "
                             f"{shape}")
    values = _concrete(input_ids)
    if values is not None:
        for problem in token_ids("input_ids", values, vocab_size):
            raise ValueError(problem)
