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

Shapes: ``q, k (B, T, H, dk)``, ``v (B, T, H, dv)``, ``decay (H,)``,
``run_ids (B, T)`` int32, ``initial_state (B, H, dk, dv)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.lightning.xla_backend import compute_dtype, with_defaults


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
    dtype = compute_dtype(q, k, v)
    out_dtype = q.dtype
    run_ids, s0 = with_defaults(q, v, run_ids, initial_state, dtype)
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
