"""The public op: ``lightning_attention`` (prefill/training) and
``lightning_attention_step`` (decode): argument checks, backend choice, dispatch to the
``xla`` backend (xla_backend.py) or the Pallas kernels (kernel_vjp.py), on one device or
partitioned over a mesh (partitioning.py, context_parallel.py). Empty inputs (no rows,
no tokens) are answered here, with no computation; the optional value checks are in
value_checks.py."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pallas_kernels.lightning import (context_kernels, context_parallel, decode_vjp,
                                      kernel_vjp, partitioning, validation, value_checks,
                                      xla_backend)
from pallas_kernels.lightning.launch import KernelConfig
from pallas_kernels.lightning.runs import run_ids_from_segments

DEFAULT_XLA_CHUNK = 64


def lightning_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    decay: jax.Array,
    *,
    segment_ids: jax.Array | None = None,
    initial_state: jax.Array | None = None,
    return_final_state: bool = False,
    chunk_size: int | None = None,
    backend: str | None = None,
    kernel_config: KernelConfig | None = None,
    context_axis: str | tuple[str, ...] | None = None,
    shard_axes: partitioning.ShardAxes | None = None,
    checks: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Causal linear attention with per-head decay ``λ = exp(-decay)``.

    ``o_t = Σ_{s<=t} λ^(t-s) (q_t·k_s) v_s`` within each run of ``segment_ids``.

    Args:
      q, k: ``(batch, seq, heads, dk)``; v: ``(batch, seq, heads, dv)``. Any ``seq``.
        No scaling is applied to ``q``. One dtype: float16, bfloat16, float32 or
        float64 (others, float8 included, are refused). The ``xla`` backend computes in
        float32, float64 for float64 inputs; the kernels compute in float32 for every
        dtype (float32 accumulation and state, 16-bit operands; float16 score and
        state tiles scaled into float16's range, so a score beyond 65504 does not
        overflow an output that does not).
      decay: ``(heads,)`` floats in ``[0, +inf]``; 0 means no decay, ``+inf`` that each
        token sees only itself (λ = 0). A negative decay is an error when its values
        are known (not traced); a traced one (under ``jax.jit``) is taken as 0, so the
        output stays finite (``checks=True`` reports it).
      segment_ids: optional ``(batch, seq)`` ints; each contiguous run is a separate
        document: tokens see only their own run and the state resets at its start.
      initial_state: optional ``(batch, heads, dk, dv)`` state that continues the first
        run of each row (chunked prefill, state passing).
      return_final_state: (bool) also return the float32 state at the end of each row
        (float64 on the ``xla`` backend for float64 inputs).
      chunk_size: power of two >= 16; ``None`` takes the backend's tuned value. On
        ``xla`` a chunk longer than the sequence is cut to the sequence's length.
      backend: ``"pallas"`` (GPU), ``"interpret"`` (the same kernels, interpreted, any
        platform), ``"xla"`` (pure-jnp chunked form), or ``None``: pallas on GPU, xla
        elsewhere. A backend never falls back to another.
      kernel_config: the kernels' launches (lowering, blocks, chunks, pipelines) and
        sequence splits, for the ``pallas`` and ``interpret`` backends; ``None`` takes
        the tuned tables and split policies (tuning.py). Excludes ``chunk_size``.
      context_axis: inside the caller's ``jax.shard_map`` whose mesh axis (or axes)
        splits the sequence: the arguments are this device's shards and the shards'
        states are combined over that axis (context_parallel.py). Outside
        ``shard_map`` leave it ``None``: sharded inputs are partitioned by the op itself,
        under ``Explicit`` and ``Auto`` mesh axes alike (partitioning.py).
      shard_axes: the mesh axes of the current mesh (``jax.set_mesh``) that split
        batch, sequence and heads, as a caller that knows its layout (a model's
        sharding rules) states them: the op runs in a ``jax.shard_map`` over them, its
        inputs resharded to match. Not with ``context_axis``.
      checks: add ``jax.experimental.checkify`` checks of the values, which tracing
        cannot see: non-finite ``q``, ``k``, ``v`` or ``initial_state``, a NaN or
        negative ``decay``. Eagerly a failed check raises; under ``jax.jit`` run the
        caller through ``checkify.checkify`` and call the error's ``throw()``.

    Returns:
      ``o`` ``(batch, seq, heads, dv)`` in ``q.dtype``, or ``(o, final_state)``. No
      tokens or no rows: empty ``o``, the final state ``initial_state`` or zeros.

    Autodiff: every backend differentiates in reverse mode (``jax.grad``, ``jax.vjp``),
    the decay and the initial state included. Forward mode (``jax.jvp``, ``jax.jacfwd``)
    and so ``jax.hessian`` need ``backend="xla"``: the kernels are a ``jax.custom_vjp``,
    and forward mode reaching them raises ``NotImplementedError`` naming the backend
    (``jax.jvp`` straight of a ``jax.jit``-ed caller: jax's own ``TypeError`` that a
    custom_vjp function has no forward mode). Partitioned over a mesh (sharded inputs
    under ``Auto`` axes, or a sequence split by any route) the op is a ``custom_vjp``
    on every backend, ``xla`` included: reverse mode only (jax's ``TypeError``).

    Non-finite inputs (docs/DESIGN.md): masks select, so an inf or NaN in ``q_t``,
    ``k_t`` or the initial state reaches only the outputs that depend on it; one in
    ``v_t`` also every output of its chunk (a matrix product: ``0 · inf``).
    """
    backend = validation.check_arguments(
        q, k, v, decay, segment_ids=segment_ids, initial_state=initial_state,
        flags=dict(return_final_state=return_final_state, checks=checks),
        chunk_size=chunk_size, backend=backend, kernel_config=kernel_config,
        context_axis=context_axis, shard_axes=shard_axes)
    arrays = dict(q=q, k=k, v=v, initial_state=initial_state)
    validation.check_reverse_mode_only("lightning_attention", backend,
                                       dict(arrays, decay=decay))
    if checks:
        value_checks.check_values("lightning_attention", arrays, decay)
    if initial_state is not None:
        initial_state = initial_state.astype(jnp.promote_types(initial_state.dtype, jnp.float32))
    if 0 in q.shape or 0 in v.shape:
        o, final = _empty_result(q, v, initial_state)
    else:
        attend = local_op(chunk_size=chunk_size, backend=backend, kernel_config=kernel_config)
        o, final = _partitioned(attend, q, k, v, non_negative(decay), segment_ids,
                                initial_state, context_axis, shard_axes,
                                typed=backend != "interpret")
    return (o, final) if return_final_state else o


