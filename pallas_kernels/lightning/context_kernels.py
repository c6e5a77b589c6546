"""The kernels' side of context parallelism (context_parallel.py, LASP-2's order) on one
device's shard: the state-only pass (the shard's own final state from a zero state, no
outputs), the dS-only pass (the gradient of the state entering the shard from ``do``
alone), and the op from the entering state with its backward, to which the passes hand
their per-split states: the op's own sequence splits (splits.py) then walk no state a
second time. Not differentiated by JAX: the context-parallel VJP calls them."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from pallas_kernels.lightning import splits
from pallas_kernels.lightning.kernel_vjp import (Residuals, Static, backward_passes,
                                                 forward_passes, padded_call)
from pallas_kernels.lightning.launch import KernelConfig
from pallas_kernels.lightning.layout import SPLIT_STATES_NAME
from pallas_kernels.lightning.runs import run_ids_from_segments


def own_final_state(q, k, v, decay, segment_ids, *, chunk_size, interpret: bool,
                    kernel_config: KernelConfig | None) -> tuple[jax.Array, jax.Array]:
    """``((B, H, dk, dv) float32, every state split's own state)``: the state after the
    rows from a zero state."""
    return _over_state_splits(splits.sequence_final_state, q, k, v, decay, segment_ids,
                              chunk_size=chunk_size, interpret=interpret,
                              kernel_config=kernel_config)


def entering_dstate(q, k, do, decay, segment_ids, *, chunk_size, interpret: bool,
                    kernel_config: KernelConfig | None) -> tuple[jax.Array, jax.Array]:
    """``((B, H, dk, dv) float32, every state split's own dS)``: ``∂⟨o, do⟩/∂S`` for the
    state ``S`` entering the rows (it reaches the tokens of their first run)."""
    return _over_state_splits(splits.sequence_entering_dstate, q, k, do, decay, segment_ids,
                              chunk_size=chunk_size, interpret=interpret,
                              kernel_config=kernel_config)


def _run_ids(segment_ids):
    return None if segment_ids is None else run_ids_from_segments(segment_ids)


def _over_state_splits(walk, q, k, rows, decay, segment_ids, *, chunk_size, interpret,
                       kernel_config):
    """``walk`` (splits.py) on the padded arguments in the op's state splits and launch;
    ``rows``: ``v`` or ``do``."""
    dk, dv = q.shape[-1], rows.shape[-1]
    (q, k, rows, gamma, run, _), static = padded_call(
        q, k, rows, decay, run_ids=_run_ids(segment_ids), initial_state=None,
        chunk_size=chunk_size, interpret=interpret, kernel_config=kernel_config)
    state, own = walk(q, k, rows, gamma, run, static.state_layout, static.config.states,
                      interpret)
    return state[:, :, :dk, :dv], own


def attend_vjp(q, k, v, decay, segment_ids, entering, own_states, *, decay_grad: bool,
               chunk_size, interpret: bool, kernel_config: KernelConfig | None):
    """``((o, final state float32), backward)``: the op from the state ``entering`` on the
    rows, with ``own_states`` from :func:`own_final_state` on them (no state-only pass);
    ``backward(do, dfinal, own_dstates)`` with ``own_dstates`` from
    :func:`entering_dstate` (no dS-only pass) gives ``(dq, dk, dv[, d decay])``."""
    seq, dk, dv = q.shape[1], q.shape[-1], v.shape[-1]
    options = dict(run_ids=_run_ids(segment_ids), initial_state=entering,
                   chunk_size=chunk_size, interpret=interpret, kernel_config=kernel_config)
    (_, _, _, _, run, s0), static = padded_call(q, k, v, decay, **options)
    padded, pad_vjp = jax.vjp(lambda q, k, v, decay: padded_call(q, k, v, decay, **options)[0][:4],
                              q, k, v, decay)
    o, final, entry_states, entry_run = forward_passes(*padded, run, s0, static, own_states)
    entry_states = checkpoint_name(entry_states, SPLIT_STATES_NAME)  # as the op's own
    res = Residuals(*padded, run, entry_states, entry_run, decay_grad=decay_grad,
                     initial_state_grad=False, initial_state_axes=frozenset())
    backward = jax.tree_util.Partial(functools.partial(_backward, static, decay_grad),
                                     res, pad_vjp)
    return (o[:, :seq, :, :dv], final[:, :, :dk, :dv]), backward


def _backward(static: Static, decay_grad: bool, res: Residuals, pad_vjp, do, dfinal,
              own_dstates):
    """``(dq, dk, dv[, d decay])`` of :func:`attend_vjp`'s op."""
    (_, padded_len, _, dv_pad), dk_pad = res.v.shape, res.q.shape[-1]
    do = jnp.pad(do, [(0, 0), (0, padded_len - do.shape[1]), (0, 0),
                      (0, dv_pad - do.shape[-1])])
    dfinal = jnp.pad(dfinal.astype(jnp.float32), [(0, 0), (0, 0),
                                                  (0, dk_pad - dfinal.shape[2]),
                                                  (0, dv_pad - dfinal.shape[3])])
    dq, dk, dv, dgamma, _, _ = backward_passes(static, res, do, dfinal, own_dstates)
    grads = pad_vjp((dq, dk, dv, jnp.zeros_like(res.gamma) if dgamma is None else dgamma))
    return grads if decay_grad else grads[:3]
