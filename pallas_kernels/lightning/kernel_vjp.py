"""The Pallas kernels behind ``jax.custom_vjp``: the launch configuration, padding, the
passes of the forward and the backward (passes.py), their sums across sequence splits
(splits.py), and the assembly of the decay gradient. ``padded_call``,
``forward_passes`` and ``backward_passes`` also serve context parallelism
(context_kernels.py), which hands them the split states of its own state passes.

The custom VJP sees which inputs are differentiated (``symbolic_zeros``): fixed decays
(TNL's) skip the decay gradient, whose partial sums need the dQ and dK walks to read Q
and K and to hold the state to float32 precision (docs/DESIGN.md, "The decay gradient").
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name
from jax.custom_derivatives import SymbolicZero

from pallas_kernels.lightning import passes, splits, tuning
from pallas_kernels.lightning.chunk_math import finite_decay
from pallas_kernels.lightning.launch import KernelConfig
from pallas_kernels.lightning.layout import SPLIT_STATES_NAME, WalkLayout
from pallas_kernels.lightning.manual_axes import summed_like, varying_axes
from pallas_kernels.lightning.validation import reverse_mode_only


@dataclasses.dataclass(frozen=True)
class Static:
    layout: WalkLayout               # the output walks' sequence splits
    state_layout: WalkLayout         # the state-only passes': each of those cut finer
    config: KernelConfig             # with the decay fixed
    decay_grad_config: KernelConfig  # the backward's, for the decay gradient too
    interpret: bool

    @property
    def backend(self) -> str:
        return "interpret" if self.interpret else "pallas"

    @property
    def kwargs(self) -> dict:
        return dict(layout=self.layout, interpret=self.interpret)


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["q", "k", "v", "gamma", "run", "entry_states", "entry_run"],
                   meta_fields=["decay_grad", "initial_state_grad", "initial_state_axes"])
@dataclasses.dataclass(frozen=True)
class Residuals:
    q: jax.Array
    k: jax.Array
    v: jax.Array
    gamma: jax.Array
    run: jax.Array
    entry_states: jax.Array  # (B, H, splits, dk, dv): the state entering each split
    entry_run: jax.Array
    decay_grad: bool          # whether the decay is differentiated
    initial_state_grad: bool  # whether the initial state is
    initial_state_axes: frozenset  # the manual mesh axes it varies along (shard_map)


def launch_configs(kernel_config: KernelConfig | None, dk: int, dv: int,
                   chunk_size: int | None, itemsize: int,
                   interpret: bool) -> tuple[KernelConfig, KernelConfig]:
    """``(config, decay_grad_config)`` for padded ``(dk, dv)``: the caller's, resolved
    (tuning.resolve), or the tables' (tuning.kernel_config). The second is the
    backward's when the decay is differentiated (the dQ and dK walks hold more)."""
    if kernel_config is None:
        configs = tuple(tuning.kernel_config(dk, dv, chunk_size, itemsize,
                                             mosaic=interpret or tuning.has_wgmma(),
                                             decay_grad=decay_grad)
                        for decay_grad in (False, True))
    else:
        configs = tuple(tuning.resolve(kernel_config, dk, dv, itemsize=itemsize,
                                       decay_grad=decay_grad)
                        for decay_grad in (False, True))
    assert configs[0].chunk == configs[1].chunk, "both backward launches pad alike"
    return configs


def lightning_attention_kernels(q, k, v, decay, *, run_ids, initial_state, chunk_size,
                                interpret, kernel_config: KernelConfig | None = None):
    """Validated op inputs in, ``(o, final_state)`` out. ``kernel_config``: the launches
    and sequence splits to use instead of the tables and split policies."""
    seq, dk, dv = q.shape[1], q.shape[-1], v.shape[-1]
    args, static = padded_call(q, k, v, decay, run_ids=run_ids, initial_state=initial_state,
                               chunk_size=chunk_size, interpret=interpret,
                               kernel_config=kernel_config)
    o, final = _attention(*args, static)
    return o[:, :seq, :, :dv], final[:, :, :dk, :dv]