def non_negative(decay: jax.Array) -> jax.Array:
    """``decay`` in at least float32, a negative value (λ > 1, which grows without
    bound) taken as 0. Concrete decays were checked already (validation.check_decay);
    this is the always-on guard for traced ones, whose values no check sees unless
    ``checks=True``. Its gradient is that of ``decay`` where ``decay >= 0``, 0 below."""
    decay = decay.astype(jnp.promote_types(decay.dtype, jnp.float32))
    return jnp.where(decay < 0, jnp.zeros((), decay.dtype), decay)


def _partitioned(attend, q, k, v, decay, segment_ids, initial_state, context_axis,
                 shard_axes, *, typed: bool) -> tuple[jax.Array, jax.Array]:
    """``(o, final_state)``: in the caller's ``shard_map`` (``context_axis``), in one over
    ``shard_axes``, or partitioned by the inputs' sharding (partitioning.py)."""
    if context_axis is not None:
        return context_parallel.attention_over_context(
            attend, q, k, v, decay, segment_ids, initial_state, context_axis)
    if shard_axes is not None:
        return partitioning.with_axes(attend, shard_axes, q, k, v, decay, segment_ids,
                                      initial_state, typed=typed)
    return partitioning.partitioned(attend, q, k, v, decay, segment_ids, initial_state,
                                    typed=typed)


