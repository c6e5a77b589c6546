"""Test oracles for causal linear attention with per-head decay (docs/DESIGN.md, "The
math"): the naive forms that the kernels and the ``xla`` backend (xla_backend.py) are
tested against. Nothing in the op imports this module.

* :func:`quadratic` -- the parallel form, a decay-masked ``(T, T)`` score matrix;
* :func:`recurrent` -- the recurrence ``S_t = λ S_{t-1} + k_t v_tᵀ``, ``o_t = q_tᵀ S_t``.

Both take ``run_ids`` (contiguous runs, numbered from 0 in each row, see
runs.run_ids_from_segments), an initial state for the first run of each row, and return
``(o, final_state)``, the final state being the state at the end of each row's last
run. They compute in float32, or float64 when the inputs are float64, and return ``o``
in ``q.dtype``.

Shapes: ``q, k (B, T, H, dk)``, ``v (B, T, H, dv)``, ``decay (H,)`` in ``[0, +inf]``,
``run_ids (B, T)`` int32, ``initial_state (B, H, dk, dv)``.

Non-finite inputs: masks and decays select (``weighted``), never multiply, so an inf
or NaN reaches only what depends on it. ``recurrent`` is exact in this (its one
product per token meets only that token's own values): it is the oracle for
non-finite inputs, forward and backward. ``quadratic``'s ``(T, T) × (T, dv)`` product
lets a non-finite ``v_s`` reach every row of its row of the batch (``0 · inf``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.lightning.chunk_math import weighted
from pallas_kernels.lightning.xla_backend import compute_dtype, with_defaults


def power(gamma, steps):
    """``λ^steps = exp(-γ·steps)``, with ``λ^0 = 1`` also for ``γ = +inf``."""
    return jnp.where(steps > 0, jnp.exp(-gamma * jnp.maximum(steps, 1)), 1.0)


def quadratic(q, k, v, decay, *, run_ids=None, initial_state=None):
    """Parallel form: ``o_t = Σ_{s<=t, same run} λ^(t-s) (q_t·k_s) v_s``."""
    dtype = compute_dtype(q, k, v)
    out_dtype = q.dtype
    run_ids, s0 = with_defaults(q, v, run_ids, initial_state, dtype)
    q, k, v = (x.astype(dtype) for x in (q, k, v))
    gamma = decay.astype(dtype)
    seq = q.shape[1]
    pos = jnp.arange(seq)
    dist = pos[:, None] - pos[None, :]  # t - s
    same_run = run_ids[:, :, None] == run_ids[:, None, :]  # (B, T, T)
    mask = (dist >= 0)[None] & same_run
    weights = power(gamma[:, None, None], jnp.maximum(dist, 0))  # (H, T, T)
    scores = weighted(jnp.einsum("bthd,bshd->bhts", q, k),
                      jnp.where(mask[:, None], weights[None], 0))
    o = jnp.einsum("bhts,bshd->bthd", scores, v)

    # The initial state continues the first run: it reaches row t decayed t+1 times.
    first_run = (run_ids == 0)[:, :, None]  # (B, T, 1)
    s0_decay = power(gamma[None, :], pos[:, None] + 1)  # (T, H)
    o_init = jnp.einsum("bthk,bhkv->bthv", q, s0)
    o = o + weighted(o_init, jnp.where(first_run, s0_decay[None], 0)[..., None])

    # Final state: keys of the last run, plus s0 if the row is one run.
    last_run = run_ids[:, -1:]
    in_last = (run_ids == last_run)[:, :, None]  # (B, T, 1)
    key_decay = power(gamma[None, :], (seq - 1 - pos)[:, None])  # (T, H)
    key_weights = jnp.where(in_last, key_decay[None], 0)[..., None]  # (B, T, H, 1)
    final = jnp.einsum("bshk,bshv->bhkv", weighted(k, key_weights),
                       jnp.where(key_weights != 0, v, 0))
    carried = jnp.where((last_run == 0)[:, :, None, None], power(gamma, seq)[None, :, None, None], 0)
    final = final + weighted(s0, carried)
    return o.astype(out_dtype), final


def recurrent(q, k, v, decay, *, run_ids=None, initial_state=None):
    """Token-by-token recurrence, a ``lax.scan`` over the sequence."""
    dtype = compute_dtype(q, k, v)
    out_dtype = q.dtype
    run_ids, s0 = with_defaults(q, v, run_ids, initial_state, dtype)
    lam = jnp.exp(-decay.astype(dtype))[None, :, None, None]
    starts = jnp.concatenate(
        [jnp.zeros_like(run_ids[:, :1], bool), run_ids[:, 1:] != run_ids[:, :-1]], axis=1)

    def step(state, xs):
        q_t, k_t, v_t, start_t = xs
        state = weighted(state, jnp.where(start_t[:, None, None, None], 0, lam))
        state = state + jnp.einsum("bhk,bhv->bhkv", k_t, v_t)
        return state, jnp.einsum("bhk,bhkv->bhv", q_t, state)

    xs = tuple(jnp.swapaxes(x, 0, 1) for x in (q.astype(dtype), k.astype(dtype),
                                                 v.astype(dtype), starts))
    final, o = jax.lax.scan(step, s0, xs)
    return jnp.swapaxes(o, 0, 1).astype(out_dtype), final
