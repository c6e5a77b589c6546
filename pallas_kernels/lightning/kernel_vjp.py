"""The Pallas kernels behind ``jax.custom_vjp``: padding, the sums across sequence
splits, and the assembly of the decay gradient.

When the grid ``(batch, head, feature block)`` alone is too small to fill the GPU,
the sequence is cut into splits: a state-only pass gives each split's own contribution
(in parallel), one weighted sum over the split boundaries (``_boundary_transfers``) makes
the state entering each split, then the output pass runs all splits in parallel. The
backward pass does the same in reverse for ``dS``. The state-only passes cover every
split but one (the forward's last, the backward's first), in finer splits of their own
(``state_layout``) so that they too fill the GPU. With one split each pass is a single
kernel.

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
    layout: WalkLayout                      # the output walks' sequence splits
    state_layout: WalkLayout                # the state-only passes': each of those cut in
                                            # `factor` (tuning.state_split_factor)
    config: tuning.KernelConfig             # with the decay fixed
    decay_grad_config: tuning.KernelConfig  # the backward's, for the decay gradient too
    interpret: bool

    @property
    def kwargs(self) -> dict:
        return dict(layout=self.layout, interpret=self.interpret)

    @property
    def factor(self) -> int:
        return self.state_layout.splits // self.layout.splits


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
                                interpret, chunks_per_split=None, state_split_factor=None):
    """Validated op inputs in, ``(o, final_state)`` out. ``chunks_per_split`` and
    ``state_split_factor`` override the split policies (tests use them to cover one split
    and many)."""
    batch, seq, heads, dk = q.shape
    dv = v.shape[-1]
    dk_pad, dv_pad = tuning.padded_head_dim(dk), tuning.padded_head_dim(dv)
    itemsize = max(jnp.dtype(q.dtype).itemsize, jnp.dtype(v.dtype).itemsize)
    config, decay_grad_config = (
        tuning.kernel_config(dk_pad, dv_pad, chunk_size, itemsize,
                             mosaic=interpret or tuning.has_wgmma(), decay_grad=decay_grad)
        for decay_grad in (False, True))
    assert config.chunk == decay_grad_config.chunk, "both backward launches pad alike"
    layout, state_layout = split_layouts(config, batch, heads, seq, dv_pad,
                                         chunks_per_split, state_split_factor)
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
                          _Static(layout, state_layout, config, decay_grad_config,
                                  interpret))
    return o[:, :seq, :, :dv], final[:, :, :dk, :dv]


def split_layouts(config: tuning.KernelConfig, batch: int, heads: int, seq: int, dv: int,
                  chunks_per_split: int | None = None,
                  state_split_factor: int | None = None) -> tuple[WalkLayout, WalkLayout]:
    """The sequence splits of the output walks and of the state-only passes, by the split
    policies (tuning.split_chunks, tuning.state_split_factor) unless overridden; ``dv``
    padded."""
    n_chunks = -(-seq // config.chunk)
    if chunks_per_split is None:
        chunks_per_split = tuning.split_chunks(
            n_chunks, batch * heads * dv // config.forward.block, config.forward.lowering)
    chunks_per_split = min(chunks_per_split, n_chunks)
    layout = WalkLayout(chunk=config.chunk, chunks_per_split=chunks_per_split,
                        splits=-(-n_chunks // chunks_per_split), seq_len=seq)
    if state_split_factor is None:
        state_split_factor = tuning.state_split_factor(
            chunks_per_split, batch * heads * dv // config.states.block, layout.splits,
            config.states.lowering)
    if chunks_per_split % state_split_factor:
        raise ValueError(f"state_split_factor must divide the {chunks_per_split} chunks per "
                         f"split, got {state_split_factor}")
    return layout, dataclasses.replace(layout, splits=layout.splits * state_split_factor,
                                       chunks_per_split=chunks_per_split // state_split_factor)


def _entry_runs(run, layout: WalkLayout):
    """``(B, splits)``: run id of the row before each split (the first row's for split 0)."""
    split_ends = run[:, layout.split_len - 1::layout.split_len]
    return jnp.concatenate([run[:, :1], split_ends[:, :-1]], axis=1)


def _boundary_transfers(gamma, run, layout: WalkLayout) -> jax.Array:
    """``(B, H, F+1, F+1)`` over the boundaries ``0 … F`` of the ``F`` splits: entry
    ``[i, j]`` is the factor by which the state at boundary ``i`` reaches boundary ``j``,
    ``λ`` to the real rows between (0 if a run starts between); 0 for ``i > j``."""
    split_ends = run[:, layout.split_len - 1::layout.split_len]
    resets = jnp.cumsum(split_ends != _entry_runs(run, layout), axis=1)
    resets = jnp.pad(resets, [(0, 0), (1, 0)])  # (B, F+1): runs started before each boundary
    rows = jnp.pad(jnp.cumsum(layout.split_lengths()), [(1, 0)])  # (F+1,)
    boundary = jnp.arange(layout.splits + 1)
    reaches = ((boundary[:, None] <= boundary[None, :])
               & (resets[:, :, None] == resets[:, None, :]))
    decay = jnp.exp(-gamma[:, :, None] * jnp.maximum(rows[None, :] - rows[:, None], 0.0))
    return jnp.where(reaches[:, None], decay[None], 0.0)


def _weighted_sum(weights, values) -> jax.Array:
    """``(B, H, P, I) × (B, H, I, dk, dv) → (B, H, P, dk, dv)``, in float32."""
    return jnp.einsum("bhpi,bhixy->bhpxy", weights, values,
                      precision=jax.lax.Precision.HIGHEST)


def _forward(q, k, v, gamma, run, s0, static: _Static):
    """``(o, final state, the state entering each split, entry runs)``. With several
    splits: the state-only pass gives the own state of each state split before the last
    output split (the output pass carries the state through that one to the final
    state), a weighted sum makes the states entering the output splits, and the output
    pass runs them all."""
    layout, states = static.layout, static.state_layout
    entry_run = _entry_runs(run, layout)
    if layout.splits == 1:
        entry_states = s0[:, :, None]
    else:
        leading = dataclasses.replace(states, splits=states.splits - static.factor)
        (own,) = forward_walk(q, k, v, gamma, run, _entry_runs(run, states)[:, :leading.splits],
                              None, emit_output=False, emit_state=True,
                              launch=static.config.states, layout=leading,
                              interpret=static.interpret)
        # s0 sits at boundary 0 and split r's own state at boundary r + 1; the output
        # splits start at every factor-th boundary.
        to_starts = _boundary_transfers(gamma, run, states)[:, :, :leading.splits + 1,
                                                             :-1:static.factor]
        entry_states = (to_starts[:, :, 0, :, None, None] * s0[:, :, None]
                        + _weighted_sum(jnp.swapaxes(to_starts[:, :, 1:], 2, 3), own))
    o, ends = forward_walk(q, k, v, gamma, run, entry_run, entry_states, emit_output=True,
                           emit_state=True, launch=static.config.forward, **static.kwargs)
    return o, ends[:, :, -1], entry_states, entry_run


def _split_exit_dstates(q, k, do, gamma, run, dfinal, static: _Static, launch,
                        with_initial: bool):
    """``(dS leaving each output split, dS entering the sequence or None)``. The dS-only
    pass gives the own dS of each state split; those of the first output split matter
    only to the initial state's gradient, so they are walked only ``with_initial``."""
    states, factor = static.state_layout, static.factor
    first = 0 if with_initial else factor
    tail = dataclasses.replace(states, splits=states.splits - first, first_split=first)
    (own,) = dv_walk(q, k, do, gamma, run, _entry_runs(run, states)[:, first:], None,
                     emit_output=False, emit_state=True, launch=launch, layout=tail,
                     interpret=static.interpret)
    # Split r's own dS sits at boundary r and dfinal at the last one; the output splits
    # end at every factor-th boundary (with_initial: also the sequence's start, 0).
    from_ends = _boundary_transfers(gamma, run, states)[:, :, first::factor, first:]
    dstates = (from_ends[:, :, :, -1, None, None] * dfinal[:, :, None]
               + _weighted_sum(from_ends[:, :, :, :-1], own))
    return (dstates[:, :, 1:], dstates[:, :, 0]) if with_initial else (dstates, None)


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
    # The dS entering the sequence, if asked for: the dK walk's with the decay gradient,
    # else the dS-only pass's with several splits, or the dV walk's with one.
    d_s0_from_dv = res.initial_state_grad and not decay_grad
    if layout.splits == 1:
        exit_dstates, d_s0 = dfinal[:, :, None], None
    else:
        exit_dstates, d_s0 = _split_exit_dstates(q, k, do, gamma, run, dfinal, static,
                                                 config.states, with_initial=d_s0_from_dv)
    emit_d_s0 = layout.splits == 1 and d_s0_from_dv
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
