"""The argument checks of ``generate``: each bad argument is named, with its value and
what is allowed, before anything compiles.

Without them a prompt id outside the vocabulary looks up no embedding row (NaN
logits, then a stream of token 0), ``top_k=0`` fails inside ``lax.top_k``, and a
negative temperature, a ``top_p`` outside (0, 1] or an ``eos_id`` no token can equal
sample something other than what was asked. Wrong types are ``TypeError``, values out
of range ``ValueError``.
"""
from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from tnl_jax.range_checks import is_int, token_ids

SEED_RANGE = (-2**63, 2**63)  # What jax.random.key takes.


def _is_real(value: Any) -> bool:
    """A Python, NumPy or concrete 0-d JAX real number (not a bool)."""
    if isinstance(value, (int, float)):
        return not isinstance(value, bool)
    dtype = getattr(value, "dtype", None)
    return (dtype is not None and getattr(value, "shape", None) == ()
            and (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)))


def python_number(value: Any) -> Any:
    """A NumPy or concrete 0-d JAX number as the Python number it holds (compared with
    Python ints, a JAX int32 would overflow); anything else as it is."""
    if _is_real(value) and not isinstance(value, (int, float)):
        return value.item()
    return value


def _id_list(name: str, row: Any) -> list[int]:
    """One prompt as a list of ints (types only; the range is checked by the caller)."""
    if hasattr(row, "shape") and hasattr(row, "dtype"):
        row = np.asarray(row)
        if row.ndim != 1 or not np.issubdtype(row.dtype, np.integer):
            raise TypeError(f"{name} is an array of shape {row.shape} and dtype {row.dtype}: "
                            "expected a 1-D integer array of token ids")
        return row.tolist()
    if not isinstance(row, (list, tuple)):
        raise TypeError(f"{name}={row!r}: expected a list of token ids (prompt_ids is a batch "
                        "of prompts: a (batch, tokens) array or a list of token lists)")
    for position, token in enumerate(row):
        if not is_int(token):
            raise TypeError(f"{name}[{position}]={token!r}: expected an integer token id")
    return [int(token) for token in row]


def prompt_rows(prompt_ids: Any, vocab_size: int) -> list[list[int]]:
    """The prompts as lists of token ids: a ``(batch, tokens)`` integer array or a list
    of token lists, none empty, every id in ``[0, vocab_size)``."""
    if hasattr(prompt_ids, "shape") and hasattr(prompt_ids, "dtype"):
        array = np.asarray(prompt_ids)
        if array.ndim != 2:
            raise ValueError(f"prompt_ids has shape {array.shape}: expected (batch, tokens), "
                             "or a list of token lists of different lengths")
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"prompt_ids has dtype {array.dtype}: expected integer token ids")
        rows = array.tolist()
    elif isinstance(prompt_ids, (list, tuple)):
        rows = [_id_list(f"prompt_ids[{b}]", row) for b, row in enumerate(prompt_ids)]
    else:
        raise TypeError(f"prompt_ids is a {type(prompt_ids).__name__}: expected a (batch, "
                        "tokens) integer array or a list of token lists")
    if not rows:
        raise ValueError("prompt_ids holds no prompt: expected at least one")
    for b, row in enumerate(rows):
        if not row:
            raise ValueError(f"prompt_ids[{b}] is empty: every prompt needs at least one token")
        for problem in token_ids(f"prompt_ids[{b}]", np.asarray(row), vocab_size):
            raise ValueError(problem)
    return rows


def check_top_k(top_k: Any, vocab_size: int) -> None:
    if top_k is None:
        return
    if not is_int(top_k):
        raise TypeError(f"top_k={top_k!r}: expected None or an integer")
    if not 1 <= top_k <= vocab_size:
        raise ValueError(f"top_k={top_k}: expected None or an integer in [1, "
                         f"vocab_size={vocab_size}] (1: greedy)")


def _check_number(name: str, value: Any, low: float, high: float, *, low_open: bool,
                  meaning: str) -> None:
    """A finite real number in ``[low, high]`` (``(low, high]`` when ``low_open``)."""
    if high == math.inf:
        interval = f"{'>' if low_open else '>='} {low:g}"
    else:
        interval = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
    if not _is_real(value):
        raise TypeError(f"{name}={value!r}: expected a number {interval}{meaning}")
    above = value > low if low_open else value >= low
    if not (math.isfinite(value) and above and value <= high):
        raise ValueError(f"{name}={value!r}: expected a finite number {interval}{meaning}")


# Positions and cache slots are int32: the longest prompt and the new tokens together
# stay below this.
MAX_POSITIONS = 2**31 - 1


def check_sampling(vocab_size: int, *, max_new_tokens: Any, temperature: Any, top_k: Any,
                   top_p: Any, seed: Any, eos_id: Any, return_logits: Any,
                   longest_prompt: int = 0) -> dict[str, Any]:
    """Every argument of ``generate`` but the model and the prompts (``longest_prompt``:
    their longest length). Python, NumPy and concrete 0-d JAX numbers are accepted;
    returns the arguments as Python numbers (what the compiled loop takes as static)."""
    max_new_tokens, temperature, top_k, top_p, seed, eos_id = (
        python_number(x) for x in (max_new_tokens, temperature, top_k, top_p, seed, eos_id))
    if not is_int(max_new_tokens):
        raise TypeError(f"max_new_tokens={max_new_tokens!r}: expected an integer >= 0")
    limit = MAX_POSITIONS - longest_prompt
    if not 0 <= max_new_tokens <= limit:
        raise ValueError(f"max_new_tokens={max_new_tokens}: expected an integer in [0, "
                         f"{limit}] (the longest prompt's {longest_prompt} tokens and the "
                         "new ones are counted in int32, at most 2**31 - 1)")
    _check_number("temperature", temperature, 0, math.inf, low_open=False,
                  meaning=" (0: greedy)")
    check_top_k(top_k, vocab_size)
    if top_p is not None:
        _check_number("top_p", top_p, 0, 1, low_open=True,
                      meaning=" (the probability mass kept; 1: all)")
    if not is_int(seed):
        raise TypeError(f"seed={seed!r}: expected an integer")
    if not SEED_RANGE[0] <= seed < SEED_RANGE[1]:
        raise ValueError(f"seed={seed}: expected an integer in [-2**63, 2**63)")
    if eos_id is not None:
        if not is_int(eos_id):
            raise TypeError(f"eos_id={eos_id!r}: expected None or an integer token id")
        if not 0 <= eos_id < vocab_size:
            raise ValueError(f"eos_id={eos_id}: expected None or a token id in [0, "
                             f"vocab_size={vocab_size})")
    if not isinstance(return_logits, (bool, np.bool_)):
        raise TypeError(f"return_logits={return_logits!r}: expected True or False")
    optional = lambda x, kind: None if x is None else kind(x)  # noqa: E731
    return dict(max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                top_k=optional(top_k, int), top_p=optional(top_p, float), seed=int(seed),
                eos_id=optional(eos_id, int), return_logits=bool(return_logits))
