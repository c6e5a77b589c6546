"""Plain-jnp references for causal linear attention with per-head decay.

Three forms of one function, each checking the others (DESIGN.md, "The math"):

* :func:`quadratic` -- the parallel form, a decay-masked ``(T, T)`` score matrix;
* :func:`recurrent` -- the recurrence ``S_t = λ S_{t-1} + k_t v_tᵀ``, ``o_t = q_tᵀ S_t``;
* :func:`chunked` -- the Lightning Attention-2 split into intra-chunk attention and an
  inter-chunk state, a ``lax.scan`` over chunks. It is the ``"xla"`` backend of the op.

Every decay factor is ``exp(-γ·n)`` with ``n >= 0``: no inverse powers, so ``γ`` up
to ~8 (and beyond) never overflows. All forms take ``run_ids`` (contiguous runs,
numbered from 0 in each row, see :func:`run_ids_from_segments`), an initial state for
the first run of each row, and return ``(o, final_state)``, the final state being the
state at the end of each row's last run. They compute in float32, or float64 when the
inputs are float64, and return ``o`` in ``q.dtype``.

Shapes: ``q, k (B, T, H, dk)``, ``v (B, T, H, dv)``, ``decay (H,)``,
``run_ids (B, T)`` int32, ``initial_state (B, H, dk, dv)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def run_ids_from_segments(segment_ids: jax.Array) -> jax.Array:
    """Numbers the contiguous runs of each row 0, 1, 2, ...: a new run starts
    wherever the id changes. Any labelling works (repeated ids, padding id 0)."""
    starts = segment_ids[:, 1:] != segment_ids[:, :-1]
    zeros = jnp.zeros((segment_ids.shape[0], 1), jnp.int32)
    return jnp.concatenate([zeros, jnp.cumsum(starts, axis=1, dtype=jnp.int32)], axis=1)


def _compute_dtype(*xs: jax.Array) -> jnp.dtype:
    return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


def _defaults(q, v, run_ids, initial_state, dtype):
    batch, seq, heads, dk = q.shape
    dv = v.shape[-1]
    if run_ids is None:
        run_ids = jnp.zeros((batch, seq), jnp.int32)
    if initial_state is None:
        initial_state = jnp.zeros((batch, heads, dk, dv), dtype)
    return run_ids, initial_state.astype(dtype)


def quadratic(q, k, v, decay, *, run_ids=None, initial_state=None):
    """Parallel form: ``o_t = Σ_{s<=t, same run} λ^(t-s) (q_t·k_s) v_s``."""
    dtype = _compute_dtype(q, k, v)
    out_dtype = q.dtype
    run_ids, s0 = _defaults(q, v, run_ids, initial_state, dtype)
    q, k, v = (x.astype(dtype) for x in (q, k, v))
    gamma = decay.astype(dtype)
    seq = q.shape[1]
    pos = jnp.arange(seq)
    dist = pos[:, None] - pos[None, :]  # t - s
    same_run = run_ids[:, :, None] == run_ids[:, None, :]  # (B, T, T)
    mask = (dist >= 0)[None] & same_run
    weights = jnp.exp(-gamma[:, None, None] * jnp.maximum(dist, 0))  # (H, T, T)
    scores = jnp.einsum("bthd,bshd->bhts", q, k) * weights[None] * mask[:, None]
    o = jnp.einsum("bhts,bshd->bthd", scores, v)

    # The initial state continues the first run: it reaches row t decayed t+1 times.
    first_run = (run_ids == 0)[:, :, None, None]  # (B, T, 1, 1)
    s0_decay = jnp.exp(-gamma[None, :] * (pos[:, None] + 1))  # (T, H)
    o_init = jnp.einsum("bthk,bhkv->bthv", q, s0) * s0_decay[None, :, :, None]
    o = o + jnp.where(first_run, o_init, 0)

    # Final state: keys of the last run, plus s0 if the row is one run.
    last_run = run_ids[:, -1:]
    in_last = (run_ids == last_run)[:, :, None]  # (B, T, 1)
    key_decay = jnp.exp(-gamma[None, :] * (seq - 1 - pos)[:, None])  # (T, H)
    k_weighted = k * jnp.where(in_last, key_decay[None], 0)[..., None]
    final = jnp.einsum("bshk,bshv->bhkv", k_weighted, v)
    carried = jnp.where((last_run == 0)[:, :, None, None], s0, 0)
    final = final + carried * jnp.exp(-gamma * seq)[None, :, None, None]
    return o.astype(out_dtype), final


def recurrent(q, k, v, decay, *, run_ids=None, initial_state=None):
    """Token-by-token recurrence, a ``lax.scan`` over the sequence."""
    dtype = _compute_dtype(q, k, v)
    out_dtype = q.dtype
    run_ids, s0 = _defaults(q, v, run_ids, initial_state, dtype)
    lam = jnp.exp(-decay.astype(dtype))[None, :, None, None]
    starts = jnp.concatenate(
        [jnp.zeros_like(run_ids[:, :1], bool), run_ids[:, 1:] != run_ids[:, :-1]], axis=1)

    def step(state, xs):
        q_t, k_t, v_t, start_t = xs
        state = jnp.where(start_t[:, None, None, None], 0, lam * state)
        state = state + jnp.einsum("bhk,bhv->bhkv", k_t, v_t)
        return state, jnp.einsum("bhk,bhkv->bhv", q_t, state)

    xs = tuple(jnp.swapaxes(x, 0, 1) for x in (q.astype(dtype), k.astype(dtype),
                                                 v.astype(dtype), starts))
    final, o = jax.lax.scan(step, s0, xs)
    return jnp.swapaxes(o, 0, 1).astype(out_dtype), final


def chunked(q, k, v, decay, *, run_ids=None, initial_state=None, chunk_size=64):
    """Lightning Attention-2 chunked form (DESIGN.md), a ``lax.scan`` over chunks.

    Per chunk ``j`` of valid length ``ℓ`` (``C`` except maybe the last):
    ``O = ((Q Kᵀ) ⊙ M) V + diag(λ^(a+1)) Q S`` and
    ``S' = λ^ℓ S + (diag(λ^(ℓ-1-b)) K)ᵀ V``, with runs masking every term.
    """
    dtype = _compute_dtype(q, k, v)
    out_dtype = q.dtype
    run_ids, s0 = _defaults(q, v, run_ids, initial_state, dtype)
    batch, seq, heads, dk = q.shape
    dv = v.shape[-1]
    c = chunk_size
    n_chunks = -(-seq // c)
    pad = n_chunks * c - seq

    def to_chunks(x, mode="constant"):  # (B, T, ...) -> (n, B, C, ...)
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2), mode=mode)
        return jnp.swapaxes(x.reshape(batch, n_chunks, c, *x.shape[2:]), 0, 1)

    qc, kc, vc = (to_chunks(x.astype(dtype)) for x in (q, k, v))
    # Padded rows repeat the last run id: with k = v = 0 they add nothing.
    rc = to_chunks(run_ids, mode="edge")
    lengths = jnp.minimum(seq - jnp.arange(n_chunks) * c, c)

    gamma = decay.astype(dtype)[:, None, None]  # (H, 1, 1)
    a = jnp.arange(c)
    dist = a[:, None] - a[None, :]
    intra_decay = jnp.where(dist >= 0, jnp.exp(-gamma * jnp.maximum(dist, 0)), 0)  # (H,C,C)
    query_decay = jnp.exp(-gamma[:, 0, 0][:, None] * (a + 1))  # (H, C)

    def step(carry, xs):
        state, prev_run = carry  # (B,H,dk,dv), (B,)
        q_j, k_j, v_j, r_j, length = xs
        same = r_j[:, :, None] == r_j[:, None, :]  # (B, C, C)
        scores = jnp.einsum("bahd,bchd->bhac", q_j, k_j) * intra_decay[None] * same[:, None]
        o = jnp.einsum("bhac,bchd->bahd", scores, v_j)
        continues = (r_j == prev_run[:, None])[:, :, None, None]  # rows in the carried run
        o_inter = jnp.einsum("bahk,bhkv->bahv", q_j, state) * query_decay.T[None, :, :, None]
        o = o + jnp.where(continues, o_inter, 0)

        last_run = r_j[:, -1]
        n_after = jnp.maximum(length - 1 - a, 0)  # steps from key b to the chunk's end
        key_decay = jnp.where(a < length, jnp.exp(-gamma[:, 0] * n_after), 0)  # (H, C)
        in_last = (r_j == last_run[:, None])[:, :, None]  # (B, C, 1)
        k_weighted = k_j * (key_decay.T[None] * in_last)[..., None]
        keep = (last_run == prev_run)[:, None, None, None]
        state = (jnp.where(keep, state, 0) * jnp.exp(-gamma[None] * length)
                 + jnp.einsum("bchk,bchv->bhkv", k_weighted, v_j))
        return (state, last_run), o

    init = (s0, run_ids[:, 0])
    (final, _), o = jax.lax.scan(step, init, (qc, kc, vc, rc, lengths))
    o = jnp.swapaxes(o, 0, 1).reshape(batch, n_chunks * c, heads, dv)[:, :seq]
    return o.astype(out_dtype), final


def step(q, k, v, decay, state):
    """One decode step of the recurrence: shapes without the sequence axis."""
    dtype = _compute_dtype(q, k, v, state)
    lam = jnp.exp(-decay.astype(dtype))[None, :, None, None]
    new_state = lam * state.astype(dtype) + jnp.einsum(
        "bhk,bhv->bhkv", k.astype(dtype), v.astype(dtype))
    o = jnp.einsum("bhk,bhkv->bhv", q.astype(dtype), new_state)
    return o.astype(q.dtype), new_state
