"""Forward walk for Hopper in Mosaic GPU: the chunk math of forward.py with the
chunk tiles TMA-pipelined into shared memory and every product on wgmma.

One program (one warpgroup) per ``(dv block, head, batch · split)`` walks the chunks
of its split, keeping its ``dk × block`` slice of the state ``S`` in registers as
float32 (the wgmma accumulator layout). Per chunk:

    P = (Q Kᵀ) ⊙ intra                       Q, K from shared memory
    O = (diag(query_decay) Q) S + P V         one accumulator; S as a 16-bit copy
                                              in shared memory
    S ← carry · S + Kᵀ (diag(key_decay) V)    Kᵀ read transposed from shared memory

The tests run this code in Mosaic GPU's interpreter (CPU), which has no ``pl.run_state``,
no register layouts and no wgmma on transposed or register operands: accumulators start
at zero, layouts are hints skipped there, and ``_products`` multiplies with ``jnp.dot``
there. The pipeline, the shared-memory traffic and the chunk math are the same code.

The factors are those of ``chunk_math.chunk_factors``, built in the register layouts
wgmma uses: rows of a tile are query offsets ``a``, columns key offsets ``b``.
Only 16-bit inputs (wgmma has no exact float32) and widths that are multiples of 64.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.lightning.walk_specs import WalkLayout

SWIZZLE_BYTES = 128
WGMMA_ROWS = plgpu.Layout.WGMMA.reduce(1)  # a vector over the rows of a wgmma tile
WGMMA_COLS = plgpu.Layout.WGMMA.reduce(0)  # a vector over its columns


def _tiles(dtype) -> tuple:
    """Shared-memory tiling wgmma and TMA want: 128-byte swizzled rows of 8."""
    return (plgpu.TilingTransform((8, SWIZZLE_BYTES // jnp.dtype(dtype).itemsize)),
            plgpu.SwizzleTransform(SWIZZLE_BYTES))


@dataclasses.dataclass(frozen=True)
class _Transposed:
    """A shared-memory operand read transposed."""
    ref: object


def _products(shape: tuple[int, int], pairs, interpret: bool) -> jax.Array:
    """``Σ a @ b`` over ``pairs`` in float32: one wgmma accumulator on the GPU. ``a`` is a
    register value or a shared-memory ref, ``b`` a ref; either may be ``_Transposed``."""
    def value(x):
        if isinstance(x, _Transposed):
            return x.ref[...].T
        return x if isinstance(x, jax.Array) else x[...]

    if interpret:
        return sum(jnp.dot(value(a), value(b), preferred_element_type=jnp.float32)
                   for a, b in pairs)

    def operand(x):
        return x.ref.transpose((1, 0)) if isinstance(x, _Transposed) else x

    def accumulate(acc_ref):
        for a, b in pairs:
            plgpu.wgmma(acc_ref, operand(a), operand(b))
        return acc_ref[...]

    return pl.run_scoped(accumulate, plgpu.ACC(shape, jnp.float32))


def interpret_params():
    """Mosaic GPU's interpreter (CPU); its public name differs across jax versions."""
    params = getattr(plgpu, "InterpretGPUParams", None)
    if params is None:
        from jax._src.pallas.mosaic_gpu.interpret.params import (
            InterpretGPUParams as params,
        )
    return params()


