"""Matrix products and register layouts of the Mosaic GPU walks, and the interpreter.

On the GPU every product is a wgmma into a float32 accumulator and register values
carry wgmma layouts. Mosaic GPU's interpreter (CPU), which the tests run, has no
register layouts and no wgmma on transposed or register operands: there layouts are
skipped and products are ``jnp.dot``.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

TILE = 64  # rows of a wgmma tile; the columns of C each compute warpgroup owns
WGMMA_ROWS = plgpu.Layout.WGMMA.reduce(1)  # a vector over the rows of a wgmma tile
WGMMA_COLS = plgpu.Layout.WGMMA.reduce(0)  # a vector over its columns


@dataclasses.dataclass(frozen=True)
class Transposed:
    """A shared-memory operand read transposed."""
    ref: object


def products(shape: tuple[int, int], pairs, interpret: bool) -> jax.Array:
    """``Σ a @ b`` over ``pairs`` in float32: one wgmma accumulator on the GPU. ``a`` is a
    register value or a shared-memory ref, ``b`` a ref; either may be ``Transposed``."""
    def value(x):
        if isinstance(x, Transposed):
            return x.ref[...].T
        return x if isinstance(x, jax.Array) else x[...]

    if interpret:
        return sum(jnp.dot(value(a), value(b), preferred_element_type=jnp.float32)
                   for a, b in pairs)

    def operand(x):
        return x.ref.transpose((1, 0)) if isinstance(x, Transposed) else x

    def accumulate(acc_ref):
        for a, b in pairs:
            plgpu.wgmma(acc_ref, operand(a), operand(b))
        return acc_ref[...]

    return pl.run_scoped(accumulate, plgpu.ACC(shape, jnp.float32))


def in_layout(x: jax.Array, layout, interpret: bool) -> jax.Array:
    """Register layouts are lowering hints; the interpreter has no lowering for them."""
    return x if interpret else plgpu.layout_cast(x, layout)


def load(ref, layout, interpret: bool) -> jax.Array:
    """A shared-memory vector loaded in ``layout`` (a plain read in the interpreter)."""
    return ref[...] if interpret else plgpu.load(ref, (), layout=layout)


def interpret_params():
    """Mosaic GPU's interpreter (CPU); its public name differs across jax versions."""
    params = getattr(plgpu, "InterpretGPUParams", None)
    if params is None:
        from jax._src.pallas.mosaic_gpu.interpret.params import (
            InterpretGPUParams as params,
        )
    return params()
