"""The Pallas kernels behind ``jax.custom_vjp``: padding, the scans across sequence
splits, and the assembly of the decay gradient.

When the grid ``(batch, head, feature block)`` alone is too small to fill the GPU,
the sequence is cut into splits: a state-only pass gives each split's contribution
(in parallel), a short ``lax.scan`` over splits makes the state entering each one,
then the output pass runs all splits in parallel. The backward pass does the same in
reverse for ``dS``. With one split each pass is a single kernel.

The custom VJP sees which inputs are differentiated (``symbolic_zeros``): fixed decays
(TNL's) skip the decay gradient, whose partial sums need the dQ and dK walks to read Q
and K and to hold the state to float32 precision.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from pallas_kernels.lightning import tuning
from pallas_kernels.lightning.backward import dkdv_walk, dq_or_dk_walk, dv_walk
from pallas_kernels.lightning.forward import forward_walk
from pallas_kernels.lightning.walk_specs import WalkLayout


@dataclasses.dataclass(frozen=True)
class _Static:
    layout: WalkLayout
    config: tuning.KernelConfig             # with the decay fixed
    decay_grad_config: tuning.KernelConfig  # the backward's, for the decay gradient too
    interpret: bool

    @property
    def kwargs(self) -> dict:
        return dict(layout=self.layout, interpret=self.interpret)


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["q", "k", "v", "gamma", "run", "entry_states", "entry_run"],
                   meta_fields=["decay_grad", "initial_state_grad"])
@dataclasses.dataclass(frozen=True)
class _Residuals:
    q: jax.Array
    k: jax.Array
    v: jax.Array
    gamma: jax.Array
    run: jax.Array
    entry_states: jax.Array  # (B, H, splits, dk, dv): the state entering each split
    entry_run: jax.Array
    decay_grad: bool          # whether the decay is differentiated
    initial_state_grad: bool  # whether the initial state is


def lightning_attention_kernels(q, k, v, decay, *, run_ids, initial_state, chunk_size,
                                interpret, chunks_per_split=None):
    """Validated op inputs in, ``(o, final_state)`` out. ``chunks_per_split`` overrides
    the split policy (tests use it to cover one split and many)."""
    batch, seq, heads, dk = q.shape
    dv = v.shape[-1]
    dk_pad, dv_pad = tuning.padded_head_dim(dk), tuning.padded_head_dim(dv)
    itemsize = max(jnp.dtype(q.dtype).itemsize, jnp.dtype(v.dtype).itemsize)
    config, decay_grad_config = (
        tuning.kernel_config(dk_pad, dv_pad, chunk_size, itemsize,
                             mosaic=interpret or tuning.has_wgmma(), decay_grad=decay_grad)
        for decay_grad in (False, True))
    assert config.chunk == decay_grad_config.chunk, "both backward launches pad alike"
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
                          _Static(layout, config, decay_grad_config, interpret))
    return o[:, :seq, :, :dv], final[:, :, :dk, :dv]


def _entry_runs(run, layout: WalkLayout):
    """``(B, splits)``: run id of the row before each split (the first row's for split 0)."""
    split_ends = run[:, layout.split_len - 1::layout.split_len]
    return jnp.concatenate([run[:, :1], split_ends[:, :-1]], axis=1)


def _split_carries(gamma, run, entry_run, layout: WalkLayout):
    """``(B, H, splits)``: ``λ^ℓ`` over each split, 0 where a run starts inside it."""
    split_ends = run[:, layout.split_len - 1::layout.split_len][:, :layout.splits]
    decays = jnp.exp(-gamma[:, :1] * layout.split_lengths()[None, :])  # (H, splits)
    return jnp.where((split_ends == entry_run)[:, None, :], decays[None], 0.0)


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
    """``(o, final state, the state entering each split, entry runs)``. With several
    splits: each split but the last gives its own state (the last one's is not needed:
    the output pass carries the state through it to the final state), a scan makes the
    states entering every split, and the output pass runs all splits."""
    layout, launch = static.layout, static.config.forward
    entry_run = _entry_runs(run, layout)
    if layout.splits == 1:
        entry_states = s0[:, :, None]
    else:
        leading = dataclasses.replace(layout, splits=layout.splits - 1)
        (own,) = forward_walk(q, k, v, gamma, run, entry_run[:, :-1], None,
                              emit_output=False, emit_state=True, launch=launch,
                              layout=leading, interpret=static.interpret)
        carries = _split_carries(gamma, run, entry_run[:, :-1], leading)
        entering, last = _scan_splits(s0, own, carries, reverse=False)
        entry_states = jnp.concatenate([entering, last[:, :, None]], axis=2)
    o, ends = forward_walk(q, k, v, gamma, run, entry_run, entry_states, emit_output=True,
                           emit_state=True, launch=launch, **static.kwargs)
    return o, ends[:, :, -1], entry_states, entry_run


def _split_anchor_terms(entry_states, entering_dstates, layout: WalkLayout):
    """``(H,)``: ``Σ_s L_s·⟨S_s, dS_s⟩`` of the decay gradient (backward.py), ``S_s`` the
    state entering split ``s`` and ``dS_s`` its gradient as the dK walk carries it: the
    dK walk's boundary terms, weighted up to ``L_s``, cancel against that ``dS`` to
    float32 precision only if it is the walk's own (the dS-only pass rounds differently)."""
    inner = jnp.sum(entry_states * entering_dstates, axis=(3, 4))  # (B, H, splits)
    return jnp.sum(inner * layout.split_lengths(), axis=(0, 2))


def _materialized(cotangent) -> jax.Array:
    """A cotangent, with a symbolic zero (an output not differentiated) made an array."""
    if isinstance(cotangent, SymbolicZero):
        return jnp.zeros(cotangent.aval.shape, cotangent.aval.dtype)
    return cotangent


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _attention(q, k, v, gamma, run, s0, static: _Static):
    o, final, _, _ = _forward(q, k, v, gamma, run, s0, static)
    return o, final


def _attention_fwd(q, k, v, gamma, run, s0, static: _Static):
    """Arguments arrive as ``CustomVJPPrimal`` (``symbolic_zeros``): value and perturbed."""
    o, final, entry_states, entry_run = _forward(
        q.value, k.value, v.value, gamma.value, run.value, s0.value, static)
    return (o, final), _Residuals(q.value, k.value, v.value, gamma.value, run.value,
                                  entry_states, entry_run, decay_grad=gamma.perturbed,
                                  initial_state_grad=s0.perturbed)


def _attention_bwd(static: _Static, res: _Residuals, cotangents):
    q, k, v, gamma, run, entry_run = res.q, res.k, res.v, res.gamma, res.run, res.entry_run
    do, dfinal = (_materialized(x) for x in cotangents)
    do = do.astype(q.dtype)
    layout, decay_grad = static.layout, res.decay_grad
    config = static.decay_grad_config if decay_grad else static.config
    if layout.splits == 1:
        exit_dstates = dfinal[:, :, None]
    else:
        (own,) = dv_walk(q, k, do, gamma, run, entry_run, None, emit_output=False,
                         emit_state=True, launch=config.dv, **static.kwargs)
        carries = _split_carries(gamma, run, entry_run, layout)
        exit_dstates, d_s0 = _scan_splits(dfinal, own, carries, reverse=True)
    # The dS entering each split: the dK walk's with the decay gradient, else the dV
    # walk's if there is one split (with several, the scan gave d_s0).
    emit_d_s0 = layout.splits == 1 and res.initial_state_grad and not decay_grad
    dq, dgamma_q, _ = dq_or_dk_walk("dq", q, k, v, do, gamma, run, entry_run,
                                    res.entry_states, launch=config.dq,
                                    decay_grad=decay_grad, **static.kwargs)
    if config.fused_dkdv:
        dk, dv, *rest = dkdv_walk(q, k, v, do, gamma, run, entry_run, exit_dstates,
                                  decay_grad=decay_grad, emit_state=emit_d_s0 or decay_grad,
                                  launch=config.fused_dkdv, **static.kwargs)
        dgamma_k = rest.pop(0) if decay_grad else None
        entering_dstates = rest[0] if rest else None
    else:
        dk, dgamma_k, entering_dstates = dq_or_dk_walk(
            "dk", q, k, v, do, gamma, run, entry_run, exit_dstates, launch=config.dk,
            decay_grad=decay_grad, **static.kwargs)
        dv, *rest = dv_walk(q, k, do, gamma, run, entry_run, exit_dstates, emit_output=True,
                            emit_state=emit_d_s0, dv_dtype=v.dtype, launch=config.dv,
                            **static.kwargs)
        if rest:
            entering_dstates = rest[0]
    if entering_dstates is not None:
        d_s0 = entering_dstates[:, :, 0]
    dgamma = None
    if decay_grad:
        dgamma = -(dgamma_q.sum(axis=(0, 2, 3)) + dgamma_k.sum(axis=(0, 2, 3))
                   + _split_anchor_terms(res.entry_states, entering_dstates, layout))
        dgamma = dgamma[:, None].astype(gamma.dtype)
    return dq, dk, dv, dgamma, None, d_s0 if res.initial_state_grad else None


_attention.defvjp(_attention_fwd, _attention_bwd, symbolic_zeros=True)