def mosaic_forward_walk(q, k, v, gamma, run, entry_run, entry_state, *, layout: WalkLayout,
                        block: int, stages: int, interpret: bool, emit_output: bool,
                        emit_state: bool) -> list[jax.Array]:
    """The contract of ``forward.forward_walk`` (same padded inputs and outputs), for
    launches that ``tuning.mosaic_fits``."""
    batch, _, heads, dk = q.shape
    dv = v.shape[-1]
    c, splits, per_split = layout.chunk, layout.splits, layout.chunks_per_split
    dtype = q.dtype
    tiles = _tiles(dtype)
    # float32 state in and out goes through shared memory scoped to the start and the end,
    # so the chunk pipeline reuses the space.
    state_staging = plgpu.SMEM((dk, block), jnp.float32, transforms=_tiles(jnp.float32))

    def in_layout(x, layout):
        """Register layouts are lowering hints; the interpreter has no lowering for them."""
        return x if interpret else plgpu.layout_cast(x, layout)

    def load(ref, layout):
        return ref[...] if interpret else plgpu.load(ref, (), layout=layout)

    def kernel(gamma_ref, entry_run_ref, run_ref, q_ref, k_ref, v_ref, *refs):
        refs = list(refs)
        state_in_ref = refs.pop(0) if entry_state is not None else None
        o_ref = refs.pop(0) if emit_output else None
        state_out_ref = refs.pop(0) if emit_state else None
        state16_smem, *o_smem = refs  # o_smem: [two output buffers] if emit_output
        x, h, row = (jax.lax.axis_index(name) for name in ("block", "head", "row"))
        b, split = row // splits, row % splits
        cols = pl.ds(x * block, block)
        gamma = gamma_ref[h, 0]
        # The 16-bit state is dead once a chunk's output is computed: its first rows then
        # hold the key-decayed V of the state update (8 KB less shared memory).
        scaled_v_smem = state16_smem.at[pl.ds(0, c)]

        def load_state(staging, barrier):
            plgpu.copy_gmem_to_smem(state_in_ref.at[b, h, split, :, cols], staging, barrier.at[0])
            plgpu.barrier_wait(barrier.at[0])
            return staging[...]  # tiled shared memory loads in the wgmma layout

        if state_in_ref is None:
            state = in_layout(jnp.zeros((dk, block), jnp.float32), plgpu.Layout.WGMMA)
        else:
            state = pl.run_scoped(load_state, state_staging, plgpu.Barrier(num_barriers=1))

        # Loop-invariant: λ^(a-b) for a >= b, and each row's offset a.
        a = in_layout(jax.lax.broadcasted_iota(jnp.int32, (c, c), 0), plgpu.Layout.WGMMA)
        dist = a - in_layout(jax.lax.broadcasted_iota(jnp.int32, (c, c), 1), plgpu.Layout.WGMMA)
        causal_decay = jnp.where(dist >= 0,
                                 jnp.exp(-gamma * jnp.maximum(dist, 0).astype(jnp.float32)), 0.0)
        offsets = jnp.max(a.astype(jnp.float32), axis=1)  # (c,) rows: a

        def rows(vector, width):
            return jax.lax.broadcast_in_dim(vector, (c, width), [0])

        def step(indices, *refs):
            *chunk_refs, (state, prev) = refs
            q_s, k_s, v_s, run_s = chunk_refs if emit_output else (None, *chunk_refs)
            (j,) = indices
            length = jnp.clip(layout.seq_len - (split * per_split + j) * c, 0, c)
            run_rows = load(run_s, WGMMA_ROWS)
            last = run_s[c - 1]
            if emit_output:
                run_cols = load(run_s, WGMMA_COLS)
                same_run = (jax.lax.broadcast_in_dim(run_rows, (c, c), [0])
                            == jax.lax.broadcast_in_dim(run_cols, (c, c), [1]))
                intra = jnp.where(same_run, causal_decay, 0.0)
                query_decay = jnp.where(run_rows == prev, jnp.exp(-gamma * (offsets + 1.0)), 0.0)
                state16_smem[...] = state.astype(dtype)
                plgpu.commit_smem()

                p = _products((c, c), [(q_s, _Transposed(k_s))], interpret)
                p = (p * intra).astype(dtype)
                decayed_q = (q_s[...].astype(jnp.float32) * rows(query_decay, dk)).astype(dtype)
                o = _products((c, block), [(decayed_q, state16_smem), (p, v_s)], interpret)
                # Two output buffers: wait for the copy out of this one (two chunks ago).
                o_s = o_smem[0].at[j % 2]
                plgpu.wait_smem_to_gmem(1, wait_read_only=True)
                o_s[...] = o.astype(dtype)
                plgpu.commit_smem()
                chunk = split * per_split + j
                plgpu.copy_smem_to_gmem(o_s, o_ref.at[b, pl.ds(chunk * c, c), h, cols])

            is_real = offsets < length.astype(jnp.float32)
            steps_to_end = jnp.maximum(length.astype(jnp.float32) - 1.0 - offsets, 0.0)
            key_decay = jnp.where(is_real & (run_rows == last), jnp.exp(-gamma * steps_to_end), 0.0)
            carry = jnp.where(last == prev, jnp.exp(-gamma * length.astype(jnp.float32)), 0.0)
            v_rows = v_s[...].astype(jnp.float32)
            scaled_v_smem[...] = (v_rows * rows(key_decay, block)).astype(dtype)
            plgpu.commit_smem()

            state = carry * state + _products((dk, block), [(_Transposed(k_s), scaled_v_smem)],
                                              interpret)
            return state, last

        def chunk_at(width, transforms):
            return plgpu.BlockSpec((c, width), lambda j: (split * per_split + j, 0),
                                   transforms=transforms)

        in_specs = [chunk_at(dk, tiles), chunk_at(block, tiles),
                    plgpu.BlockSpec((c,), lambda j: (split * per_split + j,))]
        gmem = [k_ref.at[b, :, h, :], v_ref.at[b, :, h, cols], run_ref.at[b]]
        if emit_output:  # the state-only pass of sequence splits needs no Q
            in_specs.insert(0, chunk_at(dk, tiles))
            gmem.insert(0, q_ref.at[b, :, h, :])
        pipeline = plgpu.emit_pipeline(step, grid=(per_split,), in_specs=in_specs,
                                       max_concurrent_steps=stages,
                                       init_carry=(state, entry_run_ref[b, split]))
        state, _ = pipeline(*gmem)

        def store_state(staging):
            staging[...] = state
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(staging, state_out_ref.at[b, h, split, :, cols])
            plgpu.wait_smem_to_gmem(0)

        if emit_state:
            pl.run_scoped(store_state, state_staging)
        plgpu.wait_smem_to_gmem(0)

    out_type = []
    if emit_output:
        out_type.append(jax.ShapeDtypeStruct(q.shape[:3] + (dv,), dtype))
    if emit_state:
        out_type.append(jax.ShapeDtypeStruct((batch, heads, splits, dk, dv), jnp.float32))
    call = plgpu.kernel(
        kernel, out_type=out_type, grid=(dv // block, heads, batch * splits),
        grid_names=("block", "head", "row"),
        scratch_types=[plgpu.SMEM((dk, block), dtype, transforms=tiles)]
        + ([plgpu.SMEM((2, c, block), dtype, transforms=tiles)] if emit_output else []),
        # Lane semantics: the layouts are given here (jax 0.11 defaults to inferring them).
        compiler_params=plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Lane),
        interpret=interpret_params() if interpret else None)
    inputs = [gamma, entry_run, run, q, k, v]
    if entry_state is not None:
        inputs.append(entry_state)
    return list(call(*inputs))
