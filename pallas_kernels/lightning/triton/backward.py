"""Triton backward kernels, the chunked form differentiated (docs/DESIGN.md, "The
backward"):

* dQ walks forward with the state ``S`` (recomputed from the split's entry state):
  ``dQ = ((dO Vᵀ) ⊙ intra) K + diag(query_decay) dO Sᵀ``;
* dK and dV walk backward with the reverse state ``dS`` (the gradient of the state
  after the chunk): ``dK = ((dO Vᵀ) ⊙ intra)ᵀ Q + diag(key_decay) V dSᵀ``,
  ``dV = ((Q Kᵀ) ⊙ intra)ᵀ dO + diag(key_decay) K dS``, and before the next chunk back
  ``dS ← carry · dS + (diag(query_decay) Q)ᵀ dO``. A dS-only pass from a zero start
  gives each split's own contribution, summed across splits. For small heads
  (the tuning row's ``fused_dkdv``) one walk holding the whole ``dS`` gives both.

The decay gradient is assembled from per-program partial sums (kernel_vjp.py;
docs/DESIGN.md, "The decay gradient"): with ``x_a = q_a·dq_a``, ``y_b = k_b·dk_b`` and the
state-crossing parts ``X = Σ q·dq_inter``, ``Y = Σ k·dk_state`` of global chunk ``g`` in
sequence split ``s`` (rows ``[s·L, e_s)``, ``e_s`` capped at ``T``),

    ∂L/∂γ = −[Σ_g (Σ_a a·x_a − Σ_b b·y_b + (e_s−1−g·C)(Y_g − X_g)) + Σ_s L_s·⟨S_s, dS_s⟩],

``S_s`` the state entering split ``s``, ``dS_s`` its gradient and ``L_s`` the split's real
length. It follows from ``Φ_g = ⟨S_g, dS_g⟩`` at chunk boundaries obeying
``Φ_{g+1} − Φ_g = Y_g − X_g``: each split's boundary terms are anchored at its own end.
Positions inside the chunk keep the large within-chunk terms free of cancellation; the
intra-chunk parts cancel between dQ and dK only if both walk the same chunks.
Conditioning: with an initial state, ``L_s·⟨S_s, dS_s⟩`` is cancelled by the boundary
terms of the split's chunks, so the float32 error is relative to ``L·|⟨S_s, dS_s⟩|``, the
split length, not the row length; ``dS_s`` must be the one the dK walk carries, not the
dS-only pass's, for the cancellation to be exact. With 16-bit rows the walks hold the
state and its update rows as hi/lo pairs (``chunk_math.split16``): rounded to 16 bits
once, the cancelling sums lost percents. All of this runs only when the decay is
differentiated (``decay_grad``; kernel_vjp.py).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.lightning.chunk_math import (
    boundary_weight,
    chunk_factors,
    chunk_length,
    decayed_outer,
    dot,
    state_product,
    tile_product,
    weighted,
    weighted_row_sum,
)
from pallas_kernels.lightning.launch import Launch
from pallas_kernels.lightning.layout import WalkLayout
from pallas_kernels.lightning.triton import specs


def _run_before(run_ref, entry_run, j, c):
    """Run id of the row before chunk ``j`` of the split (run ids never decrease)."""
    previous_chunk = run_ref[pl.ds(jnp.maximum(j - 1, 0) * c, c)]
    return jnp.where(j == 0, entry_run, jnp.max(previous_chunk))


def _boundary_weight(g, layout: WalkLayout):
    return boundary_weight(g, layout.chunk, layout.split_len, layout.seq_len)


def _dq_kernel(gamma_ref, entry_run_ref, run_ref, q_ref, k_ref, v_ref, do_ref, state_ref,
               dq_ref, *refs, layout: WalkLayout, decay_grad: bool):
    """The dQ walk; ``decay_grad``: also the decay-gradient partial (reading Q for it)."""
    (dgamma_ref,) = specs.optional_refs(refs, decay_grad)
    c = layout.chunk
    split = pl.program_id(3)
    gamma = jnp.max(gamma_ref[...])
    offsets = jnp.arange(c, dtype=jnp.float32)

    def body(j, carry):
        state, prev, partial = carry
        rows = pl.ds(j * c, c)
        k, v, do = k_ref[rows, :], v_ref[rows, :], do_ref[rows, :]
        g = layout.first_chunk(split) + j
        f = chunk_factors(gamma, run_ref[rows], prev, chunk_length(g, c, layout.seq_len))
        dp = weighted(dot(do, v.T), f.intra)
        dq_inter = weighted(state_product(do, state.T, decay_grad), f.query_decay[:, None])
        dq = tile_product(dp, k) + dq_inter
        dq_ref[rows, :] = dq.astype(dq_ref.dtype)
        if decay_grad:
            q = q_ref[rows, :]
            partial += (weighted_row_sum(q, dq, offsets) - _boundary_weight(g, layout)
                        * jnp.sum(q.astype(jnp.float32) * dq_inter))
        state = weighted(state, f.carry) + decayed_outer(k, f.key_decay, v, decay_grad)
        return state, f.last_run, partial

    init = (state_ref[...], jnp.max(entry_run_ref[...]), jnp.float32(0))
    _, _, partial = jax.lax.fori_loop(0, layout.chunks_per_split, body, init)
    if decay_grad:
        dgamma_ref[...] = jnp.full((1,), partial, jnp.float32)


def _dk_chunk(q, k, v, do, dstate, f, g, layout: WalkLayout, decay_grad: bool):
    """dK of one chunk and (``decay_grad``) its decay-gradient partial, else 0."""
    dp = weighted(dot(do, v.T), f.intra)
    dk_state = weighted(state_product(v, dstate.T, decay_grad), f.key_decay[:, None])
    dk = tile_product(dp.T, q) + dk_state
    if not decay_grad:
        return dk, jnp.float32(0)
    offsets = jnp.arange(layout.chunk, dtype=jnp.float32)
    partial = (_boundary_weight(g, layout) * jnp.sum(k.astype(jnp.float32) * dk_state)
               - weighted_row_sum(k, dk, offsets))
    return dk, partial


def _dv_chunk(q, k, do, dstate, f):
    """dV of one chunk (for the value columns of ``do`` and ``dstate``). The key decay
    selects the rows of the product ``K dS``, after it (a row of K weighted 0 would
    still meet an inf of ``dS``)."""
    scores = weighted(dot(q, k.T), f.intra)
    return (tile_product(scores.T, do)
            + weighted(state_product(k, dstate, precise=False), f.key_decay[:, None]))


def _backward_factors(gamma, run_ref, entry_run, j, g, layout: WalkLayout):
    c = layout.chunk
    return chunk_factors(gamma, run_ref[pl.ds(j * c, c)], _run_before(run_ref, entry_run, j, c),
                         chunk_length(g, c, layout.seq_len))


def _dk_kernel(gamma_ref, entry_run_ref, run_ref, q_ref, k_ref, v_ref, do_ref, dstate_ref,
               dk_ref, *refs, layout: WalkLayout, with_dv: bool, decay_grad: bool,
               emit_state: bool):
    """The dK walk; ``with_dv``: the fused walk over the whole ``dk × dv`` state, which
    writes dV too and reads q, k, v and dO once (the split walks read each
    feature-blocked operand once per block); ``decay_grad``: the decay-gradient partial."""
    dv_ref, dgamma_ref, dstate_out_ref = specs.optional_refs(refs, with_dv, decay_grad,
                                                             emit_state)
    c, n = layout.chunk, layout.chunks_per_split
    split = pl.program_id(3)
    gamma = jnp.max(gamma_ref[...])
    entry_run = jnp.max(entry_run_ref[...])

    def body(i, carry):
        dstate, partial = carry
        j = n - 1 - i
        rows = pl.ds(j * c, c)
        q, k, v, do = q_ref[rows, :], k_ref[rows, :], v_ref[rows, :], do_ref[rows, :]
        g = layout.first_chunk(split) + j
        f = _backward_factors(gamma, run_ref, entry_run, j, g, layout)
        dk, chunk_partial = _dk_chunk(q, k, v, do, dstate, f, g, layout, decay_grad)
        dk_ref[rows, :] = dk.astype(dk_ref.dtype)
        if with_dv:
            dv_ref[rows, :] = _dv_chunk(q, k, do, dstate, f).astype(dv_ref.dtype)
        dstate = weighted(dstate, f.carry) + decayed_outer(q, f.query_decay, do, decay_grad)
        return dstate, partial + chunk_partial

    dstate, partial = jax.lax.fori_loop(0, n, body, (dstate_ref[...], jnp.float32(0)))
    if decay_grad:
        dgamma_ref[...] = jnp.full((1,), partial, jnp.float32)
    if emit_state:
        dstate_out_ref[...] = dstate


def _dv_kernel(gamma_ref, entry_run_ref, run_ref, q_ref, k_ref, do_ref, *refs,
               layout: WalkLayout, has_state_in: bool, emit_output: bool,
               emit_state: bool):
    dstate_in_ref, dv_ref, dstate_out_ref = specs.optional_refs(
        refs, has_state_in, emit_output, emit_state)
    c, n = layout.chunk, layout.chunks_per_split
    split = pl.program_id(3)
    gamma = jnp.max(gamma_ref[...])
    entry_run = jnp.max(entry_run_ref[...])
    dstate = specs.state_or_zeros(dstate_in_ref, (q_ref.shape[-1], do_ref.shape[-1]))

    def body(i, dstate):
        j = n - 1 - i
        rows = pl.ds(j * c, c)
        q, do = q_ref[rows, :], do_ref[rows, :]
        f = _backward_factors(gamma, run_ref, entry_run, j, layout.first_chunk(split) + j,
                              layout)
        if emit_output:
            dv_ref[rows, :] = _dv_chunk(q, k_ref[rows, :], do, dstate, f).astype(dv_ref.dtype)
        return weighted(dstate, f.carry) + decayed_outer(q, f.query_decay, do, precise=False)

    dstate = jax.lax.fori_loop(0, n, body, dstate)
    if emit_state:
        dstate_out_ref[...] = dstate


def dq_or_dk_walk(which: str, q, k, v, do, gamma, run, entry_run, state, *,
                  layout: WalkLayout, launch: Launch, interpret: bool,
                  decay_grad: bool) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """``which="dq"``: ``state`` = states entering each split; ``"dk"``: gradients of the
    states leaving each split. Returns dq or dk, and with ``decay_grad`` the
    decay-gradient partials and, for dk, the ``dS`` entering each split as the walk carries
    it (splits.split_anchor_terms), else None for both."""
    target = q if which == "dq" else k
    emit_state = decay_grad and which == "dk"
    batch, _, heads, dk = q.shape
    dv, block_k = v.shape[-1], launch.block
    layout = layout.with_chunk(launch.chunk)
    in_specs = specs.qk_specs(layout, block_k, blocked=True) + [
        specs.rows_spec(layout, dv, blocked=False),
        specs.rows_spec(layout, do.shape[-1], blocked=False),
        specs.state_spec(block_k, dv, "dk")]
    grid = (batch, heads, dk // block_k, layout.splits)
    out_specs = [specs.rows_spec(layout, block_k, blocked=True)]
    out_shape = [jax.ShapeDtypeStruct(target.shape, target.dtype)]
    if decay_grad:
        out_specs.append(specs.partial_sum_spec())
        out_shape.append(jax.ShapeDtypeStruct((batch, heads, grid[2], layout.splits),
                                              jnp.float32))
    if emit_state:
        out_specs.append(specs.state_spec(block_k, dv, "dk"))
        out_shape.append(jax.ShapeDtypeStruct(state.shape, jnp.float32))
    kernel = (functools.partial(_dq_kernel, layout=layout, decay_grad=decay_grad)
              if which == "dq" else
              functools.partial(_dk_kernel, layout=layout, with_dv=False,
                                decay_grad=decay_grad, emit_state=emit_state))
    out, *rest = specs.walk_call(
        kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
        launch=launch, interpret=interpret, name=f"lightning_bwd_{which}")(
        gamma, entry_run, run, q, k, v, do, state)
    partials = rest.pop(0) if decay_grad else None
    return out, partials, rest.pop(0) if emit_state else None


def dv_walk(q, k, do, gamma, run, entry_run, exit_dstate, *, layout: WalkLayout,
            launch: Launch, interpret: bool, emit_output: bool, emit_state: bool,
            dv_dtype=None) -> list[jax.Array]:
    """``exit_dstate``: gradients of the states leaving each split, or None (zero).
    Returns ``[dv]``, ``[dS entering each split]`` or both, as asked."""
    name = "lightning_bwd_dv" if emit_output else "lightning_bwd_split_dstates"
    return specs.value_block_walk(
        _dv_kernel, q, k, do, gamma, run, entry_run, exit_dstate,
        out_dtype=dv_dtype or do.dtype,
        emit_output=emit_output, emit_state=emit_state, layout=layout, launch=launch,
        interpret=interpret, name=name)


def dkdv_walk(q, k, v, do, gamma, run, entry_run, exit_dstate, *, layout: WalkLayout,
              launch: Launch, interpret: bool, decay_grad: bool,
              emit_state: bool) -> list[jax.Array]:
    """The fused dK/dV walk, one program per ``(batch, head, split)``. Returns
    ``[dk, dv]``, then the decay-gradient partials if ``decay_grad`` and the ``dS``
    entering each split if ``emit_state``."""
    batch, _, heads, dk = q.shape
    dv = v.shape[-1]
    layout = layout.with_chunk(launch.chunk)
    in_specs = specs.qk_specs(layout, dk, blocked=False) + [
        specs.rows_spec(layout, dv, blocked=False), specs.rows_spec(layout, dv, blocked=False),
        specs.state_spec(dk, dv, "dv")]
    out_specs = [specs.rows_spec(layout, dk, blocked=False),
                 specs.rows_spec(layout, dv, blocked=False)]
    out_shape = [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)]
    if decay_grad:
        out_specs.append(specs.partial_sum_spec())
        out_shape.append(jax.ShapeDtypeStruct((batch, heads, 1, layout.splits), jnp.float32))
    if emit_state:
        out_specs.append(specs.state_spec(dk, dv, "dv"))
        out_shape.append(jax.ShapeDtypeStruct(exit_dstate.shape, jnp.float32))
    return specs.walk_call(
        functools.partial(_dk_kernel, layout=layout, with_dv=True, decay_grad=decay_grad,
                          emit_state=emit_state),
        grid=(batch, heads, 1, layout.splits),
        in_specs=in_specs, out_specs=out_specs, out_shape=out_shape, launch=launch,
        interpret=interpret, name="lightning_bwd_dkdv")(
        gamma, entry_run, run, q, k, v, do, exit_dstate)
