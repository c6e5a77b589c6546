"""Sequence (context) parallelism in LASP-2's order: the sequence is split over a mesh
axis and each device walks only its own tokens (docs/DESIGN.md, "Context parallelism").

Inside a manual context (``jax.shard_map`` or a ``custom_partitioning`` lower function)
with ``n`` shards of ``L`` tokens along ``axis``, on each device:

1. a state-only pass over the local tokens gives the shard's own final state ``M_r``
   (from a zero state, float32), without outputs;
2. one gather of the ``M_r`` and of three (batch,)-sized facts per shard (first and
   last segment id, whether the shard is one run) gives every device the states at
   every shard boundary: ``E_0 = S_0``, ``E_{r+1} = M_r + λ^L E_r`` where the run goes
   on through shard ``r`` (else ``M_r`` alone), in float32;
3. the op runs once on the local tokens from ``E_r`` as its initial state (zero where
   the shard's first run does not continue the previous shard's last): the outputs.
   The kernels' own sequence splits take the state-only pass's split states
   (context_kernels.py), so no state is walked twice.

The backward is the same in reverse: a dS-only pass gives the gradient ``D_r`` of the
state entering each shard from its ``do`` alone; the transpose of step 2 (one ``psum``
of the shards' cotangents) gives the gradient ``G_{r+1}`` of the state leaving each
shard; then the op's own backward runs once with ``(do, G_{r+1})`` and the initial
state ``E_r`` (the kernels' splits taking the dS-only pass's split dS). Collectives
are state-sized (``n·B·H·dk·dv`` float32), never activation-sized; no
activation-sized work runs outside the op's passes. The output is exact (the same
sum, grouped by shard).

The gather is a ``psum`` of one-hot slots, so that its result is the same on every
device (invariant, in ``shard_map``'s terms): the final state is then replicated over
the axis. ``attention_over_context`` is a ``jax.custom_vjp`` (inside ``shard_map``,
with or without manual-axis types); ``backward_over_context`` is its backward
recomputing the forward, for a ``custom_partitioning`` lower function.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.ad_checkpoint import checkpoint_name
from jax.custom_derivatives import SymbolicZero

from pallas_kernels.lightning.chunk_math import weighted
from pallas_kernels.lightning.layout import SPLIT_STATES_NAME
from pallas_kernels.lightning.manual_axes import varying_axes, varying_like

Axis = str | tuple[str, ...]
# (q, k, v, decay, segment_ids | None, initial_state | None) -> (o, final_state): the op
# on one device's tokens.
Attend = Callable[..., tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class LocalOp:
    """The op on one device's tokens, called as ``attend``, and what context
    parallelism runs beside it, each None where derived from ``attend`` (its forward,
    its VJP), as on the ``xla`` backend:

    - ``own_state(q, k, v, decay, segment_ids)``: ``(the final state from a zero state
      (B, H, dk, dv) float32, split states)``, no outputs;
    - ``entering_dstate(q, k, do, decay, segment_ids)``: ``(the gradient of the state
      entering the tokens from do alone, split dS)``;
    - ``shard_vjp(q, k, v, decay, segment_ids, entering, split states, decay_grad=)``:
      ``((o, final state), backward(do, dfinal, split dS) -> (dq, dk, dv[, d decay]))``,
      the op from the state ``entering`` reusing the passes' per-split results.
    """

    attend: Attend
    own_state: Callable[..., tuple[jax.Array, object]] | None = None
    entering_dstate: Callable[..., tuple[jax.Array, object]] | None = None
    shard_vjp: Callable[..., tuple[tuple[jax.Array, jax.Array], Callable]] | None = None

    def __call__(self, q, k, v, decay, segment_ids, initial_state):
        return self.attend(q, k, v, decay, segment_ids, initial_state)

    def state_of(self, q, k, v, decay, segment_ids) -> tuple[jax.Array, object]:
        if self.own_state is not None:
            return self.own_state(q, k, v, decay, segment_ids)
        return self.attend(q, k, v, decay, segment_ids, None)[1].astype(jnp.float32), None

    def dstate_of(self, q, k, v, do, decay, segment_ids) -> tuple[jax.Array, object]:
        if self.entering_dstate is not None:
            return self.entering_dstate(q, k, do, decay, segment_ids)
        batch, _, heads, dk = q.shape
        # Varying like the rows: inside shard_map the gradient is then this device's own.
        zero = varying_like(jnp.zeros((batch, heads, dk, v.shape[-1]), jnp.float32),
                            q, k, v, do)
        _, vjp = jax.vjp(lambda s0: self.attend(q, k, v, decay, segment_ids, s0)[0], zero)
        return vjp(do)[0], None

    def vjp_from(self, q, k, v, decay, segment_ids, entering, split_states,
                 decay_grad: bool):
        """``((o, final state float32), backward(do, dfinal, split dS))``."""
        if self.shard_vjp is not None:
            return self.shard_vjp(q, k, v, decay, segment_ids, entering, split_states,
                                  decay_grad=decay_grad)

        def attend(q, k, v, *trained_decay):
            o, final = self.attend(q, k, v, trained_decay[0] if decay_grad else decay,
                                   segment_ids, entering)
            return o, final.astype(jnp.float32)
        out, vjp = jax.vjp(attend, q, k, v, *((decay,) if decay_grad else ()))
        return out, jax.tree_util.Partial(_without_split_dstates, vjp)


def _without_split_dstates(vjp, do, dfinal, split_dstates):
    del split_dstates  # the generic VJP walks its own
    return vjp((do, dfinal))


def first_run_mask(segment_ids: jax.Array | None, batch: int, seq: int) -> jax.Array:
    """``(B, L)`` bool: the tokens of the run each row starts with."""
    if segment_ids is None:
        return jnp.ones((batch, seq), bool)
    changes = jnp.cumsum(segment_ids[:, 1:] != segment_ids[:, :-1], axis=1)
    return jnp.pad(changes == 0, [(0, 0), (1, 0)], constant_values=True)


def boundary_states(own_states, first_ids, last_ids, one_run, decay, shard_len: int,
                    initial_state):
    """The states at the ``n + 1`` shard boundaries ``(n+1, B, H, dk, dv)`` and whether
    the row's run goes on into each shard ``(n, B)``, from every shard's own state
    ``(n, B, H, dk, dv)``, first and last segment id and one-run flag ``(n, B)``."""
    n, batch = own_states.shape[:2]
    transfer = jnp.exp(-decay * shard_len)[None, :, None, None]  # (1, H, 1, 1)
    state = (jnp.zeros_like(own_states[0]) if initial_state is None
             else initial_state.astype(jnp.float32))
    states, carries = [state], []
    for r in range(n):
        carries_in = (jnp.ones((batch,), bool) if r == 0
                      else first_ids[r] == last_ids[r - 1])
        through = (carries_in & one_run[r])[:, None, None, None]
        state = own_states[r] + weighted(state, jnp.where(through, transfer, 0.0))
        states.append(state)
        carries.append(carries_in)
    return jnp.stack(states), jnp.stack(carries)


def gather_shards(x, axis: Axis):
    """Every shard's ``x`` (a pytree) stacked ``(n, ...)``, the same on every device."""
    index, count = lax.axis_index(axis), lax.axis_size(axis)

    def gather(leaf):
        slots = jnp.zeros((count, *leaf.shape), leaf.dtype)
        return lax.psum(slots.at[index].set(leaf), axis)
    return jax.tree.map(gather, x)


