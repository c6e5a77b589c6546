"""Kernel launch parameters: one small table per head size, and the sequence split.

Chosen by measurement on an H200 (benchmarks/kernel_bench.py); see
benchmarks/RESULTS.md. A row gives the chunk length ``C``, the value/key block
widths that split the ``dk × dv`` state across programs, and Triton's warps and
pipeline stages.
"""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    chunk: int            # C: rows per chunk (intra-chunk attention tile)
    block_v: int          # dv columns per program: forward kernel
    block_k: int          # dk rows per program: dQ and dK kernels
    num_warps: int
    num_stages: int
    block_v_bwd: int = 0  # dv columns per program: dV kernel (0: same as block_v)

    @property
    def dv_block_backward(self) -> int:
        return self.block_v_bwd or self.block_v


# Keyed by (dk, dv) after padding to powers of two >= 16.
_TABLE: dict[tuple[int, int], KernelConfig] = {
    (64, 64): KernelConfig(chunk=64, block_v=64, block_k=64, num_warps=4, num_stages=2),
    (128, 128): KernelConfig(chunk=64, block_v=64, block_k=64, num_warps=4, num_stages=2),
    (256, 128): KernelConfig(chunk=64, block_v=64, block_k=128, num_warps=8, num_stages=2,
                             block_v_bwd=128),
    (256, 256): KernelConfig(chunk=64, block_v=64, block_k=64, num_warps=8, num_stages=2),
}

# Programs wanted in flight: two per streaming multiprocessor of an H100/H200 (132).
TARGET_PROGRAMS = 264
# A split walks at least this many chunks, so the scan across splits stays short.
MIN_SPLIT_CHUNKS = 4


def padded_head_dim(d: int) -> int:
    """Triton tiles need power-of-two sizes of at least 16."""
    return max(16, 1 << (d - 1).bit_length())


# Rows are tuned for 2-byte inputs; 4-byte tiles wider than this exceed shared memory
# (dk 256 / dv 128 with 128-wide blocks asks for 290 KB on an H200: 227 KB available).
FLOAT32_MAX_BLOCK = 64


def kernel_config(dk: int, dv: int, chunk_size: int | None, itemsize: int = 2) -> KernelConfig:
    """The table's row for padded ``(dk, dv)``; other sizes get a generic row."""
    config = _TABLE.get((dk, dv))
    if config is None:
        widest = max(dk, dv)
        config = KernelConfig(chunk=64, block_v=min(dv, 64), block_k=min(dk, 64),
                              num_warps=8 if widest >= 256 else 4, num_stages=2)
    config = dataclasses.replace(config, block_v=min(config.block_v, dv),
                                 block_k=min(config.block_k, dk),
                                 block_v_bwd=min(config.dv_block_backward, dv))
    if itemsize > 2:
        cap = FLOAT32_MAX_BLOCK
        config = dataclasses.replace(config, block_v=min(config.block_v, cap),
                                     block_k=min(config.block_k, cap),
                                     block_v_bwd=min(config.dv_block_backward, cap))
    if chunk_size is not None:
        config = dataclasses.replace(config, chunk=chunk_size)
    return config


def split_chunks(n_chunks: int, programs_per_split: int) -> int:
    """Chunks per split: split the sequence only when the grid is too small to fill
    the GPU (few rows, e.g. one 128K sequence); splits are a power of two in number."""
    wanted = max(1, math.ceil(TARGET_PROGRAMS / max(programs_per_split, 1)))
    splits = 1 << (wanted - 1).bit_length()
    splits = min(splits, max(1, n_chunks // MIN_SPLIT_CHUNKS))
    return math.ceil(n_chunks / splits)
