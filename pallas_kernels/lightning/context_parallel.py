"""Sequence (context) parallelism, LASP-2 style: the sequence is split over a mesh axis
and each device walks only its own tokens (docs/DESIGN.md, "Context parallelism").

Inside a manual context (``jax.shard_map`` or a ``custom_partitioning`` lower function)
with ``n`` shards of ``L`` tokens along ``axis``, on each device:

1. the op runs on the local tokens from a zero state: its output ``o_own`` and its own
   final state ``M_r`` (the float32 state contributions of this shard alone);
2. one gather of the ``M_r`` and of three (batch,)-sized facts per shard (first and
   last segment id, whether the shard is one run) gives every device the states at
   every shard boundary: ``E_0 = S_0``, ``E_{r+1} = M_r + λ^L E_r`` where the run goes
   on through shard ``r`` (else ``M_r`` alone), in float32;
3. the tokens of the first run of shard ``r`` add what the state entering it reaches:
   ``o_t += λ^(t+1) q_t E_r`` (``t`` counted from the shard's start), a
   ``(L, dk) × (dk, dv)`` product per row and head.

The gather is a ``psum`` of one-hot slots, so that its result is the same on every
device (invariant, in ``shard_map``'s terms): the final state is then replicated over
the axis and the backward sums the ``dE`` of every shard with one ``psum``. Both are
state-sized (``n·B·H·dk·dv`` float32), never activation-sized. The output is exact.

``attention_over_context`` is differentiated by JAX (inside ``shard_map``);
``backward_over_context`` is the same backward written out, for contexts without
``shard_map``'s replication types (a ``custom_partitioning`` lower function).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from pallas_kernels.lightning.chunk_math import weighted

Axis = str | tuple[str, ...]
# (q, k, v, decay, segment_ids | None, initial_state | None) -> (o, final_state): the op
# on one device's tokens.
Attend = Callable[..., tuple[jax.Array, jax.Array]]


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


def entering_contribution(q, decay, entering, mask) -> jax.Array:
    """``(B, L, H, dv)`` float32: ``λ^(t+1) q_t E`` on the masked tokens, 0 on the
    others (selected: ``E`` of another document may hold an inf); the weights scale the
    product's rows (one matmul, nothing activation-sized materialised)."""
    seq = q.shape[1]
    steps = jnp.arange(1, seq + 1, dtype=jnp.float32)
    weights = jnp.exp(-steps[:, None] * decay[None, :])[None] * mask[:, :, None]  # (B, L, H)
    if q.dtype == jnp.float32 or jax.default_backend() == "cpu":
        # float32 operands (XLA:CPU has no 16-bit products with float32 results).
        product = jnp.einsum("bthk,bhkv->bthv", q.astype(jnp.float32), entering,
                             precision=lax.Precision.HIGHEST)
    else:  # 16-bit operands, the state rounded to them as the kernels do for outputs.
        product = jnp.einsum("bthk,bhkv->bthv", q, entering.astype(q.dtype),
                             preferred_element_type=jnp.float32)
    return weighted(product, weights[..., None])


def attention_over_context(attend: Attend, q, k, v, decay, segment_ids, initial_state,
                           axis: Axis) -> tuple[jax.Array, jax.Array]:
    """The op on this device's ``(B, L, ...)`` shard of a sequence split over ``axis``:
    ``(o (B, L, H, dv), final_state)``, the final state of the whole sequence (the same
    on every shard). ``initial_state`` enters the first shard."""
    batch, seq = q.shape[:2]
    o_own, own_state = attend(q, k, v, decay, segment_ids, None)
    mask, facts = _facts(own_state, segment_ids, batch, seq)
    own_states, *shard_facts = gather_shards(facts, axis)
    contribution, final = _combine(own_states, q, decay, initial_state, shard_facts, mask,
                                   lax.axis_index(axis))
    return (o_own.astype(jnp.float32) + contribution).astype(o_own.dtype), final


def gather_shards(x, axis: Axis):
    """Every shard's ``x`` (a pytree) stacked ``(n, ...)``, the same on every device."""
    index, count = lax.axis_index(axis), lax.axis_size(axis)

    def gather(leaf):
        slots = jnp.zeros((count, *leaf.shape), leaf.dtype)
        return lax.psum(slots.at[index].set(leaf), axis)
    return jax.tree.map(gather, x)


def _combine(own_states, q, decay, initial_state, shard_facts, mask, index):
    """``(what the state entering shard ``index`` adds to its outputs, final state)``."""
    first_ids, last_ids, one_run = shard_facts
    states, carries = boundary_states(own_states, first_ids, last_ids, one_run.astype(bool),
                                      decay, q.shape[1], initial_state)
    mask = mask & carries[index][:, None]
    return entering_contribution(q, decay, states[index], mask), states[-1]


def _facts(own_state, segment_ids, batch: int, seq: int):
    mask = first_run_mask(segment_ids, batch, seq)
    ids = (jnp.zeros((batch, seq), jnp.int32) if segment_ids is None
           else segment_ids.astype(jnp.int32))
    return mask, (own_state.astype(jnp.float32), ids[:, 0], ids[:, -1],
                  mask[:, -1].astype(jnp.int32))


def backward_over_context(attend: Attend, q, k, v, decay, segment_ids, initial_state, do,
                          dfinal, axis: Axis, *, decay_grad: bool):
    """``(dq, dk, dv, d decay or None, d initial_state or None)`` of
    ``attention_over_context`` on this shard, recomputing its forward. ``d decay`` is
    this device's part (sum it over the axes that split batch and sequence); ``d
    initial_state`` is summed over ``axis`` already. ``dfinal`` is the final state's
    cotangent, the same on every shard (counted once)."""
    batch, seq = q.shape[:2]

    def own(q, k, v, decay):
        return attend(q, k, v, decay, segment_ids, None)

    own_fn = own if decay_grad else (lambda q, k, v: own(q, k, v, decay))
    (_, own_state), own_vjp = jax.vjp(own_fn, q, k, v, *((decay,) if decay_grad else ()))
    mask, facts = _facts(own_state, segment_ids, batch, seq)
    own_states, *shard_facts = gather_shards(facts, axis)
    index = lax.axis_index(axis)
    s0 = (jnp.zeros_like(own_state, jnp.float32) if initial_state is None
          else initial_state.astype(jnp.float32))
    _, combine_vjp = jax.vjp(
        lambda states, q, decay, s0: _combine(states, q, decay, s0, shard_facts, mask, index),
        own_states, q, decay, s0)
    dfinal_once = jnp.where(index == 0, dfinal.astype(jnp.float32), 0.0)
    d_states, dq_entering, ddecay_entering, ds0 = combine_vjp(
        (do.astype(jnp.float32), dfinal_once))
    d_own_state = lax.psum(d_states, axis)[index]
    dq, dk, dv, *ddecay = own_vjp((do, d_own_state.astype(own_state.dtype)))
    ddecay = ddecay[0] + ddecay_entering if decay_grad else None
    ds0 = None if initial_state is None else lax.psum(ds0, axis).astype(initial_state.dtype)
    return dq + dq_entering.astype(dq.dtype), dk, dv, ddecay, ds0
