"""Kernel launch parameters: one small table per head size, and the sequence split.

Chosen by measurement on an H200 (benchmarks/tune_kernels.py, each kernel alone; the
op against the anchors in benchmarks/kernel_bench.py); see benchmarks/RESULTS.md. A row
gives, for each kernel, the feature block that splits the ``dk × dv`` state across
programs, Triton's warps and pipeline stages, and the chunk length ``C``.
"""
from __future__ import annotations

import dataclasses
import math

import jax

from pallas_kernels.lightning.mosaic_walk import (
    SHARED_MEMORY_BYTES,
    TILE,
    shared_memory_bytes,
)

LOWERINGS = ("triton", "mosaic")


@dataclasses.dataclass(frozen=True)
class Launch:
    """One kernel's launch: the feature block each program owns (dv columns for the
    forward and dV walks, dk rows for the dQ and dK walks; 0: the whole head), Triton's
    warps and pipeline stages, and the chunk length ``C`` it walks in (a power of two:
    the intra-chunk attention tile). ``lowering="mosaic"`` runs the walk in Mosaic GPU
    (Hopper: wgmma, TMA; mosaic_walk.py) instead of Triton: there the block is the
    columns of a program, 64 per compute warpgroup, warps do not apply and stages are its
    TMA buffers."""

    block: int = 0
    num_warps: int = 4
    num_stages: int = 2
    chunk: int = 64
    lowering: str = "triton"

    def __post_init__(self):
        if self.lowering not in LOWERINGS:
            raise ValueError(f"lowering must be one of {LOWERINGS}, got {self.lowering!r}")


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    forward: Launch    # the forward walk
    dq: Launch
    dk: Launch
    dv: Launch         # the dV walk
    fused_dkdv: Launch | None = None  # if set: dK and dV from one walk (whole state)
    # The state-only passes of sequence splits (the forward's and the dS-only one);
    # None: the forward's launch. They read two operands of three and write no rows.
    states: Launch | None = None

    def __post_init__(self):
        if self.fused_dkdv and self.fused_dkdv.lowering != "triton":
            raise ValueError("the fused dK/dV walk has no Mosaic GPU lowering")
        # The decay gradient pairs the dQ and dK partial sums chunk by chunk (backward.py).
        key_chunk = (self.fused_dkdv or self.dk).chunk
        if self.dq.chunk != key_chunk:
            raise ValueError(f"the dQ and dK walks need one chunk length, got {self.dq.chunk} "
                             f"and {key_chunk}")

    @property
    def launches(self) -> tuple[Launch, ...]:
        return tuple(x for x in (self.forward, self.dq, self.dk, self.dv, self.fused_dkdv,
                                 self.states) if x)

    @property
    def chunk(self) -> int:
        """The longest chunk: rows are padded to whole chunks of it (and so of all)."""
        return max(launch.chunk for launch in self.launches)


# Triton launches, for every GPU. Keyed by (dk, dv) after padding to powers of two >= 16;
# each kernel's launch chosen alone by benchmarks/tune_kernels.py on an H200 at 16 x 8K
# tokens (RESULTS.md). Launch(block, warps, stages, chunk).
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

WALKS = ("forward", "dq", "dk", "dv", "states")

# Hopper, 16-bit inputs: the walks that run in Mosaic GPU (mosaic_walk.py), each chosen
# alone as above; a walk not listed, or whose launch does not fit (``mosaic_fits``), keeps
# the Triton row's launch. Block 128: two compute warpgroups share each tile. At 16 x 8K,
# forward / dQ / dK / dV: d 128 0.68 / 0.79 / 0.81 / 0.70 ms against Triton's 1.13 / 1.50
# / 1.65 / 1.29; dk 256 / dv 128 2.87 / 1.58 / 1.49 / 2.66 against 3.39 / 2.90 / 3.36 /
# 4.30; d 256 5.59 / 5.60 / 5.45 / 5.27 against 6.57 / 7.67 / 8.61 / 8.62; d 64 0.36 /
# 0.41 / 0.41 / 0.37 against 0.40 / 0.63 and 0.86 (fused dK/dV). The state-only passes
# pipeline no A tile, so deeper pipelines and wider blocks fit; at 1 x 128K: d 128 (7
# splits) 0.250 ms with 4 stages against 0.292 with 2; dk 256 / dv 128 (6 of 8 splits)
# 0.402 with block 128 against 0.609 with 64 (3 of 4); d 256 (2 of 4) 0.589 with 3
# stages against 0.646 with 2.
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
# streaming multiprocessor of an H100/H200 (132); one Mosaic GPU program, which fills an SM
# (two or three warpgroups, most of its shared memory), so one wave of 128. Measured, d 128
# fwd+bwd: 4 x 32K 3.70 ms at 2 splits against 3.80 at 4 and 3.95 at 8; 1 x 128K 3.73 at 8
# splits against 3.97 at 16 and 4.33 at 32 (RESULTS.md).
TARGET_PROGRAMS = {"triton": 264, "mosaic": 128}
# A split walks at least this many chunks, so the sum across splits stays small.
MIN_SPLIT_CHUNKS = 4


