"""The Pallas kernels behind ``jax.custom_vjp``: padding, the scans across sequence
splits, and the assembly of the decay gradient.

When the grid ``(batch, head, feature block)`` alone is too small to fill the GPU,
the sequence is cut into splits: a state-only pass gives each split's contribution
(in parallel), a short ``lax.scan`` over splits makes the state entering each one,
then the output pass runs all splits in parallel. The backward pass does the same in
reverse for ``dS``. With one split each pass is a single kernel.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from pallas_kernels.lightning import tuning
from pallas_kernels.lightning.backward import dkdv_walk, dq_or_dk_walk, dv_walk
from pallas_kernels.lightning.forward import forward_walk
from pallas_kernels.lightning.walk_specs import WalkLayout


@dataclasses.dataclass(frozen=True)
class _Static:
    layout: WalkLayout
    config: tuning.KernelConfig
    interpret: bool

    @property
    def kwargs(self) -> dict:
        return dict(layout=self.layout, interpret=self.interpret)


def lightning_attention_kernels(q, k, v, decay, *, run_ids, initial_state, chunk_size,
                                interpret, chunks_per_split=None):
    """Validated op inputs in, ``(o, final_state)`` out. ``chunks_per_split`` overrides
    the split policy (tests use it to cover one split and many)."""
    batch, seq, heads, dk = q.shape
    dv = v.shape[-1]
    dk_pad, dv_pad = tuning.padded_head_dim(dk), tuning.padded_head_dim(dv)
    itemsize = max(jnp.dtype(q.dtype).itemsize, jnp.dtype(v.dtype).itemsize)
    config = tuning.kernel_config(dk_pad, dv_pad, chunk_size, itemsize,
                                  mosaic=interpret or tuning.has_wgmma())
    n_chunks = -(-seq // config.chunk)
    if chunks_per_split is None:
        chunks_per_split = tuning.split_chunks(
            n_chunks, batch * heads * dv_pad // config.forward.block, config.forward.lowering)
    chunks_per_split = min(chunks_per_split, n_chunks)
    layout = WalkLayout(chunk=config.chunk, chunks_per_split=chunks_per_split,
                        splits=-(-n_chunks // chunks_per_split), seq_len=seq)

    rows = layout.padded_len - seq

    def pad(x, width):
        return jnp.pad(x, [(0, 0), (0, rows), (0, 0), (0, width - x.shape[-1])])

    run = jnp.zeros((batch, seq), jnp.int32) if run_ids is None else run_ids
    run = jnp.pad(run, [(0, 0), (0, rows)], mode="edge")
    if initial_state is None:
        initial_state = jnp.zeros((batch, heads, dk, dv), jnp.float32)
    s0 = jnp.pad(initial_state.astype(jnp.float32),
                 [(0, 0), (0, 0), (0, dk_pad - dk), (0, dv_pad - dv)])
    gamma = decay.astype(jnp.float32).reshape(heads, 1)
    o, final = _attention(pad(q, dk_pad), pad(k, dk_pad), pad(v, dv_pad), gamma, run, s0,
                          _Static(layout, config, interpret))
    return o[:, :seq, :, :dv], final[:, :, :dk, :dv]


def _entry_runs(run, layout: WalkLayout):
    """``(B, splits)``: run id of the row before each split (the first row's for split 0)."""
    split_ends = run[:, layout.split_len - 1::layout.split_len]
    return jnp.concatenate([run[:, :1], split_ends[:, :-1]], axis=1)


def _split_carries(gamma, run, entry_run, layout: WalkLayout):
    """``(B, H, splits)``: ``λ^ℓ`` over each split, 0 where a run starts inside it."""
    no_new_run = run[:, layout.split_len - 1::layout.split_len] == entry_run
    decays = jnp.exp(-gamma[:, :1] * layout.split_lengths()[None, :])  # (H, splits)
    return jnp.where(no_new_run[:, None, :], decays[None], 0.0)


def _scan_splits(first, contributions, carries, *, reverse: bool):
    """``x_{s+1} = carry_s · x_s + contribution_s`` across splits (backwards if
    ``reverse``). Returns (the value entering each split ``(B, H, splits, ...)``, the
    value after the last one)."""
    def step(x, inputs):
        contribution, carry = inputs
        return carry[..., None, None] * x + contribution, x

    last, entering = jax.lax.scan(step, first, (jnp.moveaxis(contributions, 2, 0),
                                                jnp.moveaxis(carries, 2, 0)), reverse=reverse)
    return jnp.moveaxis(entering, 0, 2), last


def _forward(q, k, v, gamma, run, s0, static: _Static):
    layout, launch = static.layout, static.config.forward
    entry_run = _entry_runs(run, layout)
    if layout.splits == 1:
        o, end = forward_walk(q, k, v, gamma, run, entry_run, s0[:, :, None],
                              emit_output=True, emit_state=True, launch=launch,
                              **static.kwargs)
        return o, end[:, :, 0], s0[:, :, None], entry_run
    (own,) = forward_walk(q, k, v, gamma, run, entry_run, None, emit_output=False,
                          emit_state=True, launch=launch, **static.kwargs)
    carries = _split_carries(gamma, run, entry_run, layout)
    entry_states, final = _scan_splits(s0, own, carries, reverse=False)
    (o,) = forward_walk(q, k, v, gamma, run, entry_run, entry_states, emit_output=True,
                        emit_state=False, launch=launch, **static.kwargs)
    return o, final, entry_states, entry_run


def _split_anchor_terms(entry_states, d_s0, exit_dstates, layout: WalkLayout):
    """``(H,)``: ``Σ_s L_s·⟨S_s, dS_s⟩`` of the decay gradient (backward.py), with the
    gradient of the state entering split ``s`` being that of the state leaving ``s − 1``."""
    entering_grads = jnp.concatenate([d_s0[:, :, None], exit_dstates[:, :, :-1]], axis=2)
    inner = jnp.sum(entry_states * entering_grads, axis=(3, 4))  # (B, H, splits)
    return jnp.sum(inner * layout.split_lengths(), axis=(0, 2))


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _attention(q, k, v, gamma, run, s0, static: _Static):
    o, final, _, _ = _forward(q, k, v, gamma, run, s0, static)
    return o, final


def _attention_fwd(q, k, v, gamma, run, s0, static: _Static):
    o, final, entry_states, entry_run = _forward(q, k, v, gamma, run, s0, static)
    return (o, final), (q, k, v, gamma, run, entry_states, entry_run)


def _attention_bwd(static: _Static, residuals, cotangents):
    q, k, v, gamma, run, entry_states, entry_run = residuals
    do, dfinal = cotangents
    do = do.astype(q.dtype)
    layout, config = static.layout, static.config
    if layout.splits == 1:
        exit_dstates = dfinal[:, :, None]
    else:
        (own,) = dv_walk(q, k, do, gamma, run, entry_run, None, emit_output=False,
                         emit_state=True, launch=config.dv, **static.kwargs)
        carries = _split_carries(gamma, run, entry_run, layout)
        exit_dstates, d_s0 = _scan_splits(dfinal, own, carries, reverse=True)
    dq, dgamma_q = dq_or_dk_walk("dq", q, k, v, do, gamma, run, entry_run, entry_states,
                                 launch=config.dq, **static.kwargs)
    if config.fused_dkdv:
        dk, dv, dgamma_k, *d_s0_out = dkdv_walk(q, k, v, do, gamma, run, entry_run,
                                                exit_dstates, emit_state=layout.splits == 1,
                                                launch=config.fused_dkdv, **static.kwargs)
    else:
        dk, dgamma_k = dq_or_dk_walk("dk", q, k, v, do, gamma, run, entry_run, exit_dstates,
                                     launch=config.dk, **static.kwargs)
        dv, *d_s0_out = dv_walk(q, k, do, gamma, run, entry_run, exit_dstates, emit_output=True,
                                emit_state=layout.splits == 1, dv_dtype=v.dtype,
                                launch=config.dv, **static.kwargs)
    if layout.splits == 1:
        d_s0 = d_s0_out[0][:, :, 0]
    dgamma = -(dgamma_q.sum(axis=(0, 2, 3)) + dgamma_k.sum(axis=(0, 2, 3))
               + _split_anchor_terms(entry_states, d_s0, exit_dstates, layout))
    return dq, dk, dv, dgamma[:, None].astype(gamma.dtype), None, d_s0


_attention.defvjp(_attention_fwd, _attention_bwd)
