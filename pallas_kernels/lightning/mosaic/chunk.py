"""One chunk step of the Mosaic GPU walk, run by each compute warpgroup on the tiles
the memory warpgroup staged: the chunk's decays, the output tile, the state update.

With roles ``(A, B, C)`` (roles.py) and the warpgroup's 64 columns of C and of S::

    out = ((A Bᵀ) ⊙ M) C + diag(read_decay) A S
    S  ← carry · S + (diag(write_decay) B)ᵀ C

The state lives in registers as float32 ``64 × 64`` wgmma tiles; products read it as
16 bits from shared memory (or, for the decay gradient, as a hi/lo pair of 16-bit
halves, chunk_math.split16). With float16 operands the score rows and the state's
columns are first scaled into float16's range and the products scaled back
(chunk_math.float16_scale); bfloat16 holds float32's range and runs as it is.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental.pallas import mosaic_gpu as plgpu
from jax.experimental import pallas as pl

from pallas_kernels.lightning import chunk_math
from pallas_kernels.lightning.mosaic.plan import WalkPlan
from pallas_kernels.lightning.mosaic.products import (
    TILE,
    WGMMA_COLS,
    WGMMA_ROWS,
    Transposed,
    in_layout,
    load,
    products,
)


class WalkConstants(NamedTuple):
    """Loop-invariant values of a walk."""
    gamma: jax.Array         # the head's decay rate
    causal_decay: jax.Array  # (C, C) λ^|a-b| where a >= b (forward) or a <= b (reverse)
    offsets: jax.Array       # (C,) float32 row offsets a, in the wgmma row layout


class ChunkDecays(NamedTuple):
    run_rows: jax.Array  # (C,) the chunk's run ids, in the wgmma row layout
    read: jax.Array      # (C,) scales A S: query decay forward, key decay in reverse
    write: jax.Array     # (C,) scales the rows of C written into S: the other one
    carry: jax.Array     # () scales S across the chunk


def walk_constants(plan: WalkPlan, gamma: jax.Array) -> WalkConstants:
    cs = plan.chunk
    a_idx = in_layout(jax.lax.broadcasted_iota(jnp.int32, (cs, cs), 0), plgpu.Layout.WGMMA,
                      plan.interpret)
    b_idx = in_layout(jax.lax.broadcasted_iota(jnp.int32, (cs, cs), 1), plgpu.Layout.WGMMA,
                      plan.interpret)
    dist = b_idx - a_idx if plan.reverse else a_idx - b_idx
    causal_decay = chunk_math.causal_decay(gamma, dist)
    offsets = jnp.max(a_idx.astype(jnp.float32), axis=1)
    return WalkConstants(gamma, causal_decay, offsets)


def chunk_decays(plan: WalkPlan, constants: WalkConstants, run_s, prev_run_s,
                 chunk: jax.Array) -> ChunkDecays:
    """The decay factors of global chunk ``chunk`` (chunk_math.py), from its run ids and
    the previous chunk's; read and write swap in reverse walks."""
    gamma, offsets, cs = constants.gamma, constants.offsets, plan.chunk
    length = chunk_math.chunk_length(chunk, cs, plan.layout.seq_len).astype(jnp.float32)
    run_rows = load(run_s, WGMMA_ROWS, plan.interpret)
    last = run_s[cs - 1]
    prev = jnp.where(chunk == 0, run_s[0], prev_run_s[cs - 1])
    query = chunk_math.query_decay(gamma, offsets, run_rows, prev)
    key = chunk_math.key_decay(gamma, offsets, run_rows, last, length)
    carry = chunk_math.carry_decay(gamma, last, prev, length)
    read, write = (key, query) if plan.reverse else (query, key)
    return ChunkDecays(run_rows, read, write, carry)


def rows(plan: WalkPlan, vector: jax.Array, cols: int) -> jax.Array:
    """A ``(C,)`` vector broadcast along ``cols`` columns."""
    return jax.lax.broadcast_in_dim(vector, (plan.chunk, cols), [0])


def store_halves(plan: WalkPlan, x: jax.Array, halves: list) -> None:
    """``x`` in 16 bits, or as a hi/lo pair (chunk_math.split16) into two refs."""
    if len(halves) == 1:
        halves[0][...] = x.astype(plan.dtype)
    else:
        halves[0][...], halves[1][...] = chunk_math.split16(x, plan.dtype)


