"""Non-finite inputs (docs/DESIGN.md, "Non-finite inputs"): one bad token in a ragged
batch of packed documents reaches only what depends on it, forward and backward, in
the exact oracle (reference.recurrent), the ``xla`` backend and the kernels (interpreted,
Triton, sequence splits); beyond that only the documented in-chunk products. And the
checked path (``checks=True``) that names the bad argument under ``jit``."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from pallas_kernels import lightning_attention, lightning_attention_step
from pallas_kernels.lightning import reference, tuning
from pallas_kernels.lightning.runs import run_ids_from_segments
from tests.kernels.attention_inputs import attention_inputs, random_segments

T, H, D, CHUNK = 48, 1, 16, 16
# Documents [0, 6), [6, 20), [20, 40), [40, 48); the bad token is 18, in the second
# document, whose chunk [16, 32) ends inside the third, which runs on into the next.
DOCS = [(0, 6), (6, 20), (20, 40), (40, 48)]
BAD = 18
# One row per kind of bad input, each with its own value (both infinities and NaN),
# and a clean row of random documents.
BAD_VALUES = {"q": np.inf, "k": -np.inf, "v": np.nan, "initial_state": np.inf}
B = len(BAD_VALUES) + 1


def _row(*spans) -> np.ndarray:
    """``(T,)`` bool: True on the half-open token ``spans``."""
    mask = np.zeros(T, bool)
    for lo, hi in spans:
        mask[lo:hi] = True
    return mask


def reach(kind: str, exact: bool) -> dict[str, np.ndarray]:
    """Where a bad ``kind`` may make ``o``, ``dq``, ``dk`` and ``dv`` of its row
    non-finite: what depends on it (``exact``: the recurrent oracle), and in the
    chunked forms also the products within its chunk (``0 · inf`` in a matmul): a bad
    ``v_t`` reaches the outputs of its chunk, a bad ``k_t`` the ``dq`` of its chunk, a
    bad ``q_t`` the ``dk`` of its chunk (docs/DESIGN.md)."""
    doc_lo, doc_hi = DOCS[1]
    none = _row()
    spans = {
        "q": dict(o=_row((BAD, BAD + 1)), dq=none, dk=_row((doc_lo, BAD + 1)),
                  dv=_row((doc_lo, BAD + 1))),
        "k": dict(o=_row((BAD, doc_hi)), dq=_row((BAD, doc_hi)), dk=none,
                  dv=_row((BAD, BAD + 1))),
        "v": dict(o=_row((BAD, doc_hi)), dq=_row((BAD, doc_hi)), dk=_row((BAD, BAD + 1)),
                  dv=none),
        "initial_state": dict(o=_row(DOCS[0]), dq=_row(DOCS[0]), dk=none, dv=none),
    }[kind]
    widened = {"v": "o", "k": "dq", "q": "dk"}.get(kind)
    if widened and not exact:
        chunk_start = BAD // CHUNK * CHUNK
        spans[widened] = spans[widened] | _row((chunk_start, chunk_start + CHUNK))
    return spans


def inputs(rng):
    """Clean inputs: rows of the documents above, the last of random ones."""
    q, k, v, decay, kw = attention_inputs(rng, B, T, H, D, D, decay=[0.3], initial_state=True)
    documents = np.repeat(np.arange(len(DOCS)), [hi - lo for lo, hi in DOCS])
    segments = np.concatenate([np.tile(documents, (B - 1, 1)), random_segments(rng, 1, T)])
    return dict(q=q, k=k, v=v, initial_state=kw["initial_state"]), decay, jnp.asarray(segments)


def with_bad_values(arrays: dict) -> dict:
    """``arrays`` with one entry made non-finite per kind, each in its own row: at the
    bad token, or in the initial state."""
    bad = dict(arrays)
    for row, (kind, value) in enumerate(BAD_VALUES.items()):
        index = (row, 0, 2, 3) if kind == "initial_state" else (row, BAD, 0, 3)
        bad[kind] = bad[kind].at[index].set(value)
    return bad


def op_and_vjp(backend: str, decay, segment_ids):
    """``(q, k, v, s0, do) -> (o, final, dq, dk, dv)`` of the op on ``backend`` (jitted
    once: every kind of bad input runs the same program)."""
    if backend == "recurrent":
        run_ids = run_ids_from_segments(segment_ids)
        attend = lambda q, k, v, s0: reference.recurrent(q, k, v, decay, run_ids=run_ids,
                                                         initial_state=s0)
    else:
        kw = dict(chunk_size=CHUNK) if backend == "xla" else dict(kernel_config=(
            dataclasses.replace(tuning.kernel_config(D, D, CHUNK, itemsize=4, mosaic=False),
                                chunks_per_split=2)))  # 3 splits: the weighted sums
        attend = lambda q, k, v, s0: lightning_attention(
            q, k, v, decay, segment_ids=segment_ids, initial_state=s0,
            return_final_state=True, backend=backend, **kw)

    @jax.jit
    def run(q, k, v, s0, do):
        (o, final), vjp = jax.vjp(attend, q, k, v, s0)
        dq, dk, dv, _ = vjp((do, jnp.zeros_like(final)))
        return o, final, dq, dk, dv
    return run


@pytest.mark.parametrize("backend", ["recurrent", "xla", "interpret"])
def test_a_bad_token_reaches_only_what_depends_on_it(rng, backend):
    """A bad q, k, v (at token 18) or initial state, one per row: every output and
    gradient outside its reach equals the clean run's, bit for bit; what depends on it
    (its document from the token on) is non-finite, never hidden; the final states (of
    other documents) stay clean; the clean row stays clean."""
    arrays, decay, segment_ids = inputs(rng)
    do = jnp.asarray(rng.standard_normal((B, T, H, D)), jnp.float32)
    run = op_and_vjp(backend, decay, segment_ids)
    clean = dict(zip(("o", "final", "dq", "dk", "dv"),
                     (np.asarray(x) for x in run(*arrays.values(), do))))
    assert all(np.isfinite(x).all() for x in clean.values())
    bad = dict(zip(clean, (np.asarray(x) for x in run(*with_bad_values(arrays).values(), do))))
    np.testing.assert_array_equal(bad["final"], clean["final"])
    for row, kind in enumerate(BAD_VALUES):
        allowed = reach(kind, exact=backend == "recurrent")
        for name, mask in allowed.items():
            np.testing.assert_array_equal(bad[name][row, ~mask], clean[name][row, ~mask],
                                          err_msg=f"a bad {kind} reached {name}")
        depends = reach(kind, exact=True)["o"]
        assert not np.isfinite(bad["o"][row, depends]).all(axis=(-2, -1)).any(), kind
    for name in ("o", "dq", "dk", "dv"):
        np.testing.assert_array_equal(bad[name][-1], clean[name][-1])


def test_checked_path_names_the_bad_argument_under_jit(rng):
    """``checks=True`` under ``checkify`` (the op and the decode step in one program):
    clean inputs pass; a bad k, a NaN decay or a bad decode state is reported with its
    name and where (values tracing cannot see)."""
    arrays, decay, _ = inputs(rng)

    def prefill_and_step(q, k, v, decay, state):
        o = lightning_attention(q, k, v, decay, backend="xla", chunk_size=CHUNK, checks=True)
        return o, lightning_attention_step(q[:, -1], k[:, -1], v[:, -1], decay, state,
                                           checks=True)

    checked = jax.jit(checkify.checkify(prefill_and_step))
    clean = (arrays["q"], arrays["k"], arrays["v"], decay, arrays["initial_state"])
    err, (o, _) = checked(*clean)
    assert err.get() is None and np.isfinite(np.asarray(o)).all()
    bad = with_bad_values(arrays)
    messages = [checked(*args)[0].get() for args in (
        (clean[0], bad["k"], *clean[2:]),
        (*clean[:3], decay.at[0].set(jnp.nan), clean[4]),
        (*clean[:4], bad["initial_state"]))]
    assert ("lightning_attention: k must be finite, got 1 inf or NaN values, the first at "
            "k[1, 18, 0, 3]") in messages[0]
    assert "lightning_attention: decay must be >= 0 and not NaN" in messages[1]
    assert "got nan at head 0" in messages[1]
    assert "lightning_attention_step: state must be finite" in messages[2]
    assert "state[3, 0, 2, 3]" in messages[2]
