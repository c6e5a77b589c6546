"""The static description of one Mosaic GPU walk, and where a program sits in its grid."""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax

from pallas_kernels.lightning.layout import WalkLayout
from pallas_kernels.lightning.mosaic.products import TILE


@dataclasses.dataclass(frozen=True)
class WalkPlan:
    """What a walk reads, writes and carries; everything the kernel specializes on.
    Rows ``A, B`` are ``width`` wide, ``C`` and the output ``cols`` wide; the state is
    ``width × cols``, and a program owns ``block`` of its columns (64 per compute
    warpgroup)."""

    layout: WalkLayout   # in the walk's own chunks
    width: int
    cols: int
    block: int
    stages: int          # TMA pipeline buffers
    dtype: Any           # of A, B, C (16-bit)
    out_dtype: Any
    reverse: bool        # chunks backward in time
    emit_output: bool    # the output rows (and read A); state-only passes do not
    emit_state: bool     # the state leaving each split
    has_state_in: bool   # a state entering each split (else zero)
    decay_grad: bool     # read X and sum the decay-gradient partials
    interpret: bool

    @property
    def chunk(self) -> int:
        return self.layout.chunk

    @property
    def warpgroups(self) -> int:
        return self.block // TILE

    def chunk_of(self, split, j) -> jax.Array:
        """The sequence's chunk that step ``j`` of ``split`` walks."""
        per_split = self.layout.chunks_per_split
        return self.layout.first_chunk(split) + (per_split - 1 - j if self.reverse else j)


class Program(NamedTuple):
    """A program's place in the grid ``(column group, head, batch · split)``."""
    group: jax.Array
    head: jax.Array
    batch: jax.Array
    split: jax.Array