def _gathered(op: LocalOp, q, k, v, decay, segment_ids, axis: Axis):
    """``((own states (n, B, H, dk, dv), (first ids, last ids, one-run flags) (n, B)),
    this shard's split states)``."""
    batch, seq = q.shape[:2]
    ids = (jnp.zeros((batch, seq), jnp.int32) if segment_ids is None
           else segment_ids.astype(jnp.int32))
    one_run = first_run_mask(segment_ids, batch, seq)[:, -1].astype(jnp.int32)
    own_state, split_states = op.state_of(q, k, v, decay, segment_ids)
    own, *facts = gather_shards((own_state, ids[:, 0], ids[:, -1], one_run), axis)
    return (own, tuple(facts)), split_states


def _entering_and_final(own_states, facts, decay, shard_len: int, initial_state, index):
    """``(the state entering shard ``index`` (0 in rows whose first run does not go on
    from the shard before: it may hold another document's inf), the final state)``."""
    first_ids, last_ids, one_run = facts
    states, carries = boundary_states(own_states, first_ids, last_ids, one_run.astype(bool),
                                      decay, shard_len, initial_state)
    entering = jnp.where(carries[index][:, None, None, None], states[index], 0.0)
    return entering, states[-1]


def _entering(op: LocalOp, axis: Axis, q, k, v, decay, segment_ids, initial_state):
    """Steps 1 and 2: ``((own states, facts) of every shard, this shard's split states,
    the state entering this shard, the final state)``."""
    (own_states, facts), split_states = _gathered(op, q, k, v, decay, segment_ids, axis)
    entering, final = _entering_and_final(own_states, facts, decay, q.shape[1],
                                          initial_state, lax.axis_index(axis))
    return (own_states, facts), split_states, entering, final


def attention_over_context(op: LocalOp, q, k, v, decay, segment_ids, initial_state,
                           axis: Axis) -> tuple[jax.Array, jax.Array]:
    """The op on this device's ``(B, L, ...)`` shard of a sequence split over ``axis``:
    ``(o (B, L, H, dv), final_state)``, the final state of the whole sequence (the same
    on every shard). ``initial_state`` enters the first shard."""
    # Under jit: a custom_vjp with symbolic zeros cannot run in an eager shard_map (jax
    # 0.10 raises NotImplementedError); inside the caller's jit this adds nothing.
    return _over_context_jit(op, axis, q, k, v, decay, segment_ids, initial_state)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _over_context(op, axis, q, k, v, decay, segment_ids, initial_state):
    _, split_states, entering, final = _entering(op, axis, q, k, v, decay, segment_ids,
                                                 initial_state)
    # The forward of the VJP (its backward unused): the kernels reuse the split states.
    (o, _), _ = op.vjp_from(q, k, v, decay, segment_ids, entering, split_states, False)
    return o, final


