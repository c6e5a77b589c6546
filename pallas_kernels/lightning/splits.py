"""Sequence splits: when the grid ``(batch, head, feature block)`` alone is too small to
fill the GPU, the sequence is cut into splits walked in parallel (docs/DESIGN.md,
"Splits and state passes").

A state-only pass gives each split's own contribution to the state (in parallel); one
weighted sum over the split boundaries (``boundary_transfers``) makes the state entering
each split; then the output pass runs all splits in parallel. The backward does the
same in reverse for ``dS``. The state-only passes cover every split but one (the
forward's last, the backward's first), in finer splits of their own (``state_layout``)
so that they too fill the GPU.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from pallas_kernels.lightning import passes, tuning
from pallas_kernels.lightning.launch import KernelConfig, Launch
from pallas_kernels.lightning.layout import WalkLayout


def split_layouts(config: KernelConfig, batch: int, heads: int, seq: int,
                  dv: int) -> tuple[WalkLayout, WalkLayout]:
    """The sequence splits of the output walks and of the state-only passes: the
    config's ``chunks_per_split`` and ``state_split_factor``, or where None the split
    policies (tuning.split_chunks, tuning.state_split_factor); ``dv`` padded."""
    n_chunks = -(-seq // config.chunk)
    chunks_per_split = config.chunks_per_split
    if chunks_per_split is None:
        chunks_per_split = tuning.split_chunks(
            n_chunks, batch * heads * dv // config.forward.block, config.forward.lowering)
    chunks_per_split = min(chunks_per_split, n_chunks)
    layout = WalkLayout(chunk=config.chunk, chunks_per_split=chunks_per_split,
                        splits=-(-n_chunks // chunks_per_split), seq_len=seq)
    factor = config.state_split_factor
    if factor is None:
        factor = tuning.state_split_factor(
            chunks_per_split, batch * heads * dv // config.states.block, layout.splits,
            config.states.lowering)
    if chunks_per_split % factor:
        raise ValueError(f"state_split_factor must divide the {chunks_per_split} chunks per "
                         f"split, got {factor}")
    return layout, dataclasses.replace(layout, splits=layout.splits * factor,
                                       chunks_per_split=chunks_per_split // factor)


def entry_runs(run, layout: WalkLayout):
    """``(B, splits)``: run id of the row before each split (the first row's for split 0)."""
    split_ends = run[:, layout.split_len - 1::layout.split_len]
    return jnp.concatenate([run[:, :1], split_ends[:, :-1]], axis=1)


def boundary_transfers(gamma, run, layout: WalkLayout) -> jax.Array:
    """``(B, H, F+1, F+1)`` over the boundaries ``0 … F`` of the ``F`` splits: entry
    ``[i, j]`` is the factor by which the state at boundary ``i`` reaches boundary ``j``,
    ``λ`` to the real rows between (0 if a run starts between); 0 for ``i > j``."""
    split_ends = run[:, layout.split_len - 1::layout.split_len]
    resets = jnp.cumsum(split_ends != entry_runs(run, layout), axis=1)
    resets = jnp.pad(resets, [(0, 0), (1, 0)])  # (B, F+1): runs started before each boundary
    rows = jnp.pad(jnp.cumsum(layout.split_lengths()), [(1, 0)])  # (F+1,)
    boundary = jnp.arange(layout.splits + 1)
    reaches = ((boundary[:, None] <= boundary[None, :])
               & (resets[:, :, None] == resets[:, None, :]))
    decay = jnp.exp(-gamma[:, :, None] * jnp.maximum(rows[None, :] - rows[:, None], 0.0))
    return jnp.where(reaches[:, None], decay[None], 0.0)


def weighted_sum(weights, values) -> jax.Array:
    """``(B, H, P, I) × (B, H, I, dk, dv) → (B, H, P, dk, dv)``, in float32. A state
    with a weight of 0 adds nothing even if it holds an inf or NaN (a document with a
    bad input, cut off by a run start): non-finite states are summed as zeros and make
    every sum they do reach NaN (docs/DESIGN.md, "Non-finite inputs")."""
    finite = jnp.all(jnp.isfinite(values), axis=(3, 4))  # (B, H, I)
    clean = jnp.einsum("bhpi,bhixy->bhpxy", weights,
                       jnp.where(finite[..., None, None], values, 0.0),
                       precision=jax.lax.Precision.HIGHEST)
    reached = jnp.any((weights != 0) & ~finite[:, :, None, :], axis=3)  # (B, H, P)
    return jnp.where(reached[..., None, None], jnp.nan, clean)


def entering_states(q, k, v, gamma, run, s0, layout: WalkLayout, states: WalkLayout,
                    launch: Launch, interpret: bool, own=None) -> jax.Array:
    """``(B, H, splits, dk, dv)``: the state entering each output split. The state-only
    pass gives the own state of each state split before the last output split (the
    output pass carries the state through that one to the final state); ``own``: those
    of every state split, computed already (``sequence_final_state``)."""
    factor = states.splits // layout.splits
    leading = dataclasses.replace(states, splits=states.splits - factor)
    if own is None:
        (own,) = passes.forward(q, k, v, gamma, run,
                                entry_runs(run, states)[:, :leading.splits], None,
                                emit_output=False, emit_state=True, launch=launch,
                                layout=leading, interpret=interpret)
    own = own[:, :, :leading.splits]
    # s0 sits at boundary 0 and split r's own state at boundary r + 1; the output splits
    # start at every factor-th boundary.
    to_starts = boundary_transfers(gamma, run, states)[:, :, :leading.splits + 1, :-1:factor]
    return weighted_sum(jnp.swapaxes(to_starts, 2, 3),
                        jnp.concatenate([s0[:, :, None], own], axis=2))


def exit_dstates(q, k, do, gamma, run, dfinal, layout: WalkLayout, states: WalkLayout,
                 launch: Launch, interpret: bool, with_initial: bool, own=None):
    """``(dS leaving each output split, dS entering the sequence or None)``. The dS-only
    pass gives the own dS of each state split; those of the first output split matter
    only to the initial state's gradient, so they are walked only ``with_initial``.
    ``own``: those of every state split, computed already (``sequence_entering_dstate``)."""
    factor = states.splits // layout.splits
    first = 0 if with_initial else factor
    tail = dataclasses.replace(states, splits=states.splits - first, first_split=first)
    if own is None:
        (own,) = passes.dv(q, k, do, gamma, run, entry_runs(run, states)[:, first:], None,
                           emit_output=False, emit_state=True, launch=launch, layout=tail,
                           interpret=interpret)
    else:
        own = own[:, :, first:]
    # Split r's own dS sits at boundary r and dfinal at the last one; the output splits
    # end at every factor-th boundary (with_initial: also the sequence's start, 0).
    from_ends = boundary_transfers(gamma, run, states)[:, :, first::factor, first:]
    dstates = weighted_sum(from_ends, jnp.concatenate([own, dfinal[:, :, None]], axis=2))
    return (dstates[:, :, 1:], dstates[:, :, 0]) if with_initial else (dstates, None)


def split_anchor_terms(entry_states, entering_dstates, layout: WalkLayout):
    """``(H,)``: ``Σ_s L_s·⟨S_s, dS_s⟩`` of the decay gradient, ``S_s`` the state entering
    split ``s`` and ``dS_s`` its gradient as the dK walk carries it: the dK walk's
    boundary terms, weighted up to ``L_s``, cancel against that ``dS`` to float32
    precision only if it is the walk's own (the dS-only pass rounds differently)."""
    inner = jnp.sum(entry_states * entering_dstates, axis=(3, 4))  # (B, H, splits)
    return jnp.sum(inner * layout.split_lengths(), axis=(0, 2))


def sequence_final_state(q, k, v, gamma, run, states: WalkLayout, launch: Launch,
                         interpret: bool) -> tuple[jax.Array, jax.Array]:
    """``((B, H, dk, dv), own (B, H, splits, dk, dv))``: the state at the sequence's end
    from a zero state, without the outputs: the state-only pass over every split of
    ``states`` (in parallel) gives each split's own state, then one weighted sum of them
    (split ``r``'s sits at boundary ``r + 1``)."""
    (own,) = passes.forward(q, k, v, gamma, run, entry_runs(run, states), None,
                            emit_output=False, emit_state=True, launch=launch,
                            layout=states, interpret=interpret)
    to_end = boundary_transfers(gamma, run, states)[:, :, 1:, -1:]  # (B, H, splits, 1)
    return weighted_sum(jnp.swapaxes(to_end, 2, 3), own)[:, :, 0], own


def sequence_entering_dstate(q, k, do, gamma, run, states: WalkLayout, launch: Launch,
                             interpret: bool) -> tuple[jax.Array, jax.Array]:
    """``((B, H, dk, dv), own (B, H, splits, dk, dv))``: the gradient of the state
    entering the sequence from ``do`` alone (a zero ``dfinal``): the dS-only pass over
    every split of ``states`` gives each split's own ``dS``, then one weighted sum of
    them (split ``r``'s sits at boundary ``r``)."""
    (own,) = passes.dv(q, k, do, gamma, run, entry_runs(run, states), None,
                       emit_output=False, emit_state=True, launch=launch, layout=states,
                       interpret=interpret)
    from_starts = boundary_transfers(gamma, run, states)[:, :, :1, :-1]  # (B, H, 1, splits)
    return weighted_sum(from_starts, own)[:, :, 0], own