def padded_call(q, k, v, decay, *, run_ids, initial_state, chunk_size, interpret,
                kernel_config: KernelConfig | None):
    """``((q, k, v, gamma, run, s0) padded as the walks take them, the launches and
    splits)`` for the op's inputs (``v`` may be any ``(B, T, H, dv)`` rows, ``do`` for a
    dS-only pass)."""
    batch, seq, heads, dk = q.shape
    dv = v.shape[-1]
    dk_pad, dv_pad = tuning.padded_head_dim(dk), tuning.padded_head_dim(dv)
    itemsize = max(jnp.dtype(q.dtype).itemsize, jnp.dtype(v.dtype).itemsize)
    config, decay_grad_config = launch_configs(kernel_config, dk_pad, dv_pad, chunk_size,
                                               itemsize, interpret)
    layout, state_layout = splits.split_layouts(config, batch, heads, seq, dv_pad)
    rows = layout.padded_len - seq

    def pad(x, width):
        return jnp.pad(x, [(0, 0), (0, rows), (0, 0), (0, width - x.shape[-1])])

    run = jnp.zeros((batch, seq), jnp.int32) if run_ids is None else run_ids
    run = jnp.pad(run, [(0, 0), (0, rows)], mode="edge")
    if initial_state is None:
        initial_state = jnp.zeros((batch, heads, dk, dv), jnp.float32)
    s0 = jnp.pad(initial_state.astype(jnp.float32),
                 [(0, 0), (0, 0), (0, dk_pad - dk), (0, dv_pad - dv)])
    # Outside the custom VJP: a decay of +inf gets the gradient 0 exactly (the walks'
    # partial sums would give rounding noise about 0).
    gamma = finite_decay(decay.astype(jnp.float32)).reshape(heads, 1)
    static = Static(layout, state_layout, config, decay_grad_config, interpret)
    return (pad(q, dk_pad), pad(k, dk_pad), pad(v, dv_pad), gamma, run, s0), static


def forward_passes(q, k, v, gamma, run, s0, static: Static, own_states=None):
    """``(o, final state, the state entering each split, entry runs)``; ``own_states``:
    every state split's own state, computed already (else the state-only pass runs)."""
    q, k, v, gamma, s0 = reverse_mode_only(static.backend, (q, k, v, gamma, s0))
    layout = static.layout
    entry_run = splits.entry_runs(run, layout)
    if layout.splits == 1:
        entry_states = s0[:, :, None]
    else:
        entry_states = splits.entering_states(q, k, v, gamma, run, s0, layout,
                                              static.state_layout, static.config.states,
                                              static.interpret, own=own_states)
    o, ends = passes.forward(q, k, v, gamma, run, entry_run, entry_states, emit_output=True,
                             emit_state=True, launch=static.config.forward, **static.kwargs)
    return o, ends[:, :, -1], entry_states, entry_run


def _materialized(cotangent) -> jax.Array:
    """A cotangent, with a symbolic zero (an output not differentiated) made an array."""
    if isinstance(cotangent, SymbolicZero):
        return jnp.zeros(cotangent.aval.shape, cotangent.aval.dtype)
    return cotangent


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _attention(q, k, v, gamma, run, s0, static: Static):
    o, final, _, _ = forward_passes(q, k, v, gamma, run, s0, static)
    return o, final


def _attention_fwd(q, k, v, gamma, run, s0, static: Static):
    """Arguments arrive as ``CustomVJPPrimal`` (``symbolic_zeros``): value and perturbed."""
    o, final, entry_states, entry_run = forward_passes(
        q.value, k.value, v.value, gamma.value, run.value, s0.value, static)
    entry_states = checkpoint_name(entry_states, SPLIT_STATES_NAME)
    return (o, final), Residuals(q.value, k.value, v.value, gamma.value, run.value,
                                  entry_states, entry_run, decay_grad=gamma.perturbed,
                                  initial_state_grad=s0.perturbed,
                                  initial_state_axes=varying_axes(s0.value))