def _over_context_fwd(op, axis, q, k, v, decay, segment_ids, initial_state):
    """Arguments arrive as ``CustomVJPPrimal`` (``symbolic_zeros``): value and perturbed."""
    grads = (decay.perturbed, initial_state is not None and initial_state.perturbed)
    q, k, v, decay, segment_ids, initial_state = (
        None if x is None else x.value
        for x in (q, k, v, decay, segment_ids, initial_state))
    gathered, split_states, entering, final = _entering(op, axis, q, k, v, decay,
                                                        segment_ids, initial_state)
    # Named as the op's split states: a remat policy that keeps them (and the output)
    # spares the backward the state-only pass and the gather.
    gathered = checkpoint_name(gathered, SPLIT_STATES_NAME)
    (o, _), attend_bwd = op.vjp_from(q, k, v, decay, segment_ids, entering, split_states,
                                     grads[0])
    return (o, final), (attend_bwd, (q, k, v, decay, segment_ids, initial_state), gathered,
                        grads)


def _over_context_bwd(op, axis, residuals, cotangents):
    attend_bwd, (q, k, v, decay, segment_ids, initial_state), gathered, grads = residuals
    # An output not differentiated: zeros, varying like the rows inside shard_map.
    do, dfinal = (varying_like(jnp.zeros(c.aval.shape, c.aval.dtype), q)
                  if isinstance(c, SymbolicZero) else c for c in cotangents)
    # With manual-axis types (q varies along the axis) the final state's cotangent is
    # whole on every device and the initial state's must be; without them shard_map
    # hands out and sums per-device shares.
    whole = bool(varying_axes(q))
    # The boundary states are linear in the initial state: its value is not needed.
    dq, dk, dv, ddecay, ds0 = _backward(op, axis, attend_bwd, (q, k, v, decay, segment_ids),
                                        initial_state if grads[1] else None, gathered, do,
                                        dfinal, whole=whole)
    return dq, dk, dv, ddecay if grads[0] else None, None, ds0


_over_context.defvjp(_over_context_fwd, _over_context_bwd, symbolic_zeros=True)
_over_context_jit = jax.jit(_over_context, static_argnums=(0, 1))


def _backward(op: LocalOp, axis: Axis, attend_bwd, arrays, initial_state, gathered, do,
              dfinal, *, whole: bool):
    """``(dq, dk, dv, d decay or None, d initial_state or None)``: the dS-only pass, the
    transpose of the boundary states (one ``psum``), then the op's backward from the
    gradient of the state leaving the shard. ``whole``: ``dfinal`` is the whole
    cotangent on every device (counted once) and ``d initial_state`` is summed over the
    axis; else both are this device's share."""
    q, k, v, decay, segment_ids = arrays
    own_states, facts = gathered
    index = lax.axis_index(axis)
    d_entering, split_dstates = op.dstate_of(q, k, v, do, decay, segment_ids)
    s0 = (jnp.zeros_like(own_states[0]) if initial_state is None
          else initial_state.astype(jnp.float32))
    # Varying like the rows: the cotangents below are each device's own.
    (entering, final), combine_vjp = jax.vjp(
        lambda states, s0: _entering_and_final(states, facts, decay, q.shape[1], s0, index),
        varying_like(own_states, q), varying_like(s0, q))
    if whole:
        dfinal = jnp.where(index == 0, dfinal, jnp.zeros((), dfinal.dtype))
    like = lambda x, y: varying_like(x.astype(y.dtype), y)  # a cotangent typed as y
    d_states, ds0 = combine_vjp((like(d_entering, entering), like(dfinal, final)))
    d_leaving = lax.psum(d_states, axis)[index]
    dq, dk, dv, *ddecay = attend_bwd(do, d_leaving.astype(jnp.float32), split_dstates)
    if initial_state is None:
        ds0 = None
    else:
        ds0 = (lax.psum(ds0, axis) if whole else ds0).astype(initial_state.dtype)
    return dq, dk, dv, ddecay[0] if ddecay else None, ds0


def backward_over_context(op: LocalOp, q, k, v, decay, segment_ids, initial_state, do,
                          dfinal, axis: Axis, *, decay_grad: bool):
    """``(dq, dk, dv, d decay or None, d initial_state or None)`` of
    ``attention_over_context`` on this shard, recomputing its forward. ``d decay`` is
    this device's part (sum it over the axes that split batch and sequence); ``d
    initial_state`` is summed over ``axis`` already. ``dfinal`` is the final state's
    cotangent, the same on every shard (counted once)."""
    gathered, split_states, entering, _ = _entering(op, axis, q, k, v, decay, segment_ids,
                                                    initial_state)
    _, attend_bwd = op.vjp_from(q, k, v, decay, segment_ids, entering, split_states,
                                decay_grad)
    return _backward(op, axis, attend_bwd, (q, k, v, decay, segment_ids), initial_state,
                     gathered, do, dfinal, whole=True)
