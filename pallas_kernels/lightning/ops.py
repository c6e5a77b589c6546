"""The public op: ``lightning_attention`` (prefill/training) and
``lightning_attention_step`` (decode): argument checks, backend choice, dispatch to the
``xla`` backend (xla_backend.py) or the Pallas kernels (kernel_vjp.py), on one device or
partitioned over a mesh (partitioning.py, context_parallel.py)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pallas_kernels.lightning import (context_parallel, kernel_vjp, partitioning,
                                      validation, xla_backend)
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
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Causal linear attention with per-head decay ``λ = exp(-decay)``.

    ``o_t = Σ_{s<=t} λ^(t-s) (q_t·k_s) v_s`` within each run of ``segment_ids``.

    Args:
      q, k: ``(batch, seq, heads, dk)``; v: ``(batch, seq, heads, dv)``. Any ``seq``.
        No scaling is applied to ``q``.
      decay: ``(heads,)`` non-negative floats; 0 means no decay.
      segment_ids: optional ``(batch, seq)`` ints; each contiguous run is a separate
        document: tokens see only their own run and the state resets at its start.
      initial_state: optional ``(batch, heads, dk, dv)`` state that continues the first
        run of each row (chunked prefill, state passing).
      return_final_state: also return the float32 state at the end of each row.
      chunk_size: power of two >= 16; ``None`` takes the backend's tuned value.
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

    Returns:
      ``o`` ``(batch, seq, heads, dv)`` in ``q.dtype``, or ``(o, final_state)``.
    """
    validation.check_qkv(q, k, v, with_seq=True)
    batch, seq, heads, dk = q.shape
    dv = v.shape[-1]
    validation.check_decay(decay, heads)
    if segment_ids is not None:
        validation.check_segment_ids(segment_ids, batch, seq)
    if initial_state is not None:
        validation.check_state("initial_state", initial_state, batch, heads, dk, dv)
    validation.check_chunk_size(chunk_size)
    backend = validation.resolve_backend(backend)
    validation.check_kernel_config(kernel_config, backend, chunk_size)
    validation.check_context_axis(context_axis, shard_axes)

    if initial_state is not None:
        initial_state = initial_state.astype(jnp.promote_types(initial_state.dtype, jnp.float32))
    decay = decay.astype(jnp.promote_types(decay.dtype, jnp.float32))
    attend = functools.partial(attend_on_device, chunk_size=chunk_size, backend=backend,
                               kernel_config=kernel_config)
    if context_axis is not None:
        o, final = context_parallel.attention_over_context(
            attend, q, k, v, decay, segment_ids, initial_state, context_axis)
    elif shard_axes is not None:
        o, final = partitioning.with_axes(attend, shard_axes, q, k, v, decay, segment_ids,
                                          initial_state, typed=backend != "interpret")
    else:
        o, final = partitioning.partitioned(attend, q, k, v, decay, segment_ids,
                                            initial_state, typed=backend != "interpret")
    return (o, final) if return_final_state else o


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
    q: jax.Array, k: jax.Array, v: jax.Array, decay: jax.Array, state: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """One decode step: ``S' = λ S + k vᵀ``, ``o = qᵀ S'``; O(1) in the context length.

    Args:
      q, k: ``(batch, heads, dk)``; v: ``(batch, heads, dv)``; decay: ``(heads,)``;
      state: ``(batch, heads, dk, dv)`` float32 (the prefill's final state).

    Returns:
      ``(o (batch, heads, dv) in q.dtype, new_state float32)``.
    """
    validation.check_qkv(q, k, v, with_seq=False)
    batch, heads, dk = q.shape
    validation.check_decay(decay, heads)
    validation.check_state("state", state, batch, heads, dk, v.shape[-1])
    return xla_backend.step(q, k, v, decay, state)
