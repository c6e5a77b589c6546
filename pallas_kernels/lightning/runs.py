"""Documents as runs: segment ids become run ids numbered 0, 1, 2, … in each row, the
form every backend and reference takes."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def run_ids_from_segments(segment_ids: jax.Array) -> jax.Array:
    """Numbers the contiguous runs of each row 0, 1, 2, ...: a new run starts
    wherever the id changes. Any labelling works (repeated ids, padding id 0)."""
    starts = segment_ids[:, 1:] != segment_ids[:, :-1]
    zeros = jnp.zeros((segment_ids.shape[0], 1), jnp.int32)
    return jnp.concatenate([zeros, jnp.cumsum(starts, axis=1, dtype=jnp.int32)], axis=1)
