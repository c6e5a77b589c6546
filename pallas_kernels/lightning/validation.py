"""Argument checks for the op: every bad input gets an error naming the argument, the
value and what was expected, raised while tracing (before anything compiles). Values
of traced arrays cannot be checked here: ``checks=True`` adds them under
``jax.experimental.checkify`` (value_checks.py)."""
from __future__ import annotations

import difflib
import functools

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.lightning.launch import KernelConfig
from pallas_kernels.lightning.partitioning import ShardAxes

BACKENDS = ("pallas", "interpret", "xla")


def _shape(name: str, x) -> tuple[int, ...]:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    return tuple(x.shape)


SUPPORTED_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _floating(name: str, x) -> None:
    """One of ``SUPPORTED_DTYPES`` (float64 with ``jax_enable_x64``); float8 and other
    floats are refused here, before anything is traced."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    if jnp.dtype(x.dtype).name not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} has dtype {x.dtype}, which the op does not support; "
                        f"supported: {', '.join(SUPPORTED_DTYPES)}")


def _concrete(x) -> np.ndarray | None:
    """The values of ``x`` if they are known now (not traced), else None."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def check_arguments(q, k, v, decay, *, segment_ids, initial_state, flags: dict,
                    chunk_size, backend, kernel_config, context_axis, shard_axes) -> str:
    """Every argument of ``lightning_attention`` (``flags``: name -> value of the bools);
    returns the backend to use."""
    for name, value in flags.items():
        check_flag(name, value)
    check_qkv(q, k, v, with_seq=True)
    batch, seq, heads, dk = q.shape
    check_decay(decay, heads)
    if segment_ids is not None:
        check_segment_ids(segment_ids, batch, seq)
    if initial_state is not None:
        check_state("initial_state", initial_state, batch, heads, dk, v.shape[-1])
    check_chunk_size(chunk_size)
    backend = resolve_backend(backend)
    check_kernel_config(kernel_config, backend, chunk_size)
    check_shard_args(context_axis, shard_axes)
    return backend


def _forward_mode_error(op: str, what: str, backend: str) -> NotImplementedError:
    return NotImplementedError(
        f"{op}: forward-mode autodiff (jax.jvp, jax.jacfwd, jax.hessian) of {what} reached "
        f"backend={backend!r}, whose kernels have a reverse-mode rule only (jax.custom_vjp); "
        "use backend='xla', which supports every JAX transformation")


def check_reverse_mode_only(op: str, backend: str, arrays: dict) -> None:
    """The kernels differentiate in reverse mode only (``jax.custom_vjp``): forward mode
    (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``) reaching them is refused by name,
    with the backend that supports it. Seen here, at the op's entry, from the tracers of
    ``arrays`` (name -> array or None); behind a ``jax.jit`` the kernels' own guard
    (``reverse_mode_only``) says the same, or jax's error that a custom_vjp function
    has no forward mode."""
    if backend == "xla":
        return
    for name, x in arrays.items():
        while isinstance(x, jax.core.Tracer):
            if type(x).__name__ == "JVPTracer":
                raise _forward_mode_error(op, name, backend)
            x = getattr(x, "primal", getattr(x, "val", None))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def reverse_mode_only(backend: str, arrays):
    """The identity on ``arrays``, for the kernels' inputs: forward mode through it (a
    ``jax.jvp`` of a traced program that holds the kernels, as ``jax.hessian`` of a
    jitted function makes) raises the error naming ``backend='xla'``, not Pallas's
    bare ``AssertionError``."""
    return arrays


@reverse_mode_only.defjvp
def _reverse_mode_only_jvp(backend, primals, tangents):
    raise _forward_mode_error("pallas_kernels.lightning", "the kernels' inputs", backend)


