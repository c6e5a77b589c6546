"""Token positions (for LRPE and RoPE) when the caller gives none: the position of
each token inside its document, i.e. inside its contiguous run of ``segment_ids``."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def positions_in_segments(segment_ids: jax.Array) -> jax.Array:
    """Position of each token inside its contiguous run of ``segment_ids (B, T)``."""
    seq = segment_ids.shape[1]
    index = jnp.arange(seq, dtype=jnp.int32)[None]
    starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool),
                              segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    run_start = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
    return index - run_start


def default_positions(batch: int, seq: int, segment_ids: jax.Array | None) -> jax.Array:
    """``(B, T)``: ``0 .. T-1`` per row, or restarting at every segment change."""
    if segment_ids is None:
        return jnp.broadcast_to(jnp.arange(seq), (batch, seq))
    return positions_in_segments(segment_ids)