def output_tile(plan: WalkPlan, constants: WalkConstants, decays: ChunkDecays, state,
                state16: list, a_s, b_s, c_own, run_s) -> tuple[jax.Array, jax.Array]:
    """``(out, out_state)`` float32 ``(C, 64)``: the warpgroup's output columns and
    their state-crossing part ``diag(read) A S``. Stages the state in 16 bits first."""
    cs = plan.chunk
    run_cols = load(run_s, WGMMA_COLS, plan.interpret)
    same_run = rows(plan, decays.run_rows, cs) == jax.lax.broadcast_in_dim(run_cols, (cs, cs),
                                                                            [1])
    # float16: each column of S scaled into float16's range (chunk_math.float16_scale).
    state_scale = _columns_scale(plan, state)
    for i, tile in enumerate(state):
        if state_scale is not None:
            tile = tile / jax.lax.broadcast_in_dim(state_scale, (TILE, TILE), [1])
        store_halves(plan, tile, [half.at[pl.ds(i * TILE, TILE)] for half in state16])
    plgpu.commit_smem()
    p = products((cs, cs), [(a_s, Transposed(b_s))], plan.interpret)
    # Selected, not multiplied: an inf in a masked entry of A Bᵀ gives 0, not NaN.
    keep = same_run & (constants.causal_decay != 0)
    p = jnp.where(keep, p * constants.causal_decay, 0.0)
    # float16: each row of the scores scaled into float16's range, scaled back after.
    p_scale = chunk_math.float16_scale(p, 1, plan.dtype)
    if p_scale is not None:
        p = p / rows(plan, p_scale, cs)
    p = p.astype(plan.dtype)
    a_state = products((cs, TILE), [(a_s, half) for half in state16], plan.interpret)
    if state_scale is not None:
        a_state = a_state * jax.lax.broadcast_in_dim(state_scale, (cs, TILE), [1])
    # The read decay scales the float32 product (not A before it): one bf16 rounding
    # fewer, which the decay gradient's cancelling sums need.
    out_state = chunk_math.weighted(a_state, rows(plan, decays.read, TILE))
    intra = products((cs, TILE), [(p, c_own)], plan.interpret)
    if p_scale is not None:
        intra = intra * rows(plan, p_scale, TILE)
    return out_state + intra, out_state


def _columns_scale(plan: WalkPlan, state: tuple) -> jax.Array | None:
    """The float16 scale of each column of the state (its 64-row tiles together), or
    None for bfloat16."""
    scales = [chunk_math.float16_scale(tile, 0, plan.dtype) for tile in state]
    if scales[0] is None:
        return None
    return functools.reduce(jnp.maximum, scales)


def decay_grad_partial(plan: WalkPlan, constants: WalkConstants, chunk: jax.Array, x_own,
                       out: jax.Array, out_state: jax.Array) -> jax.Array:
    """Per row ``a``: ``a·(x_a·out_a) − (e_s−1−g·C)·(x_a·out_state_a)`` (docs/DESIGN.md,
    "The decay gradient")."""
    x = x_own[...].astype(jnp.float32)
    boundary = chunk_math.boundary_weight(chunk, plan.chunk, plan.layout.split_len,
                                          plan.layout.seq_len)
    return (constants.offsets * jnp.sum(x * out, axis=1)
            - boundary * jnp.sum(x * out_state, axis=1))


def state_update(plan: WalkPlan, decays: ChunkDecays, state, state16: list, b_s,
                 c_own) -> tuple[jax.Array, ...]:
    """``S ← carry · S + (diag(write) B)ᵀ C`` per 64-row tile. The 16-bit state is dead
    once the output is computed: its first rows now hold the write-decayed C. The decays
    select (a row of C written with 0 is 0, a state carried with 0 is 0); B goes to the
    wgmma from shared memory as it is, so a non-finite row of B written with 0 still
    makes the product NaN (docs/DESIGN.md, "Non-finite inputs")."""
    scaled_c = [half.at[pl.ds(0, plan.chunk)] for half in state16]
    store_halves(plan, chunk_math.weighted(c_own[...].astype(jnp.float32),
                                           rows(plan, decays.write, TILE)), scaled_c)
    plgpu.commit_smem()
    return tuple(
        chunk_math.weighted(tile, decays.carry) + products(
            (TILE, TILE),
            [(Transposed(b_s.at[:, pl.ds(i * TILE, TILE)]), half) for half in scaled_c],
            plan.interpret)
        for i, tile in enumerate(state))
