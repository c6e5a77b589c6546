"""What a Mosaic GPU walk moves between global and shared memory: the operand refs
of a program, the TMA block specs of its chunk tiles, and its output types."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.lightning.mosaic.plan import Program, WalkPlan
from pallas_kernels.lightning.mosaic.products import TILE
from pallas_kernels.lightning.mosaic.scratch import tiles


class Operands(NamedTuple):
    """The global-memory refs of a walk (None where the plan has none), in the order
    the kernel receives them after ``gamma`` and ``run``."""
    a: object
    b: object
    c: object
    x: object
    state_in: object
    out: object
    state_out: object
    partial: object

    @classmethod
    def from_refs(cls, refs, plan: WalkPlan) -> tuple["Operands", list]:
        """The operands, and the refs left over (the scratch buffers)."""
        refs = list(refs)
        present = (plan.emit_output, True, True, plan.decay_grad, plan.has_state_in,
                   plan.emit_output, plan.emit_state, plan.decay_grad)
        return cls(*(refs.pop(0) if here else None for here in present)), refs


def chunk_tiles(plan: WalkPlan, program: Program, operands: Operands,
                run_ref) -> tuple[list, list]:
    """``(block specs, global refs)`` of the tiles the memory warpgroup pipelines per
    chunk: A (not in state-only passes), B (whole width), the program's columns of C and
    X, the chunk's run ids and the previous chunk's (its last is the run before)."""
    group, chunk = program.group, plan.chunk

    def chunk_spec(cols, index):
        return plgpu.BlockSpec((chunk, cols), lambda j: (plan.chunk_of(program.split, j), index),
                               transforms=tiles(plan.dtype))

    def rows_of(ref):
        return ref.at[program.batch, :, program.head, :]

    in_specs = [chunk_spec(plan.width, 0), chunk_spec(plan.block, group)]
    gmem = [rows_of(operands.b), rows_of(operands.c)]
    if plan.emit_output:
        in_specs.insert(0, chunk_spec(plan.width, 0))
        gmem.insert(0, rows_of(operands.a))
    if plan.decay_grad:
        in_specs.append(chunk_spec(plan.block, group))
        gmem.append(rows_of(operands.x))
    split = program.split
    in_specs += [
        plgpu.BlockSpec((chunk,), lambda j: (plan.chunk_of(split, j),)),
        plgpu.BlockSpec((chunk,), lambda j: (jnp.maximum(plan.chunk_of(split, j) - 1, 0),))]
    gmem += [run_ref.at[program.batch], run_ref.at[program.batch]]
    return in_specs, gmem


def out_types(plan: WalkPlan, c_shape: tuple[int, ...], batch: int, heads: int) -> list:
    """The output rows, the state leaving each split, the decay-gradient partials per
    row of the chunk (summed after the call), as the plan asks."""
    splits, out_type = plan.layout.splits, []
    if plan.emit_output:
        out_type.append(jax.ShapeDtypeStruct(c_shape, plan.out_dtype))
    if plan.emit_state:
        out_type.append(jax.ShapeDtypeStruct((batch, heads, splits, plan.width, plan.cols),
                                             jnp.float32))
    if plan.decay_grad:
        out_type.append(jax.ShapeDtypeStruct(
            (batch, heads, plan.cols // TILE, splits, plan.chunk), jnp.float32))
    return out_type
