"""The launch tables and their resolution, and the sequence-split policy.

Used when ``lightning_attention`` gets no ``kernel_config``. Rows were chosen by
measurement on an H200 (benchmarks/kernel/tune_kernels.py, each walk alone; the op against the
anchors in benchmarks/kernel/kernel_bench.py); the numbers behind each row are in
benchmarks/RESULTS.md, "Launch tables: why these rows". A row gives, per walk, the
feature block that splits the ``dk × dv`` state across programs, Triton's warps and
pipeline stages, and the chunk length ``C``.
"""
from __future__ import annotations

import dataclasses
import math

import jax

from pallas_kernels.lightning.launch import WALKS, KernelConfig, Launch
from pallas_kernels.lightning.mosaic import scratch

# Triton launches, for every GPU. Keyed by (dk, dv) after padding to powers of two >= 16.
# Launch(block, warps, stages, chunk).
_TABLE: dict[tuple[int, int], KernelConfig] = {
    (64, 64): KernelConfig(forward=Launch(64, 4, 3, 64), dq=Launch(64, 4, 2, 64),
                           dk=Launch(64, 4, 2, 64), dv=Launch(64, 4, 2, 64),
                           fused_dkdv=Launch(0, 4, 1, 64)),
    (128, 128): KernelConfig(forward=Launch(128, 4, 3, 32), dq=Launch(64, 4, 3, 32),
                             dk=Launch(128, 4, 1, 32), dv=Launch(128, 4, 1, 32)),
    (256, 128): KernelConfig(forward=Launch(64, 8, 3, 64), dq=Launch(64, 4, 3, 32),
                             dk=Launch(64, 4, 3, 32), dv=Launch(64, 8, 1, 64)),
    (256, 256): KernelConfig(forward=Launch(64, 8, 3, 64), dq=Launch(64, 8, 2, 64),
                             dk=Launch(64, 8, 2, 64), dv=Launch(64, 8, 3, 64)),
}

# Hopper, 16-bit inputs: the walks that run in Mosaic GPU (mosaic/); a walk not listed,
# or whose launch does not fit (``scratch.fits``), keeps the Triton row's launch. Block
# 128: two compute warpgroups share each tile. The state-only passes pipeline no A tile,
# so deeper pipelines and wider blocks fit.
_HOPPER_TABLE: dict[tuple[int, int], dict[str, Launch]] = {
    (64, 64): dict(forward=Launch(64, 4, 4, 64, lowering="mosaic"),
                   dq=Launch(64, 4, 3, 64, lowering="mosaic"),
                   dk=Launch(64, 4, 4, 64, lowering="mosaic"),
                   dv=Launch(64, 4, 3, 64, lowering="mosaic"),
                   states=Launch(64, 4, 4, 64, lowering="mosaic")),
    (128, 128): dict({walk: Launch(128, 4, 2, 64, lowering="mosaic") for walk in WALKS},
                     states=Launch(128, 4, 4, 64, lowering="mosaic")),
    (256, 128): dict(forward=Launch(64, 4, 2, 64, lowering="mosaic"),
                     dq=Launch(128, 4, 2, 64, lowering="mosaic"),
                     dk=Launch(128, 4, 2, 64, lowering="mosaic"),
                     dv=Launch(64, 4, 2, 64, lowering="mosaic"),
                     states=Launch(128, 4, 2, 64, lowering="mosaic")),
    (256, 256): dict({walk: Launch(64, 4, 2, 64, lowering="mosaic") for walk in WALKS},
                     states=Launch(64, 4, 3, 64, lowering="mosaic")),
}

# Programs wanted in flight, per lowering of the forward walk: two Triton programs per
# streaming multiprocessor of an H100/H200 (132); one Mosaic GPU program, which fills an
# SM (two or three warpgroups, most of its shared memory), so one wave of 128.
TARGET_PROGRAMS = {"triton": 264, "mosaic": 128}
# A split walks at least this many chunks, so the sum across splits stays small.
MIN_SPLIT_CHUNKS = 4


def padded_head_dim(d: int) -> int:
    """Triton tiles need power-of-two sizes of at least 16."""
    return max(16, 1 << (d - 1).bit_length())


# Rows are tuned for 2-byte inputs; 4-byte tiles wider than this, or pipelined deeper,
# exceed shared memory.
FLOAT32_MAX_BLOCK = 64
FLOAT32_MAX_STAGES = 2


def _generic_config(dk: int, dv: int) -> KernelConfig:
    launch = Launch(64, 8 if max(dk, dv) >= 256 else 4, 2, 64)
    return KernelConfig(forward=launch, dq=launch, dk=launch, dv=launch)


def has_wgmma() -> bool:
    """Whether the default device is a Hopper GPU (compute capability 9.x): the only one
    with wgmma, which the Mosaic GPU walks are written for."""
    device = jax.devices()[0]
    return device.platform == "gpu" and getattr(device, "compute_capability", "").startswith("9.")


def _walk_widths(dk: int, dv: int) -> dict[str, tuple[int, int]]:
    """Per walk: the width its block cuts, and its key width (of the rows it multiplies:
    A and B in mosaic/roles.py)."""
    return dict(forward=(dv, dk), dq=(dk, dv), dk=(dk, dv), dv=(dv, dk), states=(dv, dk))