def _key_gradients(res: Residuals, do, exit_dstates, config: KernelConfig,
                   static: Static, emit_d_s0: bool):
    """``(dk, dv, dK walk's decay-gradient partials or None, dS entering each split or
    None)``: one fused walk, or the dK and dV walks."""
    q, k, v, gamma, run, entry_run = res.q, res.k, res.v, res.gamma, res.run, res.entry_run
    decay_grad = res.decay_grad
    if config.fused_dkdv:
        dk, dv, *rest = passes.dkdv(q, k, v, do, gamma, run, entry_run, exit_dstates,
                                    decay_grad=decay_grad, emit_state=emit_d_s0 or decay_grad,
                                    launch=config.fused_dkdv, **static.kwargs)
        dgamma_k = rest.pop(0) if decay_grad else None
        return dk, dv, dgamma_k, rest[0] if rest else None
    dk, dgamma_k, entering_dstates = passes.dk(
        q, k, v, do, gamma, run, entry_run, exit_dstates, launch=config.dk,
        decay_grad=decay_grad, **static.kwargs)
    dv, *rest = passes.dv(q, k, do, gamma, run, entry_run, exit_dstates, emit_output=True,
                          emit_state=emit_d_s0, dv_dtype=v.dtype, launch=config.dv,
                          **static.kwargs)
    if rest:
        entering_dstates = rest[0]
    return dk, dv, dgamma_k, entering_dstates


def _attention_bwd(static: Static, res: Residuals, cotangents):
    res, (do, dfinal) = reverse_mode_only(
        static.backend, (res, tuple(_materialized(x) for x in cotangents)))
    return backward_passes(static, res, do, dfinal)


def backward_passes(static: Static, res: Residuals, do, dfinal, own_dstates=None):
    """``(dq, dk, dv, d gamma, None, d s0)``; ``own_dstates``: every state split's own
    ``dS`` from ``do``, computed already (else the dS-only pass runs)."""
    q, k, gamma, run = res.q, res.k, res.gamma, res.run
    do = do.astype(q.dtype)
    layout, decay_grad = static.layout, res.decay_grad
    config = static.decay_grad_config if decay_grad else static.config
    # The dS entering the sequence, if asked for: the dK walk's with the decay gradient,
    # else the dS-only pass's with several splits, or the dV walk's with one.
    d_s0_from_dv = res.initial_state_grad and not decay_grad
    if layout.splits == 1:
        exit_dstates, d_s0 = dfinal[:, :, None], None
    else:
        exit_dstates, d_s0 = splits.exit_dstates(q, k, do, gamma, run, dfinal, layout,
                                                 static.state_layout, config.states,
                                                 static.interpret, with_initial=d_s0_from_dv,
                                                 own=own_dstates)
    emit_d_s0 = layout.splits == 1 and d_s0_from_dv
    dq, dgamma_q = passes.dq(q, k, res.v, do, gamma, run, res.entry_run, res.entry_states,
                             launch=config.dq, decay_grad=decay_grad, **static.kwargs)
    dk, dv, dgamma_k, entering_dstates = _key_gradients(res, do, exit_dstates, config,
                                                        static, emit_d_s0)
    if entering_dstates is not None:
        d_s0 = entering_dstates[:, :, 0]
    dgamma = None
    if decay_grad:
        dgamma = -(dgamma_q.sum(axis=(0, 2, 3)) + dgamma_k.sum(axis=(0, 2, 3))
                   + splits.split_anchor_terms(res.entry_states, entering_dstates, layout))
        dgamma = summed_like(dgamma[:, None].astype(gamma.dtype), varying_axes(gamma))
    d_s0 = summed_like(d_s0, res.initial_state_axes) if res.initial_state_grad else None
    return dq, dk, dv, dgamma, None, d_s0


_attention.defvjp(_attention_fwd, _attention_bwd, symbolic_zeros=True)
