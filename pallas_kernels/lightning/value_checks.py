"""The checked path: value checks of the op's arguments as ``jax.experimental.checkify``
checks (``checks=True``), for what tracing cannot see.

Under ``jax.jit`` the values of ``q``, ``k``, ``v``, the state and ``decay`` are
unknown while the op is traced, so validation.py checks only their shapes and dtypes.
A non-finite input then flows through the op as docs/DESIGN.md ("Non-finite inputs")
says. These checks name the argument and where its first bad value is; eagerly a
failed one raises at once, under ``jit`` the caller runs through
``checkify.checkify`` and gets the error back::

    err, o = checkify.checkify(jax.jit(functools.partial(lightning_attention, checks=True)))(
        q, k, v, decay)
    err.throw()
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import checkify


def check_finite(op: str, name: str, x: jax.Array) -> None:
    """``x`` holds no inf or NaN; else the count and the first bad index."""
    bad = ~jnp.isfinite(x)
    first = jnp.unravel_index(jnp.argmax(bad.reshape(-1)), x.shape)
    index = ", ".join(f"{{i{axis}}}" for axis in range(x.ndim))
    checkify.check(
        ~jnp.any(bad),
        f"{op}: {name} must be finite, got {{count}} inf or NaN values, the first at "
        f"{name}[{index}]",
        count=jnp.sum(bad), **{f"i{axis}": i for axis, i in enumerate(first)})


def check_decay_values(op: str, decay: jax.Array) -> None:
    """``decay`` in ``[0, +inf]``: not NaN, not negative."""
    bad = ~(decay >= 0)
    checkify.check(
        ~jnp.any(bad),
        f"{op}: decay must be >= 0 and not NaN (λ = exp(-decay); +inf is λ = 0), got "
        "{value} at head {head}",
        value=decay[jnp.argmax(bad)], head=jnp.argmax(bad))


def check_values(op: str, arrays: dict, decay: jax.Array) -> None:
    """The finite checks of ``arrays`` (name -> array or None) and the decay's range."""
    for name, x in arrays.items():
        if x is not None and x.size:
            check_finite(op, name, x)
    if decay.size:
        check_decay_values(op, decay)
