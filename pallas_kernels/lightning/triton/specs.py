"""Block specs of the Triton walks and the ``pallas_call`` that launches them.

A program sees ``L = chunks_per_split · C`` rows of one head, all of ``d`` or one block
of it (layout.py); the grid is ``(batch, head, feature block, sequence split)``.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from pallas_kernels.lightning.launch import Launch
from pallas_kernels.lightning.manual_axes import typed_like
from pallas_kernels.lightning.layout import WalkLayout


def gamma_spec() -> pl.BlockSpec:
    """``(H, 1)`` decay rates: each program gets its head's, as a ``(1,)`` ref."""
    return pl.BlockSpec((None, 1), lambda b, h, x, s: (h, 0))


def entry_run_spec() -> pl.BlockSpec:
    """``(B, splits)`` run id of the row before each split, as a ``(1,)`` ref."""
    return pl.BlockSpec((None, 1), lambda b, h, x, s: (b, s))


def run_spec(layout: WalkLayout) -> pl.BlockSpec:
    first = layout.first_split
    return pl.BlockSpec((None, layout.split_len), lambda b, h, x, s: (b, s + first))


def rows_spec(layout: WalkLayout, width: int, blocked: bool) -> pl.BlockSpec:
    """``(B, T, H, d)`` rows of the split; ``blocked`` takes feature block ``x``."""
    first = layout.first_split
    if blocked:
        return pl.BlockSpec((None, layout.split_len, None, width),
                            lambda b, h, x, s: (b, s + first, h, x))
    return pl.BlockSpec((None, layout.split_len, None, width),
                        lambda b, h, x, s: (b, s + first, h, 0))


def state_spec(rows: int, cols: int, block_axis: str) -> pl.BlockSpec:
    """``(B, H, splits, dk, dv)`` state of the split, blocked along ``"dk"`` or ``"dv"``."""
    if block_axis == "dk":
        return pl.BlockSpec((None, None, None, rows, cols), lambda b, h, x, s: (b, h, s, x, 0))
    return pl.BlockSpec((None, None, None, rows, cols), lambda b, h, x, s: (b, h, s, 0, x))


def partial_sum_spec() -> pl.BlockSpec:
    """``(B, H, blocks, splits)`` one float32 per program (decay-gradient partials)."""
    return pl.BlockSpec((None, None, None, 1), lambda b, h, x, s: (b, h, x, s))


def qk_specs(layout: WalkLayout, width: int, blocked: bool) -> list[pl.BlockSpec]:
    """Specs of (gamma, entry_run, run, q, k): the inputs every kernel starts with."""
    return [gamma_spec(), entry_run_spec(), run_spec(layout),
            rows_spec(layout, width, blocked), rows_spec(layout, width, blocked)]


def optional_refs(refs: Sequence, *present: bool) -> list:
    """The kernel's trailing refs in order, None for each one not passed."""
    refs = list(refs)
    return [refs.pop(0) if here else None for here in present]


def state_or_zeros(state_ref, shape: tuple[int, int]) -> jax.Array:
    """The carried float32 state a program starts from: given, or zero."""
    return jnp.zeros(shape, jnp.float32) if state_ref is None else state_ref[...]


def walk_call(kernel: Callable, *, grid: tuple[int, int, int, int],
              in_specs: Sequence[pl.BlockSpec], out_specs: Sequence[pl.BlockSpec],
              out_shape: Sequence[jax.ShapeDtypeStruct], launch: Launch,
              interpret: bool, name: str) -> Callable:
    """``pallas_call`` with the Triton compiler parameters always given explicitly
    (jax 0.10 would otherwise lower a GPU call through Mosaic GPU); the outputs vary
    along the manual mesh axes the arguments vary along (inside ``shard_map``)."""
    def call(*args):
        return pl.pallas_call(
            kernel, grid=grid, in_specs=list(in_specs), out_specs=list(out_specs),
            out_shape=typed_like(out_shape, args), interpret=interpret, name=name,
            compiler_params=plt.CompilerParams(num_warps=launch.num_warps,
                                               num_stages=launch.num_stages))(*args)
    return call


def value_block_walk(kernel: Callable, q, k, x, gamma, run, entry_run, state_in, *,
                     out_dtype, emit_output: bool, emit_state: bool,
                     layout: WalkLayout, launch: Launch, interpret: bool,
                     name: str) -> list[jax.Array]:
    """A walk over ``(batch, head, value block, split)`` that reads q and k whole and
    ``x (B, T, H, dv)`` one value block (``launch.block`` wide) at a time (the forward,
    with x = v, and the dV kernel, with x = dO), in chunks of ``launch.chunk`` rows.
    Optional: a state entering each split (``None``: zero), the rows it writes
    (``out_dtype``), the state leaving each split; all blocked like x.
    ``kernel(*refs, layout, has_state_in, emit_output, emit_state)``."""
    batch, _, heads, dk = q.shape
    dv, block_v = x.shape[-1], launch.block
    layout = layout.with_chunk(launch.chunk)
    in_specs = qk_specs(layout, dk, blocked=False) + [rows_spec(layout, block_v, blocked=True)]
    args = [gamma, entry_run, run, q, k, x]
    if state_in is not None:
        in_specs.append(state_spec(dk, block_v, "dv"))
        args.append(state_in)
    out_specs, out_shape = [], []
    if emit_output:
        out_specs.append(rows_spec(layout, block_v, blocked=True))
        out_shape.append(jax.ShapeDtypeStruct(x.shape, out_dtype))
    if emit_state:
        out_specs.append(state_spec(dk, block_v, "dv"))
        out_shape.append(jax.ShapeDtypeStruct((batch, heads, layout.splits, dk, dv), jnp.float32))
    kernel = functools.partial(kernel, layout=layout, has_state_in=state_in is not None,
                               emit_output=emit_output, emit_state=emit_state)
    grid = (batch, heads, dv // block_v, layout.splits)
    return walk_call(kernel, grid=grid, in_specs=in_specs, out_specs=out_specs,
                     out_shape=out_shape, launch=launch, interpret=interpret, name=name)(*args)
