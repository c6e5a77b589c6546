"""Shared memory of a Mosaic GPU walk: its buffers, their size, and whether a launch
fits (the tables keep a Triton launch for walks that do not; tuning.py)."""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.lightning.launch import Launch
from pallas_kernels.lightning.mosaic.plan import WalkPlan
from pallas_kernels.lightning.mosaic.products import TILE

SWIZZLE_BYTES = 128
SHARED_MEMORY_BYTES = 232448  # per block on an H100/H200
BARRIER_BYTES = 4096  # pipeline barriers and alignment: 3136 bytes measured at d 128


def tiles(dtype) -> tuple:
    """Shared-memory tiling wgmma and TMA want: 128-byte swizzled rows of 8."""
    return (plgpu.TilingTransform((8, SWIZZLE_BYTES // jnp.dtype(dtype).itemsize)),
            plgpu.SwizzleTransform(SWIZZLE_BYTES))


def shared_memory_bytes(width: int, block: int, chunk: int, stages: int, itemsize: int,
                        decay_grad: bool, reads_a: bool = True) -> int:
    """Shared memory of one program: ``stages`` buffers of the chunk tiles (A only if
    ``reads_a``: not in state-only passes), and per compute warpgroup a 16-bit state slice,
    an output tile and a float32 staging tile, which ``decay_grad`` walks share with the
    low half of their state slice."""
    tile_elements = (2 if reads_a else 1) * chunk * width + (2 if decay_grad else 1) * chunk * block
    per_stage = tile_elements * itemsize + 2 * chunk * 4
    staging = TILE * TILE * 4
    if decay_grad:
        staging = max(staging, width * TILE * itemsize)
    per_warpgroup = (width + chunk) * TILE * itemsize + staging + chunk * 4
    return stages * per_stage + block // TILE * per_warpgroup + BARRIER_BYTES


def fits(launch: Launch, key_width: int, itemsize: int, decay_grad: bool = False,
         reads_a: bool = True) -> bool:
    """Whether the Mosaic GPU walk takes this launch: 16-bit inputs; the key width, chunk
    and block multiples of 64 (wgmma tiles), the block one or two compute warpgroups wide;
    chunks no longer than the key width (a chunk of C shares the 16-bit state's shared
    memory); and the buffers within shared memory (``reads_a``: false for the state-only
    passes, which pipeline two operands of three)."""
    return (itemsize == 2 and all(n % TILE == 0 for n in (key_width, launch.block, launch.chunk))
            and launch.block <= 2 * TILE and launch.chunk <= key_width
            and shared_memory_bytes(key_width, launch.block, launch.chunk, launch.num_stages,
                                    itemsize, decay_grad, reads_a) <= SHARED_MEMORY_BYTES)


class Scratch(NamedTuple):
    """Per compute warpgroup (indexed by it): the 16-bit state slice (``w × 64``), whose
    first rows also hold the write-decayed C of a state update; the output tile; the
    float32 staging tile of the state in and out; the low half of the 16-bit state
    (decay-gradient walks only, aliased with the staging tile on the GPU); the
    decay-gradient partials; a barrier for the state coming in."""
    state16: object
    out: object
    staging: object
    state_low: object
    partial: object
    barrier: object

    @classmethod
    def from_refs(cls, refs, decay_grad: bool) -> "Scratch":
        state16, out, staging, partial, barrier = refs
        staging, state_low = staging if decay_grad else (staging, None)
        return cls(state16, out, staging, state_low, partial, barrier)


def scratch_types(plan: WalkPlan) -> list:
    """The buffers of :class:`Scratch`, in its order (the staging tile and the low state
    half as one union)."""
    warpgroups, dtype = plan.warpgroups, plan.dtype
    staging = plgpu.SMEM((warpgroups, TILE, TILE), jnp.float32, transforms=tiles(jnp.float32))
    state_low = plgpu.SMEM((warpgroups, plan.width, TILE), dtype, transforms=tiles(dtype))
    # Aliased on the GPU; the interpreter has no aliased refs, nor a shared-memory limit.
    staging_and_state_low = ((staging, state_low) if plan.interpret
                             else plgpu.RefUnion(staging, state_low))
    return [plgpu.SMEM((warpgroups, plan.width, TILE), dtype, transforms=tiles(dtype)),
            plgpu.SMEM((warpgroups, plan.chunk, TILE), plan.out_dtype,
                       transforms=tiles(plan.out_dtype)),
            staging_and_state_low if plan.decay_grad else staging,
            plgpu.SMEM((warpgroups, plan.chunk), jnp.float32),
            plgpu.Barrier(num_barriers=warpgroups)]