def _empty_result(q, v, initial_state) -> tuple[jax.Array, jax.Array]:
    """``(o, final_state)`` where nothing is attended: no rows, tokens, heads or
    features. ``o`` is all zeros (empty unless ``dk == 0``: empty dot products); zero
    tokens leave the initial state as it is. No kernel is launched on an empty grid."""
    batch, seq, heads, dk = q.shape
    dv = v.shape[-1]
    o = jnp.zeros((batch, seq, heads, dv), q.dtype)
    if initial_state is not None and seq == 0:
        return o, initial_state
    return o, jnp.zeros((batch, heads, dk, dv), jnp.float32)


def local_op(*, chunk_size, backend, kernel_config) -> context_parallel.LocalOp:
    """The op on arrays that one device holds whole, with the kernels' state passes
    for context parallelism (the ``xla`` backend derives them from its scan)."""
    options = dict(chunk_size=chunk_size, kernel_config=kernel_config)
    attend = functools.partial(attend_on_device, backend=backend, **options)
    if backend == "xla":
        return context_parallel.LocalOp(attend)
    options["interpret"] = backend == "interpret"
    return context_parallel.LocalOp(
        attend, own_state=functools.partial(context_kernels.own_final_state, **options),
        entering_dstate=functools.partial(context_kernels.entering_dstate, **options),
        shard_vjp=functools.partial(context_kernels.attend_vjp, **options))


def attend_on_device(q, k, v, decay, segment_ids, initial_state, *, chunk_size, backend,
                     kernel_config) -> tuple[jax.Array, jax.Array]:
    """The op on arrays that one device holds whole: ``(o, final_state)``."""
    run_ids = None if segment_ids is None else run_ids_from_segments(segment_ids)
    if backend == "xla":
        return xla_backend.chunked(q, k, v, decay, run_ids=run_ids,
                                   initial_state=initial_state,
                                   chunk_size=chunk_size or DEFAULT_XLA_CHUNK)
    return kernel_vjp.lightning_attention_kernels(
        q, k, v, decay, run_ids=run_ids, initial_state=initial_state,
        chunk_size=chunk_size, interpret=backend == "interpret", kernel_config=kernel_config)


def lightning_attention_step(
    q: jax.Array, k: jax.Array, v: jax.Array, decay: jax.Array, state: jax.Array, *,
    backend: str | None = None, checks: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """One decode step: ``S' = λ S + k vᵀ``, ``o = qᵀ S'``; O(1) in the context length.

    Args:
      q, k: ``(batch, heads, dk)``; v: ``(batch, heads, dv)``; decay: ``(heads,)``
        in ``[0, +inf]`` (as for :func:`lightning_attention`); state:
        ``(batch, heads, dk, dv)`` float32 (the prefill's final state). checks, and
        forward-mode autodiff (``"xla"`` only): as for :func:`lightning_attention`.
      backend: ``"xla"`` (also ``None``): jnp, which XLA compiles to one fusion that
        reads and writes the state once, with q, k and v's producers fused in;
        ``"pallas"``: one Triton kernel doing the same (decode_vjp.py), ``"interpret"``:
        that kernel interpreted. On an H200 (tnl-1b, benchmarks/RESULTS.md) the two
        move the state at the same rate and the XLA step decodes 3% faster, hence the
        default. The kernel runs on whole arrays: under a mesh use ``"xla"``.

    Returns:
      ``(o (batch, heads, dv) in q.dtype, new_state float32)``.
    """
    validation.check_flag("checks", checks)
    backend = "xla" if backend is None else validation.resolve_backend(backend)
    validation.check_qkv(q, k, v, with_seq=False)
    batch, heads, dk = q.shape
    validation.check_decay(decay, heads)
    validation.check_state("state", state, batch, heads, dk, v.shape[-1])
    arrays = dict(q=q, k=k, v=v, state=state)
    validation.check_reverse_mode_only("lightning_attention_step", backend,
                                       dict(arrays, decay=decay))
    if checks:
        value_checks.check_values("lightning_attention_step", arrays, decay)
    decay = non_negative(decay)
    if backend == "xla" or 0 in q.shape or 0 in v.shape:  # Empty: nothing to launch.
        return xla_backend.step(q, k, v, decay, state)
    return decode_vjp.kernel_step(q, k, v, decay, state, backend == "interpret")
