"""The Mosaic GPU walk: every pass of the op for Hopper is this one kernel with operand
roles (roles.py; docs/DESIGN.md, "The Mosaic GPU walk").

A walk reads rows ``A`` and ``B`` (width ``w``) and ``C`` (width ``n``) and carries a
float32 state ``S`` (``w × n``) from chunk to chunk (chunk.py). One program per (group
of ``block`` columns of C, head, batch · split). A memory warpgroup TMA-pipelines the
chunk tiles (specs.py) into swizzled shared memory (scratch.py); ``block / 64`` compute
warpgroups share them, each owning 64 columns of C and its ``w × 64`` slice of S, held
in registers as 64-row wgmma accumulator tiles. So a 128-wide head reads A and B once.

The tests run this code in Mosaic GPU's interpreter (products.py); the pipeline, the
warpgroups, the shared-memory traffic and the chunk math are the same code.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.lightning.launch import Launch
from pallas_kernels.lightning.manual_axes import varying_like
from pallas_kernels.lightning.layout import WalkLayout
from pallas_kernels.lightning.mosaic import chunk as chunk_step
from pallas_kernels.lightning.mosaic.plan import Program, WalkPlan
from pallas_kernels.lightning.mosaic.products import TILE, WGMMA_ROWS, in_layout, interpret_params
from pallas_kernels.lightning.mosaic.scratch import Scratch, scratch_types
from pallas_kernels.lightning.mosaic.specs import Operands, chunk_tiles, out_types

MEMORY_WARPGROUP_REGISTERS = 40


def _warpgroup_cols(plan: WalkPlan, program: Program, wg) -> tuple:
    """This warpgroup's columns of C: in the row arrays, and in the C tile."""
    return (pl.ds(program.group * plan.block + wg * TILE, TILE), pl.ds(wg * TILE, TILE))


