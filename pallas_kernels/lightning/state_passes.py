"""The kernels' two state passes over one device's whole shard, for context
parallelism (context_parallel.py, LASP-2's order): the state-only pass (the shard's own
final state, from a zero state, without its outputs) and the dS-only pass (the gradient
of the state entering the shard, from ``do`` alone). Each walks the shard's state
splits in parallel (splits.py) in the launch of the op's own state-only passes. Not
differentiated: the context-parallel VJP calls them."""
from __future__ import annotations

import jax

from pallas_kernels.lightning import splits
from pallas_kernels.lightning.kernel_vjp import padded_call
from pallas_kernels.lightning.launch import KernelConfig
from pallas_kernels.lightning.runs import run_ids_from_segments


def own_final_state(q, k, v, decay, segment_ids, *, chunk_size, interpret: bool,
                    kernel_config: KernelConfig | None) -> jax.Array:
    """``(B, H, dk, dv)`` float32: the state after the rows from a zero state."""
    return _over_state_splits(splits.sequence_final_state, q, k, v, decay, segment_ids,
                              chunk_size=chunk_size, interpret=interpret,
                              kernel_config=kernel_config)


def entering_dstate(q, k, do, decay, segment_ids, *, chunk_size, interpret: bool,
                    kernel_config: KernelConfig | None) -> jax.Array:
    """``(B, H, dk, dv)`` float32: ``∂⟨o, do⟩/∂S`` for the state ``S`` entering the
    rows (it reaches the tokens of their first run)."""
    return _over_state_splits(splits.sequence_entering_dstate, q, k, do, decay, segment_ids,
                              chunk_size=chunk_size, interpret=interpret,
                              kernel_config=kernel_config)


def _over_state_splits(walk, q, k, rows, decay, segment_ids, *, chunk_size, interpret,
                       kernel_config) -> jax.Array:
    """``walk`` (splits.py) on the padded arguments in the op's state splits and launch;
    ``rows``: ``v`` or ``do``."""
    dk, dv = q.shape[-1], rows.shape[-1]
    run_ids = None if segment_ids is None else run_ids_from_segments(segment_ids)
    (q, k, rows, gamma, run, _), static = padded_call(
        q, k, rows, decay, run_ids=run_ids, initial_state=None, chunk_size=chunk_size,
        interpret=interpret, kernel_config=kernel_config)
    state = walk(q, k, rows, gamma, run, static.state_layout, static.config.states,
                 interpret)
    return state[:, :, :dk, :dv]
