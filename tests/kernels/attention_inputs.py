"""Random inputs for the attention tests (never zeros), the relative-error measure, and
the quadratic reference on segment ids (``rel_err``: tests/tolerances.py)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.lightning import reference
from pallas_kernels.lightning.runs import run_ids_from_segments
from tests.tolerances import F32_TOL, rel_err


@functools.partial(jax.jit, static_argnames="dtype")
def quadratic_reference(q, k, v, decay, *, segment_ids=None, initial_state=None,
                        dtype=jnp.float64):
    """The quadratic oracle in ``dtype`` (float64 needs the x64 fixture), compiled once
    per shape (op by op, its many small ops would each compile)."""
    run_ids = None if segment_ids is None else run_ids_from_segments(segment_ids)
    cast = lambda x: None if x is None else jnp.asarray(x, dtype)
    return reference.quadratic(cast(q), cast(k), cast(v), cast(decay), run_ids=run_ids,
                               initial_state=cast(initial_state))


def random_segments(rng, batch: int, seq: int, max_runs: int = 4) -> np.ndarray:
    """Contiguous runs of random lengths, labelled by arbitrary (repeating) ints."""
    seg = np.zeros((batch, seq), np.int32)
    for b in range(batch):
        n_cuts = min(max_runs - 1, seq - 1)
        cuts = np.sort(rng.choice(np.arange(1, seq), size=n_cuts, replace=False)) if n_cuts else (
            np.zeros(0, np.int64))
        labels = rng.integers(0, 3, size=len(cuts) + 1)
        labels[1:] += labels[:-1] + 1  # neighbours differ, ids may repeat elsewhere
        seg[b] = np.repeat(labels, np.diff(np.concatenate([[0], cuts, [seq]])))
    return seg


def attention_inputs(rng, batch, seq, heads, dk, dv, *, decay, dtype=jnp.float32,
                     segments=False, initial_state=False):
    """q, k, v scaled so outputs stay O(1); decay as given (per head)."""
    scale = 1.0 / np.sqrt(dk)
    q = rng.standard_normal((batch, seq, heads, dk)) * scale
    k = rng.standard_normal((batch, seq, heads, dk)) * scale
    v = rng.standard_normal((batch, seq, heads, dv))
    kwargs = {}
    if segments:
        kwargs["segment_ids"] = jnp.asarray(random_segments(rng, batch, seq))
    if initial_state:
        kwargs["initial_state"] = jnp.asarray(
            rng.standard_normal((batch, heads, dk, dv)), jnp.float32)
    decay = jnp.broadcast_to(jnp.asarray(decay, jnp.float32), (heads,))
    return (*(jnp.asarray(x, dtype) for x in (q, k, v)), decay, kwargs)


def assert_grads_close(grads, grads_ref, *, seq: int, initial_state=None,
                       anchored_decay: bool = True, tol: float = F32_TOL) -> None:
    """Gradients of (q, k, v, decay, initial_state) within ``tol`` relative error.

    The kernels' decay gradient anchors positions at the end of each sequence split, so
    with an initial state it sums ``L·⟨S, dS⟩`` per split and position-weighted terms that
    cancel it: its float32 error is relative to that as well as to the result
    (docs/DESIGN.md, "The decay gradient"). For one split (``L = T``) that is
    ``T·|⟨S_0, dS_0⟩|``, the extra scale allowed here.
    """
    names = ["q", "k", "v", "decay", "initial_state"]
    for name, g, g_ref in zip(names, grads, grads_ref):
        if name == "decay" and initial_state is not None and anchored_decay:
            anchored = seq * np.abs(np.einsum("bhkv,bhkv->h", np.asarray(initial_state, np.float64),
                                              np.asarray(grads_ref[4], np.float64)))
            scale = np.linalg.norm(np.asarray(g_ref, np.float64)) + np.linalg.norm(anchored)
            error = np.linalg.norm(np.asarray(g, np.float64) - np.asarray(g_ref, np.float64))
            assert error <= tol * scale, (name, error, scale)
        else:
            assert rel_err(g, g_ref) < tol, name