def padded_head_dim(d: int) -> int:
    """Triton tiles need power-of-two sizes of at least 16."""
    return max(16, 1 << (d - 1).bit_length())


# Rows are tuned for 2-byte inputs; 4-byte tiles wider than this, or pipelined deeper,
# exceed shared memory (dk 256 / dv 128 with 128-wide blocks asks for 290 KB on an
# H200, and with 3 stages 370 KB: 227 KB available).
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


def kernel_config(dk: int, dv: int, chunk_size: int | None, itemsize: int = 2,
                  mosaic: bool = True, decay_grad: bool = False) -> KernelConfig:
    """The tables' launches for padded ``(dk, dv)`` (other sizes get a generic Triton row),
    with every block a width that divides the head (0 resolved to the whole head) and
    every chunk ``chunk_size`` when one is given. ``mosaic`` (a Hopper GPU, or the
    interpreter) takes the Hopper table's Mosaic GPU launches that fit, each with the
    deepest pipeline up to its own that fits; ``decay_grad``: the dQ and dK walks also
    give the decay gradient (more shared memory)."""
    config = _TABLE.get((dk, dv)) or _generic_config(dk, dv)
    wide = itemsize > 2
    cap = FLOAT32_MAX_BLOCK if wide else max(dk, dv)
    # Per walk: the width its block cuts, and the key width (of the rows it multiplies:
    # A and B in mosaic_walk.py).
    widths = dict(forward=(dv, dk), dq=(dk, dv), dk=(dk, dv), dv=(dv, dk), states=(dv, dk))

    def fit(launch: Launch, width: int) -> Launch:
        stages = min(launch.num_stages, FLOAT32_MAX_STAGES) if wide else launch.num_stages
        return dataclasses.replace(launch, block=min(launch.block or width, width, cap),
                                   num_stages=stages, chunk=chunk_size or launch.chunk)

    launches = {walk: fit(getattr(config, walk) or config.forward, widths[walk][0])
                for walk in WALKS}
    fused = config.fused_dkdv if max(dk, dv) <= cap else None
    for walk, launch in (_HOPPER_TABLE.get((dk, dv), {}) if mosaic else {}).items():
        launch = _deepest_fitting(fit(launch, widths[walk][0]), widths[walk][1], itemsize,
                                  decay_grad=decay_grad and walk in ("dq", "dk"),
                                  reads_a=walk != "states")
        if launch:
            launches[walk] = launch
            if walk in ("dk", "dv"):
                fused = None
    return KernelConfig(**launches, fused_dkdv=fused and fit(fused, max(dk, dv)))


def mosaic_fits(launch: Launch, key_width: int, itemsize: int, decay_grad: bool = False,
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


def _deepest_fitting(launch: Launch, key_width: int, itemsize: int, decay_grad: bool,
                     reads_a: bool) -> Launch | None:
    """The launch with the most pipeline stages, up to its own, that ``mosaic_fits``."""
    for stages in range(launch.num_stages, 0, -1):
        candidate = dataclasses.replace(launch, num_stages=stages)
        if mosaic_fits(candidate, key_width, itemsize, decay_grad, reads_a):
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
    so with few splits they leave SMs idle (4 x 32K, d 128: 64 programs, 1.9 TB/s).
    Their splits are halved while the programs still fit one wave (there: 128 programs,
    3.6 TB/s; 256 gave 3.4)."""
    factor = 1
    while (splits > 1 and chunks_per_split % (2 * factor) == 0
           and chunks_per_split // (2 * factor) >= MIN_SPLIT_CHUNKS
           and programs_per_split * (splits - 1) * 2 * factor <= TARGET_PROGRAMS[lowering]):
        factor *= 2
    return factor
