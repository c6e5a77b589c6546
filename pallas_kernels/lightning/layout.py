"""How a walk cuts the padded sequence into splits of chunks (a leaf module).

Every kernel runs one program per ``(batch, head, feature block, sequence split)``;
a program walks the chunks of its split in order (or in reverse), carrying a state.
Arrays keep the op's layout: rows ``(B, T, H, d)``, run ids ``(B, T)``, per-split
states ``(B, H, splits, dk, dv)``.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

# The ``checkpoint_name`` of the states entering the sequence splits, a residual of the
# forward (a state-only pass makes them when a row has several splits; kernel_vjp.py,
# context_parallel.py): a remat policy that saves it and the op's output spares the
# backward a second forward.
SPLIT_STATES_NAME = "lightning_split_states"


@dataclasses.dataclass(frozen=True)
class WalkLayout:
    """How the padded sequence is cut: ``splits × chunks_per_split × chunk`` rows, of
    which the first ``seq_len`` are real. A walk over part of the sequence (a state-only
    pass) covers splits ``first_split, …, first_split + splits − 1``; its outputs number
    its own splits from 0."""

    chunk: int
    chunks_per_split: int
    splits: int
    seq_len: int
    first_split: int = 0

    @property
    def split_len(self) -> int:
        return self.chunks_per_split * self.chunk

    @property
    def padded_len(self) -> int:
        return self.splits * self.split_len

    def first_chunk(self, split) -> jax.Array:
        """The sequence's index of the first chunk of the walk's split ``split``."""
        return (split + self.first_split) * self.chunks_per_split

    def split_lengths(self) -> jax.Array:
        """``(splits,)`` float32: the real rows of each split (the last may be short)."""
        starts = (jnp.arange(self.splits) + self.first_split) * self.split_len
        return jnp.clip(self.seq_len - starts, 0, self.split_len).astype(jnp.float32)

    def with_chunk(self, chunk: int) -> "WalkLayout":
        """The same splits walked in chunks of ``chunk`` rows (which divides ``split_len``)."""
        return dataclasses.replace(self, chunk=chunk,
                                   chunks_per_split=self.split_len // chunk)
