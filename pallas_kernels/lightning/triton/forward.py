"""Triton forward kernel: walk the chunks of a split in order, carrying the state.

Per chunk: ``O = ((Q Kᵀ) ⊙ intra) V + diag(query_decay) Q S`` and
``S ← carry · S + (diag(key_decay) K)ᵀ V`` (chunk_math.py; docs/DESIGN.md, "The math"),
each factor applied by selection (``weighted``).
One program per ``(batch, head, dv block, split)`` keeps its ``dk × block`` slice of
``S`` in registers as float32.

Two uses: ``emit_output`` writes ``O`` (the pass proper), and a state-only pass
(no ``O``, zero start) gives each split's own contribution to the state, from which
a weighted sum across splits makes the states entering them (splits.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.lightning.chunk_math import (
    chunk_factors,
    chunk_length,
    decayed_outer,
    dot,
    state_product,
    tile_product,
    weighted,
)
from pallas_kernels.lightning.launch import Launch
from pallas_kernels.lightning.layout import WalkLayout
from pallas_kernels.lightning.triton import specs


def _forward_kernel(gamma_ref, entry_run_ref, run_ref, q_ref, k_ref, v_ref, *refs,
                    layout: WalkLayout, has_state_in: bool, emit_output: bool,
                    emit_state: bool):
    state_in_ref, o_ref, state_out_ref = specs.optional_refs(
        refs, has_state_in, emit_output, emit_state)
    c = layout.chunk
    split = pl.program_id(3)
    gamma = jnp.max(gamma_ref[...])
    state = specs.state_or_zeros(state_in_ref, (k_ref.shape[-1], v_ref.shape[-1]))

    def body(j, carry):
        state, prev = carry
        rows = pl.ds(j * c, c)
        k, v = k_ref[rows, :], v_ref[rows, :]
        length = chunk_length(layout.first_chunk(split) + j, c, layout.seq_len)
        f = chunk_factors(gamma, run_ref[rows], prev, length)
        if emit_output:
            q = q_ref[rows, :]
            scores = weighted(dot(q, k.T), f.intra)
            o = tile_product(scores, v)
            o += weighted(state_product(q, state, precise=False), f.query_decay[:, None])
            o_ref[rows, :] = o.astype(o_ref.dtype)
        state = weighted(state, f.carry) + decayed_outer(k, f.key_decay, v, precise=False)
        return state, f.last_run

    state, _ = jax.lax.fori_loop(0, layout.chunks_per_split, body,
                                 (state, jnp.max(entry_run_ref[...])))
    if emit_state:
        state_out_ref[...] = state


def forward_walk(q, k, v, gamma, run, entry_run, entry_state, *, layout: WalkLayout,
                 launch: Launch, interpret: bool, emit_output: bool,
                 emit_state: bool) -> list[jax.Array]:
    """Padded inputs: ``q, k (B, Tp, H, dk)``, ``v (B, Tp, H, dv)``, ``gamma (H, 1)``,
    ``run (B, Tp)``, ``entry_run (B, splits)``, ``entry_state (B, H, splits, dk, dv)`` or
    None (zero). Returns ``[o]``, ``[end_state]`` or both, as asked."""
    name = "lightning_fwd" if emit_output else "lightning_fwd_split_states"
    return specs.value_block_walk(
        _forward_kernel, q, k, v, gamma, run, entry_run, entry_state, out_dtype=q.dtype,
        emit_output=emit_output, emit_state=emit_state, layout=layout, launch=launch,
        interpret=interpret, name=name)