def _state_in(plan: WalkPlan, program: Program, operands: Operands, scratch: Scratch, wg,
              cols) -> tuple[jax.Array, ...]:
    """The warpgroup's slice of the state entering the split, as ``64 × 64`` tiles:
    staged through shared memory (tiled, so it loads as wgmma tiles), or zero."""
    def tile(i):
        plgpu.copy_gmem_to_smem(
            operands.state_in.at[program.batch, program.head, program.split,
                                 pl.ds(i * TILE, TILE), cols],
            scratch.staging.at[wg], scratch.barrier.at[wg])
        plgpu.barrier_wait(scratch.barrier.at[wg])
        return scratch.staging.at[wg][...]

    zeros = in_layout(jnp.zeros((TILE, TILE), jnp.float32), plgpu.Layout.WGMMA, plan.interpret)
    return tuple(zeros if operands.state_in is None else tile(i)
                 for i in range(plan.width // TILE))


def _write_results(plan: WalkPlan, program: Program, operands: Operands, scratch: Scratch,
                   wg, cols, state, partial) -> None:
    """The state leaving the split and the decay-gradient partials, through shared memory."""
    for i, tile in enumerate(state if plan.emit_state else ()):
        plgpu.wait_smem_to_gmem(0, wait_read_only=True)
        scratch.staging.at[wg][...] = tile
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(
            scratch.staging.at[wg],
            operands.state_out.at[program.batch, program.head, program.split,
                                  pl.ds(i * TILE, TILE), cols])
    if plan.decay_grad:
        scratch.partial.at[wg][...] = partial
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(
            scratch.partial.at[wg],
            operands.partial.at[program.batch, program.head,
                                program.group * plan.warpgroups + wg, program.split])
    plgpu.wait_smem_to_gmem(0)


def _compute(plan: WalkPlan, program: Program, operands: Operands, scratch: Scratch,
             gamma_ref, pipeline) -> None:
    """A compute warpgroup: the state in, the chunks (``pipeline`` runs ``_step``), the
    results out."""
    wg = jax.lax.axis_index("wg")
    cols, _ = _warpgroup_cols(plan, program, wg)
    gamma = gamma_ref[program.head, 0]
    state = _state_in(plan, program, operands, scratch, wg, cols)
    constants = chunk_step.walk_constants(plan, gamma)
    partial = in_layout(jnp.zeros((plan.chunk,), jnp.float32), WGMMA_ROWS, plan.interpret)
    _, state, partial = pipeline((constants, state, partial))
    _write_results(plan, program, operands, scratch, wg, cols, state, partial)


def _step(plan: WalkPlan, program: Program, operands: Operands, scratch: Scratch,
          indices, *refs):
    """One chunk, on the tiles staged in shared memory (chunk_tiles' order)."""
    *tiles, (constants, state, partial) = refs
    tiles = list(tiles)
    a_s = tiles.pop(0) if plan.emit_output else None
    b_s, c_s = tiles.pop(0), tiles.pop(0)
    x_s = tiles.pop(0) if plan.decay_grad else None
    run_s, prev_run_s = tiles
    wg = jax.lax.axis_index("wg")
    cols, own = _warpgroup_cols(plan, program, wg)
    # The 16-bit state: one ref, or with the decay gradient a hi/lo pair of them.
    state16 = [scratch.state16.at[wg]] + ([scratch.state_low.at[wg]] if plan.decay_grad else [])
    (j,) = indices
    chunk = plan.chunk_of(program.split, j)
    decays = chunk_step.chunk_decays(plan, constants, run_s, prev_run_s, chunk)
    if plan.emit_output:
        out, out_state = chunk_step.output_tile(plan, constants, decays, state, state16, a_s,
                                                b_s, c_s.at[:, own], run_s)
        if plan.decay_grad:
            partial += chunk_step.decay_grad_partial(plan, constants, chunk, x_s.at[:, own],
                                                     out, out_state)
        out_s = scratch.out.at[wg]
        plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # the last chunk's copy out
        out_s[...] = out.astype(plan.out_dtype)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(
            out_s, operands.out.at[program.batch, pl.ds(chunk * plan.chunk, plan.chunk),
                                   program.head, cols])
    state = chunk_step.state_update(plan, decays, state, state16, b_s, c_s.at[:, own])
    return constants, state, partial


def _program(plan: WalkPlan, gamma_ref, run_ref, *refs) -> None:
    """One program: a memory warpgroup feeding ``plan.warpgroups`` compute warpgroups."""
    operands, scratch_refs = Operands.from_refs(refs, plan)
    scratch = Scratch.from_refs(scratch_refs, plan.decay_grad)
    group, h, row = (jax.lax.axis_index(name) for name in ("group", "head", "row"))
    splits = plan.layout.splits
    program = Program(group, h, row // splits, row % splits)
    in_specs, gmem = chunk_tiles(plan, program, operands, run_ref)
    pipeline = plgpu.emit_pipeline_warp_specialized(
        functools.partial(_step, plan, program, operands, scratch),
        grid=(plan.layout.chunks_per_split,), in_specs=in_specs,
        max_concurrent_steps=plan.stages, memory_registers=MEMORY_WARPGROUP_REGISTERS,
        wg_axis="wg", num_compute_wgs=plan.warpgroups,
        compute_context=functools.partial(_compute, plan, program, operands, scratch,
                                          gamma_ref))
    pipeline(*gmem)


def mosaic_walk(a, b, c, gamma, run, state_in, *, reverse: bool, layout: WalkLayout,
                launch: Launch, interpret: bool, emit_output: bool, emit_state: bool,
                decay_grad_rows=None, out_dtype=None) -> list[jax.Array]:
    """Padded rows ``a, b (B, Tp, H, w)``, ``c (B, Tp, H, n)``, ``gamma (H, 1)``, ``run
    (B, Tp)``, ``state_in (B, H, splits, w, n)`` float32 or None (zero). ``a`` is read only
    if ``emit_output``. Returns, as asked and in this order: ``out (B, Tp, H, n)``, the
    state leaving each split, and (with ``decay_grad_rows`` X) the decay-gradient partials
    ``(B, H, n / 64, splits)`` (chunk.decay_grad_partial), for which the state and its
    update rows are 16-bit hi/lo pairs. ``launch``: a Mosaic launch that
    ``scratch.fits``; the walk goes in its chunks."""
    batch, _, heads, width = b.shape
    plan = WalkPlan(
        layout=layout.with_chunk(launch.chunk), width=width, cols=c.shape[-1],
        block=launch.block, stages=launch.num_stages, dtype=b.dtype,
        out_dtype=out_dtype or b.dtype, reverse=reverse, emit_output=emit_output,
        emit_state=emit_state, has_state_in=state_in is not None,
        decay_grad=decay_grad_rows is not None, interpret=interpret)

    def kernel(*refs):
        _program(plan, *refs)

    inputs = [gamma, run] + ([a] if emit_output else []) + [b, c]
    inputs += [decay_grad_rows] if plan.decay_grad else []
    inputs += [state_in] if state_in is not None else []
    call = plgpu.kernel(
        kernel, out_type=out_types(plan, c.shape, batch, heads),
        grid=(plan.cols // plan.block, heads, batch * plan.layout.splits),
        grid_names=("group", "head", "row"), num_threads=plan.warpgroups + 1,
        thread_name="wg", scratch_types=scratch_types(plan),
        # Lane semantics: the layouts are given here (jax 0.11 defaults to inferring them).
        compiler_params=plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Lane),
        interpret=interpret_params() if interpret else None)
    # plgpu.kernel leaves manual-axis types unchecked and its outputs invariant: inside
    # shard_map they vary like the inputs.
    outputs = [varying_like(x, *inputs) for x in call(*inputs)]
    if plan.decay_grad:
        outputs[-1] = outputs[-1].sum(axis=-1)
    return outputs
