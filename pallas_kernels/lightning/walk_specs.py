"""The grid and block layout shared by every kernel: one program per
``(batch, head, feature block, sequence split)`` walks the chunks of its split.

Arrays keep the op's layout: rows ``(B, T, H, d)``, run ids ``(B, T)``, per-split
states ``(B, H, splits, dk, dv)``. A program sees ``L = chunks_per_split · C`` rows of
one head, all of ``d`` or one block of it.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from pallas_kernels.lightning.tuning import KernelConfig


@dataclasses.dataclass(frozen=True)
class WalkLayout:
    """How the padded sequence is cut: ``splits × chunks_per_split × chunk`` rows, of
    which the first ``seq_len`` are real."""

    chunk: int
    chunks_per_split: int
    splits: int
    seq_len: int

    @property
    def split_len(self) -> int:
        return self.chunks_per_split * self.chunk

    @property
    def padded_len(self) -> int:
        return self.splits * self.split_len


def gamma_spec() -> pl.BlockSpec:
    """``(H, 1)`` decay rates: each program gets its head's, as a ``(1,)`` ref."""
    return pl.BlockSpec((None, 1), lambda b, h, x, s: (h, 0))


def entry_run_spec() -> pl.BlockSpec:
    """``(B, splits)`` run id of the row before each split, as a ``(1,)`` ref."""
    return pl.BlockSpec((None, 1), lambda b, h, x, s: (b, s))


def run_spec(split_len: int) -> pl.BlockSpec:
    return pl.BlockSpec((None, split_len), lambda b, h, x, s: (b, s))


def rows_spec(split_len: int, width: int, blocked: bool) -> pl.BlockSpec:
    """``(B, T, H, d)`` rows of the split; ``blocked`` takes feature block ``x``."""
    if blocked:
        return pl.BlockSpec((None, split_len, None, width), lambda b, h, x, s: (b, s, h, x))
    return pl.BlockSpec((None, split_len, None, width), lambda b, h, x, s: (b, s, h, 0))


def state_spec(rows: int, cols: int, block_axis: str) -> pl.BlockSpec:
    """``(B, H, splits, dk, dv)`` state of the split, blocked along ``"dk"`` or ``"dv"``."""
    if block_axis == "dk":
        return pl.BlockSpec((None, None, None, rows, cols), lambda b, h, x, s: (b, h, s, x, 0))
    return pl.BlockSpec((None, None, None, rows, cols), lambda b, h, x, s: (b, h, s, 0, x))


def partial_sum_spec() -> pl.BlockSpec:
    """``(B, H, blocks, splits)`` one float32 per program (decay-gradient partials)."""
    return pl.BlockSpec((None, None, None, 1), lambda b, h, x, s: (b, h, x, s))


def optional_refs(refs: Sequence, *present: bool) -> list:
    """The kernel's trailing refs in order, None for each one not passed."""
    refs = list(refs)
    return [refs.pop(0) if here else None for here in present]


def state_or_zeros(state_ref, shape: tuple[int, int]) -> jax.Array:
    """The carried float32 state a program starts from: given, or zero."""
    return jnp.zeros(shape, jnp.float32) if state_ref is None else state_ref[...]


def walk_call(kernel: Callable, *, grid: tuple[int, int, int, int],
              in_specs: Sequence[pl.BlockSpec], out_specs: Sequence[pl.BlockSpec],
              out_shape: Sequence[jax.ShapeDtypeStruct], config: KernelConfig,
              interpret: bool, name: str) -> Callable:
    """``pallas_call`` with the Triton compiler parameters always given explicitly
    (jax 0.10 would otherwise lower a GPU call through Mosaic GPU)."""
    return pl.pallas_call(
        kernel, grid=grid, in_specs=list(in_specs), out_specs=list(out_specs),
        out_shape=list(out_shape), interpret=interpret, name=name,
        compiler_params=plt.CompilerParams(num_warps=config.num_warps,
                                           num_stages=config.num_stages))