def check_flag(name: str, value) -> None:
    """A flag is a bool: ``'no'`` or ``1`` would be read as True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool (True or False), got {value!r} "
                        f"of type {type(value).__name__}")


def check_decay(decay, heads: int) -> None:
    """``(heads,)`` floats in ``[0, +inf]`` (``+inf``: λ = 0); values only if concrete."""
    shape = _shape("decay", decay)
    if shape != (heads,):
        raise ValueError(f"decay must have shape (heads,) = ({heads},), got {shape}")
    _floating("decay", decay)
    values = _concrete(decay)
    if values is not None:
        if np.isnan(values).any():
            raise ValueError(f"decay must not contain NaN, got NaN at heads "
                             f"{np.flatnonzero(np.isnan(values)).tolist()}")
        if (values < 0).any():
            raise ValueError(f"decay must be non-negative (λ = exp(-decay)), got min "
                             f"{values.min()} at head {int(values.argmin())}")


def check_qkv(q, k, v, *, with_seq: bool) -> None:
    """q, k: (batch, [seq,] heads, dk); v: (batch, [seq,] heads, dv); one float dtype."""
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
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must share one dtype (the kernels multiply them as "
                        f"they are), got q {q.dtype}, k {k.dtype}, v {v.dtype}")


def check_state(name: str, state, batch: int, heads: int, dk: int, dv: int) -> None:
    shape = _shape(name, state)
    expected = (batch, heads, dk, dv)
    if shape != expected:
        raise ValueError(f"{name} must have shape (batch, heads, dk, dv) = {expected}, got {shape}")
    _floating(name, state)


def check_segment_ids(segment_ids, batch: int, seq: int) -> None:
    """``(batch, seq)`` integers; any labels (negative too): a run starts where the id
    changes."""
    shape = _shape("segment_ids", segment_ids)
    if shape != (batch, seq):
        raise ValueError(f"segment_ids must have shape (batch, seq) = ({batch}, {seq}), got {shape}")
    if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise TypeError(f"segment_ids must be an integer array, got dtype {segment_ids.dtype}")


def check_chunk_size(chunk_size) -> None:
    if chunk_size is None:
        return
    if isinstance(chunk_size, (bool, np.bool_)) or not isinstance(chunk_size, (int, np.integer)):
        raise TypeError(f"chunk_size must be an int (a power of two >= 16) or None, got "
                        f"{chunk_size!r} of type {type(chunk_size).__name__}")
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of two >= 16, got {chunk_size!r}")


def resolve_backend(backend: str | None) -> str:
    """``None`` picks pallas on GPU, xla elsewhere; pallas without a GPU is an error."""
    platform = jax.default_backend()
    if backend is None:
        return "pallas" if platform == "gpu" else "xla"
    if not isinstance(backend, str):
        raise TypeError(f"backend must be one of {BACKENDS} or None, got {backend!r} of "
                        f"type {type(backend).__name__}")
    if backend not in BACKENDS:
        nearest = difflib.get_close_matches(backend.lower(), BACKENDS, n=1, cutoff=0.5)
        hint = f" (did you mean {nearest[0]!r}?)" if nearest else ""
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}{hint}")
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


def check_shard_args(context_axis, shard_axes) -> None:
    """``shard_axes``: a ``ShardAxes`` or None. ``context_axis``: a mesh axis name (or
    tuple of them) of an enclosing ``shard_map``, and not together with ``shard_axes``."""
    if context_axis is not None and shard_axes is not None:
        raise ValueError("give context_axis (inside your shard_map) or shard_axes (the op "
                         "shard_maps itself), not both")
    if shard_axes is not None:
        if not isinstance(shard_axes, ShardAxes):
            raise TypeError(f"shard_axes must be a ShardAxes or None, got {shard_axes!r} of "
                            f"type {type(shard_axes).__name__}")
        mesh = jax.sharding.get_abstract_mesh()
        unknown = sorted({*shard_axes.batch, *shard_axes.seq, *shard_axes.heads}
                         - set(mesh.axis_names))
        if unknown:
            raise ValueError(f"shard_axes names mesh axes {unknown} that the current mesh "
                             f"{dict(mesh.shape)} lacks (set it with jax.set_mesh)")
    if context_axis is None:
        return
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
