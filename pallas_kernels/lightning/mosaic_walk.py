"""Every walk of the op for Hopper in Mosaic GPU: the forward, dQ, dK and dV walks and the
state-only passes of sequence splits are one kernel with operand roles.

A walk reads rows ``A`` and ``B`` (width ``w``) and ``C`` (width ``n``), and carries a
float32 state ``S`` (``w × n``) from chunk to chunk:

    out = ((A Bᵀ) ⊙ M) C + diag(read_decay) A S
    S  ← carry · S + (diag(write_decay) B)ᵀ C

Forward in time (``M = intra``, read = query_decay, write = key_decay; chunk_math.py):
the forward pass is ``(A, B, C) = (Q, K, V)`` with ``S``, and dQ is ``(dO, V, K)`` with
``Sᵀ``. Backward in time, chunks in reverse (``M = intraᵀ``, read = key_decay, write =
query_decay): dV is ``(K, Q, dO)`` with ``dS`` and dK is ``(V, dO, Q)`` with ``dSᵀ``
(backward.py). The dQ and dK walks also sum their decay-gradient partials, for which they
read the rows ``X`` (Q or K) that pair with their output.

One program per (group of ``block`` columns of C, head, batch · split). A memory
warpgroup TMA-pipelines the chunk tiles (A, B, the group's columns of C, run ids) into
swizzled shared memory; ``block / 64`` compute warpgroups share them, each owning 64
columns of C and its ``w × 64`` slice of S, held in registers as 64-row wgmma accumulator
tiles. So a 128-wide head reads A and B once. Every product is a wgmma.

The tests run this code in Mosaic GPU's interpreter (CPU), which has no register layouts
and no wgmma on transposed or register operands: layouts are hints skipped there, and
``_products`` multiplies with ``jnp.dot`` there. Nor has it aliased shared memory, so
there the low half of the state gets its own buffer. The pipeline, the warpgroups, the
shared-memory traffic and the chunk math are the same code.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.lightning.chunk_math import boundary_weight, chunk_length, split16

if TYPE_CHECKING:  # tuning and walk_specs import this module (directly or through tuning)
    from pallas_kernels.lightning.tuning import Launch
    from pallas_kernels.lightning.walk_specs import WalkLayout

TILE = 64  # rows of a wgmma tile; the columns of C each compute warpgroup owns
SWIZZLE_BYTES = 128
SHARED_MEMORY_BYTES = 232448  # per block on an H100/H200
BARRIER_BYTES = 4096  # pipeline barriers and alignment: 3136 bytes measured at d 128
MEMORY_WARPGROUP_REGISTERS = 40
WGMMA_ROWS = plgpu.Layout.WGMMA.reduce(1)  # a vector over the rows of a wgmma tile
WGMMA_COLS = plgpu.Layout.WGMMA.reduce(0)  # a vector over its columns


def _tiles(dtype) -> tuple:
    """Shared-memory tiling wgmma and TMA want: 128-byte swizzled rows of 8."""
    return (plgpu.TilingTransform((8, SWIZZLE_BYTES // jnp.dtype(dtype).itemsize)),
            plgpu.SwizzleTransform(SWIZZLE_BYTES))


def shared_memory_bytes(width: int, block: int, chunk: int, stages: int, itemsize: int,
                        decay_grad: bool, reads_a: bool = True) -> int:
    """Shared memory of one program: ``stages`` buffers of the chunk tiles (A only if
    ``reads_a``: not in state-only passes), and per compute warpgroup a 16-bit state slice,
    an output tile and a float32 staging tile, which ``decay_grad`` walks share with the
    low half of their state slice."""
    tiles = (2 if reads_a else 1) * chunk * width + (2 if decay_grad else 1) * chunk * block
    per_stage = tiles * itemsize + 2 * chunk * 4
    staging = TILE * TILE * 4
    if decay_grad:
        staging = max(staging, width * TILE * itemsize)
    per_warpgroup = (width + chunk) * TILE * itemsize + staging + chunk * 4
    return stages * per_stage + block // TILE * per_warpgroup + BARRIER_BYTES


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


def mosaic_walk(a, b, c, gamma, run, state_in, *, reverse: bool, layout: WalkLayout,
                launch: Launch, interpret: bool, emit_output: bool, emit_state: bool,
                decay_grad_rows=None, out_dtype=None) -> list[jax.Array]:
    """Padded rows ``a, b (B, Tp, H, w)``, ``c (B, Tp, H, n)``, ``gamma (H, 1)``, ``run
    (B, Tp)``, ``state_in (B, H, splits, w, n)`` float32 or None (zero). ``a`` is read only
    if ``emit_output``. Returns, as asked and in this order: ``out (B, Tp, H, n)``, the
    state leaving each split, and (with ``decay_grad_rows`` X) the decay-gradient partials
    ``(B, H, n / 64, splits)`` of ``Σ_a a·(x_a·out_a) − (e_s−1−g·C)·Σ x·out_state``
    (backward.py), for which the state and its update rows are 16-bit hi/lo pairs
    (float32's precision; chunk_math.split16). ``launch``: a Mosaic launch that
    ``tuning.mosaic_fits``; the walk goes in its chunks."""
    layout, block, stages = layout.with_chunk(launch.chunk), launch.block, launch.num_stages
    batch, _, heads, width = b.shape
    n, cs, splits, per_split = c.shape[-1], layout.chunk, layout.splits, layout.chunks_per_split
    warpgroups, dtype = block // TILE, b.dtype
    out_dtype = out_dtype or dtype
    decay_grad = decay_grad_rows is not None
    tiles = _tiles(dtype)

    def in_layout(x, layout):
        """Register layouts are lowering hints; the interpreter has no lowering for them."""
        return x if interpret else plgpu.layout_cast(x, layout)

    def load(ref, layout):
        return ref[...] if interpret else plgpu.load(ref, (), layout=layout)

    def rows(vector, cols):
        return jax.lax.broadcast_in_dim(vector, (cs, cols), [0])

    def store_halves(x, halves):
        """``x`` in 16 bits, or as a hi/lo pair (chunk_math.split16) into two refs."""
        if len(halves) == 1:
            halves[0][...] = x.astype(dtype)
        else:
            halves[0][...], halves[1][...] = split16(x, dtype)

    def kernel(gamma_ref, run_ref, *refs):
        refs = list(refs)
        a_ref = refs.pop(0) if emit_output else None
        b_ref, c_ref = refs.pop(0), refs.pop(0)
        x_ref = refs.pop(0) if decay_grad else None
        state_in_ref = refs.pop(0) if state_in is not None else None
        out_ref = refs.pop(0) if emit_output else None
        state_out_ref = refs.pop(0) if emit_state else None
        partial_ref = refs.pop(0) if decay_grad else None
        state16_smem, out_smem, staging_smem, partial_smem, state_barrier = refs
        # Decay-gradient walks keep the low half of the 16-bit state where the float32
        # state is staged in and out, which no chunk step uses.
        staging_smem, state_low_smem = staging_smem if decay_grad else (staging_smem, None)
        group, h, row = (jax.lax.axis_index(name) for name in ("group", "head", "row"))
        bi, split = row // splits, row % splits

        def chunk_of(j):
            return layout.first_chunk(split) + (per_split - 1 - j if reverse else j)

        def warpgroup_cols(wg):
            """This warpgroup's columns of C: in the row arrays, and in the C tile."""
            return pl.ds(group * block + wg * TILE, TILE), pl.ds(wg * TILE, TILE)

        def compute(pipeline):
            wg = jax.lax.axis_index("wg")
            cols, _ = warpgroup_cols(wg)
            gamma = gamma_ref[h, 0]

            def state_tile(i):
                plgpu.copy_gmem_to_smem(
                    state_in_ref.at[bi, h, split, pl.ds(i * TILE, TILE), cols],
                    staging_smem.at[wg], state_barrier.at[wg])
                plgpu.barrier_wait(state_barrier.at[wg])
                return staging_smem.at[wg][...]  # tiled shared memory loads as wgmma tiles

            zeros = in_layout(jnp.zeros((TILE, TILE), jnp.float32), plgpu.Layout.WGMMA)
            state = tuple(zeros if state_in_ref is None else state_tile(i)
                          for i in range(width // TILE))
            # Loop-invariant: λ^|a-b| where a >= b (forward) or a <= b (backward), and a.
            a_idx = in_layout(jax.lax.broadcasted_iota(jnp.int32, (cs, cs), 0), plgpu.Layout.WGMMA)
            b_idx = in_layout(jax.lax.broadcasted_iota(jnp.int32, (cs, cs), 1), plgpu.Layout.WGMMA)
            dist = b_idx - a_idx if reverse else a_idx - b_idx
            causal_decay = jnp.where(
                dist >= 0, jnp.exp(-gamma * jnp.maximum(dist, 0).astype(jnp.float32)), 0.0)
            offsets = jnp.max(a_idx.astype(jnp.float32), axis=1)  # (cs,) rows: a
            partial = in_layout(jnp.zeros((cs,), jnp.float32), WGMMA_ROWS)
            _, state, partial = pipeline(((gamma, causal_decay, offsets), state, partial))

            for i, tile in enumerate(state if emit_state else ()):
                plgpu.wait_smem_to_gmem(0, wait_read_only=True)
                staging_smem.at[wg][...] = tile
                plgpu.commit_smem()
                plgpu.copy_smem_to_gmem(
                    staging_smem.at[wg],
                    state_out_ref.at[bi, h, split, pl.ds(i * TILE, TILE), cols])
            if decay_grad:
                partial_smem.at[wg][...] = partial
                plgpu.commit_smem()
                plgpu.copy_smem_to_gmem(partial_smem.at[wg],
                                        partial_ref.at[bi, h, group * warpgroups + wg, split])
            plgpu.wait_smem_to_gmem(0)

        def step(indices, *refs):
            *chunk_refs, (constants, state, partial) = refs
            chunk_refs = list(chunk_refs)
            a_s = chunk_refs.pop(0) if emit_output else None
            b_s, c_s = chunk_refs.pop(0), chunk_refs.pop(0)
            x_s = chunk_refs.pop(0) if decay_grad else None
            run_s, prev_run_s = chunk_refs
            gamma, causal_decay, offsets = constants
            wg = jax.lax.axis_index("wg")
            cols, own = warpgroup_cols(wg)
            # The 16-bit state: one ref, or with the decay gradient a hi/lo pair of them.
            state16 = [state16_smem.at[wg]] + ([state_low_smem.at[wg]] if decay_grad else [])
            (j,) = indices
            chunk = chunk_of(j)
            length = chunk_length(chunk, cs, layout.seq_len).astype(jnp.float32)
            run_rows = load(run_s, WGMMA_ROWS)
            last = run_s[cs - 1]
            prev = jnp.where(chunk == 0, run_s[0], prev_run_s[cs - 1])
            query_decay = jnp.where(run_rows == prev, jnp.exp(-gamma * (offsets + 1.0)), 0.0)
            key_decay = jnp.where((offsets < length) & (run_rows == last),
                                  jnp.exp(-gamma * jnp.maximum(length - 1.0 - offsets, 0.0)), 0.0)
            carry = jnp.where(last == prev, jnp.exp(-gamma * length), 0.0)
            read_decay, write_decay = ((key_decay, query_decay) if reverse
                                       else (query_decay, key_decay))

            if emit_output:
                run_cols = load(run_s, WGMMA_COLS)
                same_run = rows(run_rows, cs) == jax.lax.broadcast_in_dim(run_cols, (cs, cs), [1])
                for i, tile in enumerate(state):
                    store_halves(tile, [half.at[pl.ds(i * TILE, TILE)] for half in state16])
                plgpu.commit_smem()
                p = _products((cs, cs), [(a_s, _Transposed(b_s))], interpret)
                p = jnp.where(same_run, p * causal_decay, 0.0).astype(dtype)
                # The read decay scales the float32 product (not A before it): one bf16
                # rounding fewer, which the decay gradient's cancelling sums need.
                out_state = (_products((cs, TILE), [(a_s, half) for half in state16], interpret)
                             * rows(read_decay, TILE))
                out = out_state + _products((cs, TILE), [(p, c_s.at[:, own])], interpret)
                if decay_grad:
                    x = x_s.at[:, own][...].astype(jnp.float32)
                    boundary = boundary_weight(chunk, cs, layout.split_len, layout.seq_len)
                    partial += (offsets * jnp.sum(x * out, axis=1)
                                - boundary * jnp.sum(x * out_state, axis=1))
                out_s = out_smem.at[wg]
                plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # the last chunk's copy out
                out_s[...] = out.astype(out_dtype)
                plgpu.commit_smem()
                plgpu.copy_smem_to_gmem(
                    out_s, out_ref.at[bi, pl.ds(chunk * cs, cs), h, cols])

            # The 16-bit state is dead once out is computed: its first rows now hold the
            # write-decayed C of the state update.
            scaled_c = [half.at[pl.ds(0, cs)] for half in state16]
            store_halves(c_s.at[:, own][...].astype(jnp.float32) * rows(write_decay, TILE),
                         scaled_c)
            plgpu.commit_smem()
            state = tuple(
                carry * tile + _products(
                    (TILE, TILE),
                    [(_Transposed(b_s.at[:, pl.ds(i * TILE, TILE)]), half) for half in scaled_c],
                    interpret)
                for i, tile in enumerate(state))
            return constants, state, partial

        def chunk_spec(cols, index):
            return plgpu.BlockSpec((cs, cols), lambda j: (chunk_of(j), index),
                                   transforms=tiles)

        in_specs = [chunk_spec(width, 0), chunk_spec(block, group)]
        gmem = [b_ref.at[bi, :, h, :], c_ref.at[bi, :, h, :]]
        if emit_output:  # the state-only passes of sequence splits need no A
            in_specs.insert(0, chunk_spec(width, 0))
            gmem.insert(0, a_ref.at[bi, :, h, :])
        if decay_grad:
            in_specs.append(chunk_spec(block, group))
            gmem.append(x_ref.at[bi, :, h, :])
        in_specs += [plgpu.BlockSpec((cs,), lambda j: (chunk_of(j),)),
                     plgpu.BlockSpec((cs,), lambda j: (jnp.maximum(chunk_of(j) - 1, 0),))]
        gmem += [run_ref.at[bi], run_ref.at[bi]]
        pipeline = plgpu.emit_pipeline_warp_specialized(
            step, grid=(per_split,), in_specs=in_specs, max_concurrent_steps=stages,
            memory_registers=MEMORY_WARPGROUP_REGISTERS, wg_axis="wg",
            num_compute_wgs=warpgroups, compute_context=compute)
        pipeline(*gmem)

    staging = plgpu.SMEM((warpgroups, TILE, TILE), jnp.float32, transforms=_tiles(jnp.float32))
    state_low = plgpu.SMEM((warpgroups, width, TILE), dtype, transforms=tiles)
    # Aliased on the GPU; the interpreter has no aliased refs, nor a shared-memory limit.
    staging_and_state_low = ((staging, state_low) if interpret
                             else plgpu.RefUnion(staging, state_low))
    out_type = []
    if emit_output:
        out_type.append(jax.ShapeDtypeStruct(c.shape, out_dtype))
    if emit_state:
        out_type.append(jax.ShapeDtypeStruct((batch, heads, splits, width, n), jnp.float32))
    if decay_grad:
        out_type.append(jax.ShapeDtypeStruct((batch, heads, n // TILE, splits, cs), jnp.float32))
    call = plgpu.kernel(
        kernel, out_type=out_type, grid=(n // block, heads, batch * splits),
        grid_names=("group", "head", "row"), num_threads=warpgroups + 1, thread_name="wg",
        scratch_types=[plgpu.SMEM((warpgroups, width, TILE), dtype, transforms=tiles),
                       plgpu.SMEM((warpgroups, cs, TILE), out_dtype, transforms=_tiles(out_dtype)),
                       staging_and_state_low if decay_grad else staging,
                       plgpu.SMEM((warpgroups, cs), jnp.float32),
                       plgpu.Barrier(num_barriers=warpgroups)],
        # Lane semantics: the layouts are given here (jax 0.11 defaults to inferring them).
        compiler_params=plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Lane),
        interpret=interpret_params() if interpret else None)
    inputs = [gamma, run] + ([a] if emit_output else []) + [b, c]
    inputs += [decay_grad_rows] if decay_grad else []
    inputs += [state_in] if state_in is not None else []
    outputs = list(call(*inputs))
    if decay_grad:
        outputs[-1] = outputs[-1].sum(axis=-1)
    return outputs
