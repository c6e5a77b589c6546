"""The two oracles (quadratic, recurrent) and the ``xla`` backend's chunked form agree
in float64."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.lightning import reference, xla_backend
from pallas_kernels.lightning.runs import run_ids_from_segments
from tests.kernels.attention_inputs import attention_inputs
from tests.tolerances import rel_err

DECAYS = [0.0, 0.05, 1.0, 8.0, float("inf")]


@pytest.mark.parametrize("seq,dk_factor,features", [
    (1, 1, "plain"), (37, 2, "segments+state"), (64, 1, "plain"), (130, 2, "segments+state")])
def test_three_forms_agree(x64, rng, seq, dk_factor, features):
    dv = 8
    with_features = features != "plain"
    q, k, v, decay, kw = attention_inputs(
        rng, 2, seq, len(DECAYS), dk_factor * dv, dv, decay=DECAYS, dtype=jnp.float64,
        segments=with_features, initial_state=with_features)
    run_ids = (run_ids_from_segments(kw["segment_ids"]) if with_features else None)
    s0 = kw.get("initial_state")
    s0 = None if s0 is None else s0.astype(jnp.float64)
    o_ref, s_ref = jax.jit(reference.quadratic)(q, k, v, decay, run_ids=run_ids,
                                                initial_state=s0)
    assert o_ref.dtype == jnp.float64
    chunked = functools.partial(xla_backend.chunked, chunk_size=16)
    for form in (reference.recurrent, chunked):
        o, s = jax.jit(form)(q, k, v, decay, run_ids=run_ids, initial_state=s0)
        assert rel_err(o, o_ref) < 1e-12
        assert rel_err(s, s_ref) < 1e-12


def test_matches_definition_by_hand(x64, rng):
    """Quadratic form against a plain Python double loop of the formula."""
    q, k, v, decay, _ = attention_inputs(rng, 1, 7, 2, 3, 2, decay=[0.3, 2.0],
                                         dtype=jnp.float64)
    o, _ = jax.jit(reference.quadratic)(q, k, v, decay)
    qn, kn, vn, g = (np.asarray(x, np.float64) for x in (q, k, v, decay))
    expected = np.zeros_like(np.asarray(o))
    for t in range(7):
        for s in range(t + 1):
            for h in range(2):
                expected[0, t, h] += np.exp(-g[h] * (t - s)) * (qn[0, t, h] @ kn[0, s, h]) * vn[0, s, h]
    assert rel_err(o, expected) < 1e-12


def test_segments_isolate_documents(x64, rng):
    """A packed row equals the documents run one by one; any labels (a repeated one, a
    negative one) mark documents by where they change."""
    q, k, v, decay, _ = attention_inputs(rng, 1, 20, 2, 4, 4, decay=[0.1, 0.7],
                                         dtype=jnp.float64)
    seg = jnp.asarray([[5] * 6 + [-2] * 9 + [5] * 5])
    o, _ = jax.jit(functools.partial(xla_backend.chunked, chunk_size=16))(
        q, k, v, decay, run_ids=run_ids_from_segments(seg))
    for lo, hi in [(0, 6), (6, 15), (15, 20)]:
        o_doc, _ = jax.jit(reference.quadratic)(q[:, lo:hi], k[:, lo:hi], v[:, lo:hi], decay)
        assert rel_err(o[:, lo:hi], o_doc) < 1e-12


def test_large_decay_is_finite(rng):
    """λ = e^-30 and λ = 0 (decay +inf, exactly): only the diagonal survives,
    ``o_t = (q_t·k_t) v_t``, and the final state is the last token's ``k vᵀ``."""
    q, k, v, decay, _ = attention_inputs(rng, 1, 200, 2, 8, 8, decay=[30.0, float("inf")])
    o, s = jax.jit(functools.partial(xla_backend.chunked, chunk_size=64))(q, k, v, decay)
    assert np.isfinite(np.asarray(o)).all() and np.isfinite(np.asarray(s)).all()
    diag = jnp.einsum("bthd,bthd->bth", q, k)[..., None] * v
    assert rel_err(o[:, :, 0], diag[:, :, 0]) < 1e-6
    assert rel_err(o[:, :, 1], diag[:, :, 1]) < 1e-6  # Sums in another order: not bitwise.
    assert rel_err(s[:, 1], jnp.outer(k[0, -1, 1], v[0, -1, 1])[None]) < 1e-6