def _fit(launch: Launch, width: int, chunk_size: int | None, itemsize: int) -> Launch:
    """A block that divides ``width`` (0: all of it), float32 tiles capped, the chunk
    ``chunk_size`` if given."""
    wide = itemsize > 2
    stages = min(launch.num_stages, FLOAT32_MAX_STAGES) if wide else launch.num_stages
    cap = FLOAT32_MAX_BLOCK if wide else width
    return dataclasses.replace(launch, block=min(launch.block or width, width, cap),
                               num_stages=stages, chunk=chunk_size or launch.chunk)


def resolve(config: KernelConfig, dk: int, dv: int, chunk_size: int | None = None,
            itemsize: int = 2, decay_grad: bool = False) -> KernelConfig:
    """``config`` for padded ``(dk, dv)`` as the kernels take it: each walk's block a width
    that divides its head (0: the whole head), float32 tiles capped
    (``FLOAT32_MAX_BLOCK``, ``FLOAT32_MAX_STAGES``), every chunk ``chunk_size`` if given,
    ``states`` the forward's launch if None; the fused dK/dV walk dropped where the head
    is wider than the float32 cap. Mosaic GPU launches keep the deepest pipeline, up to
    their own, that fits (``decay_grad``: the dQ and dK walks hold more); one that does not
    fit at all is an error."""
    cap = FLOAT32_MAX_BLOCK if itemsize > 2 else max(dk, dv)
    launches = {}
    for walk, (width, key_width) in _walk_widths(dk, dv).items():
        launch = _fit(getattr(config, walk) or config.forward, width, chunk_size, itemsize)
        if launch.lowering == "mosaic":
            fitted = _deepest_fitting(launch, key_width, itemsize,
                                      decay_grad=decay_grad and walk in ("dq", "dk"),
                                      reads_a=walk != "states")
            if fitted is None:
                raise ValueError(
                    f"kernel_config.{walk} = {launch} does not fit the Mosaic GPU walk "
                    f"(16-bit inputs, 64-multiples, shared memory) at dk={dk}, dv={dv}")
            launch = fitted
        if width % launch.block:
            raise ValueError(f"kernel_config.{walk}.block must divide the padded width "
                             f"{width}, got {launch.block}")
        launches[walk] = launch
    fused = config.fused_dkdv if max(dk, dv) <= cap else None
    return dataclasses.replace(config, **launches, fused_dkdv=fused and _fit(
        fused, max(dk, dv), chunk_size, itemsize))


def kernel_config(dk: int, dv: int, chunk_size: int | None, itemsize: int = 2,
                  mosaic: bool = True, decay_grad: bool = False) -> KernelConfig:
    """The tables' launches for padded ``(dk, dv)`` (other sizes get a generic Triton
    row), resolved (``resolve``). ``mosaic`` (a Hopper GPU, or the interpreter) takes the
    Hopper table's Mosaic GPU launches that fit, each with the deepest pipeline up to its
    own that fits; the others keep the Triton row's. ``decay_grad``: the dQ and dK walks
    also give the decay gradient (more shared memory)."""
    config = resolve(_TABLE.get((dk, dv)) or _generic_config(dk, dv), dk, dv, chunk_size,
                     itemsize)
    widths, mosaic_launches = _walk_widths(dk, dv), {}
    for walk, launch in (_HOPPER_TABLE.get((dk, dv), {}) if mosaic else {}).items():
        width, key_width = widths[walk]
        launch = _deepest_fitting(_fit(launch, width, chunk_size, itemsize), key_width,
                                  itemsize, decay_grad=decay_grad and walk in ("dq", "dk"),
                                  reads_a=walk != "states")
        if launch:
            mosaic_launches[walk] = launch
    fused = None if {"dk", "dv"} & mosaic_launches.keys() else config.fused_dkdv
    return dataclasses.replace(config, **mosaic_launches, fused_dkdv=fused)


def _deepest_fitting(launch: Launch, key_width: int, itemsize: int, decay_grad: bool,
                     reads_a: bool) -> Launch | None:
    """The launch with the most pipeline stages, up to its own, that ``scratch.fits``."""
    for stages in range(launch.num_stages, 0, -1):
        candidate = dataclasses.replace(launch, num_stages=stages)
        if scratch.fits(candidate, key_width, itemsize, decay_grad, reads_a):
            return candidate
    return None


def split_chunks(n_chunks: int, programs_per_split: int, lowering: str = "triton") -> int:
    """Chunks per split: split the sequence only when the grid is too small to fill
    the GPU (few rows, e.g. one 128K sequence); splits are a power of two in number."""
    wanted = max(1, math.ceil(TARGET_PROGRAMS[lowering] / max(programs_per_split, 1)))
    splits = 1 << (wanted - 1).bit_length()
    splits = min(splits, max(1, n_chunks // MIN_SPLIT_CHUNKS))
    return math.ceil(n_chunks / splits)


def state_split_factor(chunks_per_split: int, programs_per_split: int, splits: int,
                       lowering: str) -> int:
    """How many splits of the state-only passes make one output split (1 with one output
    split: then there are no such passes). Those passes cover all output splits but one,
    so with few splits they leave SMs idle: their splits are halved while the programs
    still fit one wave."""
    factor = 1
    while (splits > 1 and chunks_per_split % (2 * factor) == 0
           and chunks_per_split // (2 * factor) >= MIN_SPLIT_CHUNKS
           and programs_per_split * (splits - 1) * 2 * factor <= TARGET_PROGRAMS[lowering]):
        factor *= 2
    return factor
