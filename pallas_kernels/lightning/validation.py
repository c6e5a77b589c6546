"""Argument checks for the op: every bad input gets an error naming the argument."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.lightning.launch import KernelConfig

BACKENDS = ("pallas", "interpret", "xla")


def _shape(name: str, x) -> tuple[int, ...]:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    return tuple(x.shape)


def _floating(name: str, x) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")


def _concrete(x) -> np.ndarray | None:
    """The values of ``x`` if they are known now (not traced), else None."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def check_decay(decay, heads: int) -> None:
    shape = _shape("decay", decay)
    if shape != (heads,):
        raise ValueError(f"decay must have shape (heads,) = ({heads},), got {shape}")
    _floating("decay", decay)
    values = _concrete(decay)
    if values is not None:
        if np.isnan(values).any():
            raise ValueError("decay must not contain NaN")
        if (values < 0).any():
            raise ValueError(f"decay must be non-negative (λ = exp(-decay)), got min {values.min()}")


def check_qkv(q, k, v, *, with_seq: bool) -> None:
    """q, k: (batch, [seq,] heads, dk); v: (batch, [seq,] heads, dv)."""
    rank = 4 if with_seq else 3
    layout = "(batch, seq, heads, dim)" if with_seq else "(batch, heads, dim)"
    for name, x in (("q", q), ("k", k), ("v", v)):
        shape = _shape(name, x)
        if len(shape) != rank:
            raise ValueError(f"{name} must have rank {rank} {layout}, got shape {shape}")
        _floating(name, x)
    if q.shape != k.shape:
        raise ValueError(f"k must have the shape of q {q.shape}, got {k.shape}")
    if v.shape[:-1] != q.shape[:-1]:
        what = "batch, seq and heads" if with_seq else "batch and heads"
        raise ValueError(f"v must match q in {what} {q.shape[:-1]}, got {v.shape[:-1]}")


def check_state(name: str, state, batch: int, heads: int, dk: int, dv: int) -> None:
    shape = _shape(name, state)
    expected = (batch, heads, dk, dv)
    if shape != expected:
        raise ValueError(f"{name} must have shape (batch, heads, dk, dv) = {expected}, got {shape}")
    _floating(name, state)


def check_segment_ids(segment_ids, batch: int, seq: int) -> None:
    shape = _shape("segment_ids", segment_ids)
    if shape != (batch, seq):
        raise ValueError(f"segment_ids must have shape (batch, seq) = ({batch}, {seq}), got {shape}")
    if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise TypeError(f"segment_ids must be an integer array, got dtype {segment_ids.dtype}")


def check_chunk_size(chunk_size) -> None:
    if chunk_size is None:
        return
    if (not isinstance(chunk_size, (int, np.integer)) or chunk_size < 16
            or chunk_size & (chunk_size - 1)):
        raise ValueError(f"chunk_size must be a power of two >= 16, got {chunk_size!r}")


def resolve_backend(backend: str | None) -> str:
    """``None`` picks pallas on GPU, xla elsewhere; pallas without a GPU is an error."""
    platform = jax.default_backend()
    if backend is None:
        return "pallas" if platform == "gpu" else "xla"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "pallas" and platform != "gpu":
        raise ValueError(
            f"backend='pallas' needs a GPU, but JAX's default backend is {platform!r}; "
            "use backend='interpret' (the same kernels, interpreted) or backend='xla'")
    return backend


def check_kernel_config(kernel_config, backend: str, chunk_size) -> None:
    """A :class:`KernelConfig` or None; only for the kernels, and not with ``chunk_size``
    (the config's launches carry their chunks)."""
    if kernel_config is None:
        return
    if not isinstance(kernel_config, KernelConfig):
        raise TypeError(f"kernel_config must be a KernelConfig or None, got "
                        f"{type(kernel_config).__name__}")
    if backend == "xla":
        raise ValueError("kernel_config applies to the 'pallas' and 'interpret' backends, "
                         "got backend='xla'")
    if chunk_size is not None:
        raise ValueError(f"give chunk_size or kernel_config, not both (chunk_size={chunk_size}: "
                         "the config's launches carry their chunks)")


def check_context_axis(context_axis, shard_axes) -> None:
    """``context_axis``: a mesh axis name (or tuple of them) of an enclosing
    ``shard_map``, and not together with ``shard_axes``."""
    if context_axis is None:
        return
    if shard_axes is not None:
        raise ValueError("give context_axis (inside your shard_map) or shard_axes (the op "
                         "shard_maps itself), not both")
    names = (context_axis,) if isinstance(context_axis, str) else context_axis
    if (not isinstance(names, tuple) or not names
            or not all(isinstance(name, str) for name in names)):
        raise TypeError(f"context_axis must be a mesh axis name or a tuple of them, got "
                        f"{context_axis!r}")
    manual = set(getattr(jax.sharding.get_abstract_mesh(), "manual_axes", ()) or ())
    missing = [name for name in names if name not in manual]
    if missing:
        raise ValueError(
            f"context_axis={context_axis!r}: {missing} is not an axis of an enclosing "
            f"shard_map (its axes here: {sorted(manual)}); outside shard_map pass shard_axes "
            "or sequence-sharded inputs instead")
