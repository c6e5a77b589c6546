"""One chunk of the Lightning Attention-2 split (docs/DESIGN.md, "The math"), written
once for every lowering: the decay factors (Triton, Mosaic GPU and the ``xla`` backend)
and the products on values that the Triton walks share.

A chunk has ``C`` rows at offsets ``a, b ∈ [0, C)``; ``ℓ`` of them are real (the last
chunk of a row may be short; padded rows carry zeros). ``run`` holds the chunk's run
ids (non-decreasing, padded rows repeat the last real one), ``prev`` the run id of the
row before the chunk. Every factor is ``exp(-γ·n)`` with ``n >= 0``.

Masks select rather than multiply: ``weighted`` scales by a factor and gives 0 where
the factor is 0, so that a masked or fully decayed entry contributes nothing even
where it holds an inf or NaN (``0 · inf`` is NaN); a state update selects the rows of
both of its operands (docs/DESIGN.md, "Non-finite inputs").

These helpers work on values (not refs), and the factors on positions of any dtype
(integers in Triton and ``xla``, float32 vectors in a Mosaic GPU register layout), so
that every lowering and the interpreter use the same code.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


# λ = exp(-γ) is 0 in float32 and float64 alike beyond γ ≈ 745: each backend computes
# larger decays (+inf: each token sees only itself) as this one (``finite_decay``), so
# that λ^0 is exp(-γ·0) = 1, not exp(-inf·0) = NaN; their gradient is then 0, exactly.
MAX_DECAY = 1e4

# A float32 tile that becomes a float16 matmul operand is scaled into this range first
# (``float16_scale``): float16's largest value is 65504, the limit leaves room for rounding.
FLOAT16_LIMIT = 2.0 ** 15
FLOAT32_MAX = float(jnp.finfo(jnp.float32).max)


def finite_decay(gamma: jax.Array) -> jax.Array:
    """``γ`` with ``+inf`` (and anything beyond ``MAX_DECAY``) as ``MAX_DECAY``."""
    return jnp.minimum(gamma, MAX_DECAY)


def dot(a: jax.Array, b: jax.Array) -> jax.Array:
    """Matrix product with float32 accumulation; exact float32 for float32 operands
    (Triton's default for float32 is TF32)."""
    precision = jax.lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
    return jnp.dot(a, b, preferred_element_type=jnp.float32, precision=precision)


@dataclasses.dataclass(frozen=True)
class ChunkFactors:
    """Decay factors and masks of one chunk, as in the chunked form:

    ``O = ((Q Kᵀ) ⊙ intra) V + query_decay · Q S``,
    ``S' = carry · S + (key_decay · K)ᵀ V``.
    """

    intra: jax.Array        # (C, C) λ^(a-b) for a >= b in the same run, else 0
    query_decay: jax.Array  # (C,)   λ^(a+1) for rows continuing the run of `prev`, else 0
    key_decay: jax.Array    # (C,)   λ^(ℓ-1-b) for real rows of the chunk's last run, else 0
    carry: jax.Array        # ()     λ^ℓ if no run starts inside the chunk, else 0
    last_run: jax.Array     # ()     run id of the chunk's last row: `prev` of the next chunk


def weighted(x: jax.Array, factor: jax.Array) -> jax.Array:
    """``x · factor`` where ``factor != 0``, else 0 (not ``0 · x``, NaN for a
    non-finite ``x``). A NaN factor stays NaN."""
    return jnp.where(factor != 0, x * factor, 0.0)


def selected_rows(values: jax.Array, weights: jax.Array) -> jax.Array:
    """The rows of ``values`` whose weight is not 0, the others 0 (same dtype)."""
    return jnp.where(weights[:, None] != 0, values, jnp.zeros((), values.dtype))


def decay_power(gamma: jax.Array, steps: jax.Array) -> jax.Array:
    """``λ^steps = exp(-γ·steps)``, ``steps >= 0`` (no inverse powers), in γ's dtype."""
    return jnp.exp(-gamma * steps.astype(gamma.dtype))


def causal_decay(gamma: jax.Array, dist: jax.Array, same_run: jax.Array | None = None):
    """The intra-chunk mask: ``λ^dist`` where ``dist = a − b >= 0`` (and, if given,
    ``same_run``), else 0. Backward walks in reverse pass ``b − a``."""
    keep = dist >= 0 if same_run is None else (dist >= 0) & same_run
    return jnp.where(keep, decay_power(gamma, jnp.maximum(dist, 0)), 0.0)


def query_decay(gamma: jax.Array, pos: jax.Array, run: jax.Array, prev: jax.Array):
    """``λ^(a+1)`` for rows ``a`` continuing the run of the row before the chunk
    (``prev``), else 0: how the carried state reaches each row."""
    return jnp.where(run == prev, decay_power(gamma, pos + 1), 0.0)


def key_decay(gamma: jax.Array, pos: jax.Array, run: jax.Array, last: jax.Array,
              length: jax.Array):
    """``λ^(ℓ-1-b)`` for real rows ``b`` of the chunk's last run (``last``), else 0:
    how each key reaches the state at the chunk's end."""
    return jnp.where((pos < length) & (run == last),
                     decay_power(gamma, jnp.maximum(length - 1 - pos, 0)), 0.0)


def carry_decay(gamma: jax.Array, last: jax.Array, prev: jax.Array, length: jax.Array):
    """``λ^ℓ`` if no run starts inside the chunk (``last == prev``), else 0: how the
    carried state crosses the chunk."""
    return jnp.where(last == prev, decay_power(gamma, length), 0.0)


def chunk_factors(gamma: jax.Array, run: jax.Array, prev: jax.Array,
                  length: jax.Array) -> ChunkFactors:
    """``gamma`` () float32, ``run`` (C,) int32, ``prev`` () int32, ``length`` () int32."""
    c = run.shape[0]
    pos = jnp.arange(c, dtype=jnp.int32)
    dist = pos[:, None] - pos[None, :]
    same_run = run[:, None] == run[None, :]
    intra = causal_decay(gamma, dist, same_run)
    query = query_decay(gamma, pos, run, prev)
    last_run = jnp.max(run)
    return ChunkFactors(intra, query, key_decay(gamma, pos, run, last_run, length),
                        carry_decay(gamma, last_run, prev, length), last_run)


def chunk_length(chunk_index: jax.Array, chunk: int, seq_len: int) -> jax.Array:
    """Real rows of global chunk ``chunk_index``: ``C``, fewer at the end, 0 past it."""
    return jnp.clip(seq_len - chunk_index * chunk, 0, chunk).astype(jnp.int32)


def boundary_weight(chunk_index: jax.Array, chunk: int, split_len: int,
                    seq_len: int) -> jax.Array:
    """``e_s − 1 − g·C``: global chunk ``g``'s distance from the last real row of its
    sequence split, the weight of its state-crossing decay-gradient terms
    (docs/DESIGN.md, "The decay gradient")."""
    split_end = jnp.minimum(seq_len, (chunk_index * chunk // split_len + 1) * split_len)
    return (split_end - 1 - chunk_index * chunk).astype(jnp.float32)


def split16(x: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """A float32 ``x`` as a pair of ``dtype`` values, ``x ≈ high + low`` to float32's
    precision: products of both halves keep what one 16-bit rounding would lose. The
    decay gradient's cancelling sums need it (docs/DESIGN.md); the outputs do not."""
    high = x.astype(dtype)
    return high, (x - high.astype(jnp.float32)).astype(dtype)


def float16_scale(x: jax.Array, axis: int, dtype) -> jax.Array | None:
    """For a float32 tile ``x`` that becomes a ``dtype`` operand: where ``dtype`` is
    float16 (largest value 65504), the scale ``>= 1`` of each row (``axis=1``) or column
    (``axis=0``) that brings it within ``±FLOAT16_LIMIT``; ``x / scale`` is the operand
    and the product is multiplied back in float32, so that a score or state beyond
    float16's range never overflows the output (flash attention keeps its scores in
    float32 likewise). 1 where nothing overflows: the product is then unchanged. None
    for bfloat16 and float32, which hold float32's range. An infinite entry gets the
    largest scale and stays infinite."""
    if jnp.dtype(dtype) != jnp.float16:
        return None
    largest = jnp.max(jnp.abs(x), axis=axis)
    return jnp.clip(largest * (1.0 / FLOAT16_LIMIT), 1.0, FLOAT32_MAX / FLOAT16_LIMIT)


def tile_product(tile: jax.Array, y: jax.Array) -> jax.Array:
    """``tile @ y`` in float32 for a float32 tile (scores, ``dO Vᵀ``) and a row operand
    ``y``: the tile rounded to ``y``'s dtype, each row scaled into float16's range first
    where that is float16 (``float16_scale``)."""
    scale = float16_scale(tile, 1, y.dtype)
    if scale is None:
        return dot(tile.astype(y.dtype), y)
    return dot((tile / scale[:, None]).astype(y.dtype), y) * scale[:, None]


def state_product(rows: jax.Array, state: jax.Array, precise: bool) -> jax.Array:
    """``rows @ state`` in float32, the float32 state rounded to the rows' dtype for the
    matmul, or with ``precise`` split in two (``split16``); for float16 rows each column
    of the state scaled into float16's range first (``float16_scale``)."""
    if rows.dtype == jnp.float32:
        return dot(rows, state)
    scale = float16_scale(state, 0, rows.dtype)
    if scale is not None:
        state = state / scale[None, :]
    if precise:
        high, low = split16(state, rows.dtype)
        product = dot(rows, high) + dot(rows, low)
    else:
        product = dot(rows, state.astype(rows.dtype))
    return product if scale is None else product * scale[None, :]


def decayed_outer(x: jax.Array, weights: jax.Array, y: jax.Array, precise: bool) -> jax.Array:
    """``(diag(weights) x)ᵀ y``, a state update, with ``diag(weights) x`` rounded to the
    dtype of ``x``, or with ``precise`` split in two (``split16``). Rows of weight 0
    are left out of both operands (``0 · inf`` in the product would be NaN)."""
    y = selected_rows(y, weights)
    if not precise or x.dtype == jnp.float32:
        return dot(row_weights(x, weights).T, y)
    high, low = split16(weighted(x.astype(jnp.float32), weights[:, None]), x.dtype)
    return dot(high.T, y) + dot(low.T, y)


def row_weights(values: jax.Array, weights: jax.Array) -> jax.Array:
    """``diag(weights) · values`` in the dtype of ``values`` (a dot operand), rows of
    weight 0 selected to 0."""
    return weighted(values.astype(jnp.float32), weights[:, None]).astype(values.dtype)


def weighted_row_sum(x: jax.Array, y: jax.Array, weights: jax.Array) -> jax.Array:
    """``Σ_a weights[a] · (x_a · y_a)``, a float32 scalar (decay-gradient terms)."""
    per_row = jnp.sum(x.astype(jnp.float32) * y.astype(jnp.float32), axis=1)
    return jnp.sum(per_row * weights)
