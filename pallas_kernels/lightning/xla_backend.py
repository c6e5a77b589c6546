"""The ``xla`` backend: the Lightning Attention-2 chunked form as a ``lax.scan`` over
chunks, in plain jnp (any platform, differentiated by JAX), on the decay factors of
chunk_math.py; and the decode step.

Every decay factor is ``exp(-γ·n)`` with ``n >= 0``: no inverse powers, so ``γ`` up to
~8 (and beyond) never overflows. Factors and masks select (``chunk_math.weighted``), as
in the kernels. Inputs as in reference.py; computes in float32, or float64 for float64
inputs (its final state float64 too), and returns ``o`` in ``q.dtype``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.lightning import chunk_math
from pallas_kernels.lightning.manual_axes import varying_like


def compute_dtype(*xs: jax.Array) -> jnp.dtype:
    return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


def with_defaults(q, v, run_ids, initial_state, dtype):
    batch, seq, heads, dk = q.shape
    dv = v.shape[-1]
    if run_ids is None:
        run_ids = jnp.zeros((batch, seq), jnp.int32)
    if initial_state is None:
        initial_state = jnp.zeros((batch, heads, dk, dv), dtype)
    return run_ids, initial_state.astype(dtype)


def chunked(q, k, v, decay, *, run_ids=None, initial_state=None, chunk_size=64):
    """Lightning Attention-2 chunked form, a ``lax.scan`` over chunks.

    ``chunk_size`` beyond the sequence's length is cut to it (one chunk, no padding).
    Per chunk ``j`` of valid length ``ℓ`` (``C`` except maybe the last):
    ``O = ((Q Kᵀ) ⊙ M) V + diag(λ^(a+1)) Q S`` and
    ``S' = λ^ℓ S + (diag(λ^(ℓ-1-b)) K)ᵀ V``, with runs masking every term.
    """
    dtype = compute_dtype(q, k, v)
    out_dtype = q.dtype
    run_ids, s0 = with_defaults(q, v, run_ids, initial_state, dtype)
    batch, seq, heads, dk = q.shape
    dv = v.shape[-1]
    c = max(1, min(chunk_size, seq))  # a chunk longer than the sequence only pads it
    n_chunks = -(-seq // c)
    pad = n_chunks * c - seq

    def to_chunks(x, mode="constant"):  # (B, T, ...) -> (n, B, C, ...)
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2), mode=mode)
        return jnp.swapaxes(x.reshape(batch, n_chunks, c, *x.shape[2:]), 0, 1)

    qc, kc, vc = (to_chunks(x.astype(dtype)) for x in (q, k, v))
    # Padded rows repeat the last run id: with k = v = 0 they add nothing.
    rc = to_chunks(run_ids, mode="edge")
    lengths = jnp.minimum(seq - jnp.arange(n_chunks) * c, c)

    # Inside shard_map the decay varies like the data from here on, so that its
    # gradient is summed over devices once, not in every step of the scan.
    gamma = varying_like(chunk_math.finite_decay(decay.astype(dtype)), q, k, v,
                         run_ids)[:, None, None]  # (H, 1, 1)
    a = jnp.arange(c)
    dist = a[:, None] - a[None, :]
    # The factors of chunk_math.py over (H, C): runs mask them per row in the step.
    intra_decay = chunk_math.causal_decay(gamma, dist)  # (H, C, C)
    query_decay = chunk_math.decay_power(gamma[:, 0, 0][:, None], a + 1)  # (H, C)

    def step(carry, xs):
        state, prev_run = carry  # (B,H,dk,dv), (B,)
        q_j, k_j, v_j, r_j, length = xs
        same = r_j[:, :, None] == r_j[:, None, :]  # (B, C, C)
        scores = chunk_math.weighted(jnp.einsum("bahd,bchd->bhac", q_j, k_j),
                                     jnp.where(same[:, None], intra_decay[None], 0))
        o = jnp.einsum("bhac,bchd->bahd", scores, v_j)
        continues = (r_j == prev_run[:, None])[:, :, None]  # rows in the carried run
        read = jnp.where(continues, query_decay.T[None], 0)[..., None]  # (B, C, H, 1)
        # Rows that do not read the state are left out of the product too, so that
        # its gradient meets no 0 · inf either.
        o_inter = jnp.einsum("bahk,bhkv->bahv", jnp.where(read != 0, q_j, 0), state)
        o = o + chunk_math.weighted(o_inter, read)

        last_run = r_j[:, -1]
        n_after = jnp.maximum(length - 1 - a, 0)  # steps from key b to the chunk's end
        key_decay = jnp.where(a < length, chunk_math.decay_power(gamma[:, 0], n_after), 0)
        in_last = (r_j == last_run[:, None])[:, :, None]  # (B, C, 1)
        key_weights = jnp.where(in_last, key_decay.T[None], 0)[..., None]  # (B, C, H, 1)
        k_weighted = chunk_math.weighted(k_j, key_weights)
        v_selected = jnp.where(key_weights != 0, v_j, 0)  # rows out of the state: both sides
        keep = (last_run == prev_run)[:, None, None, None]
        carry = jnp.where(keep, chunk_math.decay_power(gamma[None], length), 0)
        state = (chunk_math.weighted(state, carry)
                 + jnp.einsum("bchk,bchv->bhkv", k_weighted, v_selected))
        return (state, last_run), o

    init = (varying_like(s0, qc, kc, vc, rc, gamma), varying_like(run_ids[:, 0], rc))
    (final, _), o = jax.lax.scan(step, init, (qc, kc, vc, rc, lengths))
    o = jnp.swapaxes(o, 0, 1).reshape(batch, n_chunks * c, heads, dv)[:, :seq]
    return o.astype(out_dtype), final


def step(q, k, v, decay, state):
    """One decode step of the recurrence: shapes without the sequence axis."""
    dtype = compute_dtype(q, k, v, state)
    lam = jnp.exp(-decay.astype(dtype))[None, :, None, None]
    new_state = chunk_math.weighted(state.astype(dtype), lam) + jnp.einsum(
        "bhk,bhv->bhkv", k.astype(dtype), v.astype(dtype))
    o = jnp.einsum("bhk,bhkv->bhv", q.astype(dtype), new_state)
    return o.astype(q.dtype), new_state
