"""The passes of the op, each in the lowering its launch names: the one place that
chooses between Triton (triton/) and Mosaic GPU (mosaic/, with the pass's operand
roles, mosaic/roles.py).

Arguments are padded (kernel_vjp.py): rows ``(B, Tp, H, d)``, ``gamma (H, 1)``, run ids
``(B, Tp)``, ``entry_run (B, splits)`` (the run before each split; Triton only), states
``(B, H, splits, dk, dv)`` float32. ``layout`` gives the sequence splits, ``launch`` the
pass's launch (its lowering, block, chunk and pipeline).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.lightning.launch import Launch
from pallas_kernels.lightning.layout import WalkLayout
from pallas_kernels.lightning.mosaic import roles as mosaic_roles
from pallas_kernels.lightning.mosaic.walk import mosaic_walk
from pallas_kernels.lightning.triton import backward as triton_backward
from pallas_kernels.lightning.triton import forward as triton_forward


def _mosaic(roles: mosaic_roles.WalkRoles, rows: dict, gamma, run, state, *,
            decay_grad: bool = False, **kwargs) -> list[jax.Array]:
    """The Mosaic GPU walk with the pass's operands in their roles."""
    if roles.transposed_state:
        state = jnp.swapaxes(state, -1, -2)
    return mosaic_walk(rows[roles.a], rows[roles.b], rows[roles.c], gamma, run, state,
                       reverse=roles.reverse,
                       decay_grad_rows=rows[roles.x] if decay_grad else None, **kwargs)


def forward(q, k, v, gamma, run, entry_run, entry_states, *, layout: WalkLayout,
            launch: Launch, interpret: bool, emit_output: bool,
            emit_state: bool) -> list[jax.Array]:
    """``[o]``, ``[state leaving each split]`` or both, from the states entering the
    splits (None: zero). Without ``o``: the state-only pass of sequence splits."""
    if launch.lowering == "mosaic":
        return _mosaic(mosaic_roles.FORWARD, dict(q=q, k=k, v=v), gamma, run, entry_states,
                       layout=layout, launch=launch, interpret=interpret,
                       emit_output=emit_output, emit_state=emit_state)
    return triton_forward.forward_walk(
        q, k, v, gamma, run, entry_run, entry_states, layout=layout, launch=launch,
        interpret=interpret, emit_output=emit_output, emit_state=emit_state)


def dq(q, k, v, do, gamma, run, entry_run, entry_states, *, layout: WalkLayout,
       launch: Launch, interpret: bool,
       decay_grad: bool) -> tuple[jax.Array, jax.Array | None]:
    """``dq`` from the states entering the splits, and with ``decay_grad`` the dQ walk's
    decay-gradient partials ``(B, H, blocks, splits)`` (else None)."""
    if launch.lowering == "mosaic":
        out, *rest = _mosaic(mosaic_roles.DQ, dict(q=q, k=k, v=v, do=do), gamma, run,
                             entry_states, decay_grad=decay_grad, out_dtype=q.dtype,
                             emit_output=True, emit_state=False, layout=layout,
                             launch=launch, interpret=interpret)
        return out, rest[0] if decay_grad else None
    out, partials, _ = triton_backward.dq_or_dk_walk(
        "dq", q, k, v, do, gamma, run, entry_run, entry_states, layout=layout, launch=launch,
        interpret=interpret, decay_grad=decay_grad)
    return out, partials


def dk(q, k, v, do, gamma, run, entry_run, exit_dstates, *, layout: WalkLayout,
       launch: Launch, interpret: bool,
       decay_grad: bool) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """``dk`` from the gradients of the states leaving the splits; with ``decay_grad``
    also the dK walk's decay-gradient partials and the ``dS`` entering each split as the
    walk carries it (splits.split_anchor_terms), else None for both."""
    if launch.lowering == "mosaic":
        out, *rest = _mosaic(mosaic_roles.DK, dict(q=q, k=k, v=v, do=do), gamma, run,
                             exit_dstates, decay_grad=decay_grad, out_dtype=k.dtype,
                             emit_output=True, emit_state=decay_grad, layout=layout,
                             launch=launch, interpret=interpret)
        if not decay_grad:
            return out, None, None
        entering_t, partials = rest
        # The Mosaic walk sums +x·out terms; the dK partials enter with a minus sign.
        return out, -partials, jnp.swapaxes(entering_t, -1, -2)
    return triton_backward.dq_or_dk_walk(
        "dk", q, k, v, do, gamma, run, entry_run, exit_dstates, layout=layout, launch=launch,
        interpret=interpret, decay_grad=decay_grad)


def dv(q, k, do, gamma, run, entry_run, exit_dstates, *, layout: WalkLayout, launch: Launch,
       interpret: bool, emit_output: bool, emit_state: bool,
       dv_dtype=None) -> list[jax.Array]:
    """``[dv]``, ``[dS entering each split]`` or both, from the gradients of the states
    leaving the splits (None: zero). Without ``dv``: the dS-only pass of sequence
    splits."""
    if launch.lowering == "mosaic":
        return _mosaic(mosaic_roles.DV, dict(q=q, k=k, do=do), gamma, run, exit_dstates,
                       out_dtype=dv_dtype or do.dtype, emit_output=emit_output,
                       emit_state=emit_state, layout=layout, launch=launch,
                       interpret=interpret)
    return triton_backward.dv_walk(
        q, k, do, gamma, run, entry_run, exit_dstates, layout=layout, launch=launch,
        interpret=interpret, emit_output=emit_output, emit_state=emit_state,
        dv_dtype=dv_dtype)


def dkdv(q, k, v, do, gamma, run, entry_run, exit_dstates, *, layout: WalkLayout,
         launch: Launch, interpret: bool, decay_grad: bool,
         emit_state: bool) -> list[jax.Array]:
    """``[dk, dv]`` from one walk over the whole state (Triton only: small heads), then
    the decay-gradient partials if ``decay_grad`` and the ``dS`` entering each split if
    ``emit_state``."""
    return triton_backward.dkdv_walk(
        q, k, v, do, gamma, run, entry_run, exit_dstates, layout=layout, launch=launch,
        interpret=interpret, decay_grad=decay_grad, emit_state=emit_state)
