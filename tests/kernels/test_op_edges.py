"""The op at the edges of its numerics: float16 scores and states beyond float16's range
(both kernel lowerings, interpreted, against the ``xla`` backend), float64 inputs, a
traced negative decay, a chunk longer than the sequence, and forward-mode autodiff."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import lightning_attention, lightning_attention_step
from tests.kernels.attention_inputs import attention_inputs, quadratic_reference
from tests.tolerances import BF16_TOL, F32_TOL, rel_err

FLOAT16_MAX = float(jnp.finfo(jnp.float16).max)
# The kernels interpreted everywhere, and compiled where there is a GPU.
KERNEL_BACKENDS = ["interpret"] + (["pallas"] if jax.default_backend() == "gpu" else [])


def overflowing_float16(rng, seq: int, dk: int):
    """Row 0: scores ``q·k`` about ``100² · dk`` (beyond float16), ``v`` about 0.01; row 1:
    states ``Σ k vᵀ`` beyond float16 (``k, v`` about 300), small ``q``. The outputs
    stay within float16's range."""
    def rows(scale, dim, noise=0.1):
        return scale * (1 + noise * rng.standard_normal((seq, 1, dim)))

    q = np.stack([rows(100, dk), rows(1e-3, dk)])
    k = np.stack([rows(100, dk), rows(300, dk)])
    v = np.stack([1e-2 * rng.standard_normal((seq, 1, dk)), rows(300, dk)])
    q, k, v = (jnp.asarray(x, jnp.float16) for x in (q, k, v))
    decay = jnp.asarray(rng.uniform(0.1, 0.5, 1), jnp.float32)
    scores = jnp.einsum("bthd,bshd->bhts", q[:1].astype(jnp.float32), k[:1].astype(jnp.float32))
    assert float(jnp.abs(scores).max()) > FLOAT16_MAX
    assert float(jnp.abs(k[1, :2, 0, :, None] * v[1, :2, 0, None, :]).sum(0).max()) > FLOAT16_MAX
    return q, k, v, decay


def _outputs(backend, q, k, v, decay, **kw):
    return jax.jit(functools.partial(lightning_attention, backend=backend, **kw))(q, k, v, decay)


@pytest.mark.parametrize("dk,seq,kw,grads", [(8, 40, dict(chunk_size=16), True),
                                             (64, 80, {}, False)],
                         ids=["triton", "mosaic"])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_float16_beyond_its_range_matches_xla(rng, backend, dk, seq, kw, grads):
    """Scores and states beyond 65504 stay float32 in the kernels (row-scaled score
    tiles, column-scaled states): the output matches the ``xla`` backend's float32
    computation to float16's precision. dk 8 runs the Triton walks, 64 Mosaic GPU's
    (on a Hopper GPU, or interpreted)."""
    q, k, v, decay = overflowing_float16(rng, seq, dk)
    o_xla = _outputs("xla", q, k, v, decay)
    o = _outputs(backend, q, k, v, decay, **kw)
    assert o.dtype == jnp.float16 and bool(jnp.isfinite(o).all())
    assert bool(jnp.isfinite(o_xla).all())
    assert rel_err(o, o_xla) < BF16_TOL
    if not grads:
        return
    do = jnp.asarray(1e-2 * rng.standard_normal(v.shape), jnp.float16)

    @functools.partial(jax.jit, static_argnames="backend")
    def vjp(backend):
        _, pull = jax.vjp(lambda *x: lightning_attention(*x, decay, backend=backend, **kw),
                          q, k, v)
        return pull(do)

    for got, want in zip(vjp(backend), vjp("xla")):
        assert bool(jnp.isfinite(want).all())
        assert bool(jnp.isfinite(got).all()) and rel_err(got, want) < BF16_TOL


def test_float64_on_xla_is_float64_and_the_kernels_float32(x64, rng):
    """As the docstring says: ``xla`` computes float64 inputs in float64 (error at
    float64's rounding), the kernels in float32 (``o`` float64, the state float32)."""
    q, k, v, decay, kw = attention_inputs(rng, 1, 20, 2, 8, 8, decay=[0.1, 1.0],
                                          dtype=jnp.float64, initial_state=True)
    o_ref, final_ref = quadratic_reference(q, k, v, decay, **kw)
    o, final = _outputs("xla", q, k, v, decay, return_final_state=True, chunk_size=16, **kw)
    assert o.dtype == final.dtype == jnp.float64
    assert rel_err(o, o_ref) < 1e-12 and rel_err(final, final_ref) < 1e-12
    o, final = _outputs("interpret", q, k, v, decay, return_final_state=True, chunk_size=16,
                        **kw)
    assert o.dtype == jnp.float64 and final.dtype == jnp.float32
    assert 1e-12 < rel_err(o, o_ref) < F32_TOL


@pytest.mark.parametrize("backend", ["xla", "interpret"])
def test_traced_negative_decay_is_taken_as_zero(rng, backend):
    """Under ``jax.jit`` a negative decay cannot be seen: it is taken as 0 (λ = 1), so
    the output is finite and equals the op's with that decay at 0; the decode step
    likewise. Eagerly it is an error (tests/bad_inputs/op_cases.py)."""
    q, k, v, _, _ = attention_inputs(rng, 1, 24, 3, 8, 8, decay=[0.0, 0.1, 0.1])
    negative = jnp.asarray([-0.5, 0.1, 0.3], jnp.float32)
    clamped = jnp.asarray([0.0, 0.1, 0.3], jnp.float32)
    o = _outputs(backend, q, k, v, negative, chunk_size=16)
    assert bool(jnp.isfinite(o).all())
    assert rel_err(o, _outputs("xla", q, k, v, clamped, chunk_size=16)) < F32_TOL
    state = jnp.asarray(rng.standard_normal((1, 3, 8, 8)), jnp.float32)
    step = jax.jit(functools.partial(lightning_attention_step, backend=backend))
    o_step, new = step(q[:, 0], k[:, 0], v[:, 0], negative, state)
    want_o, want = step(q[:, 0], k[:, 0], v[:, 0], clamped, state)
    assert rel_err(o_step, want_o) < F32_TOL and rel_err(new, want) < F32_TOL


def test_xla_chunk_longer_than_the_sequence_is_cut_to_it(rng):
    """``chunk_size=16384`` for 10 tokens: no array of the program holds a 16384-row
    chunk (it would be 3 GiB of scores), and the result is the one of chunk 16."""
    q, k, v, decay, _ = attention_inputs(rng, 2, 10, 2, 8, 8, decay=[0.1, 0.7])
    attend = functools.partial(lightning_attention, backend="xla", chunk_size=16384)
    program = jax.jit(attend).lower(q, k, v, decay).as_text()
    assert "16384" not in program and "x10x" in program
    o_ref, _ = quadratic_reference(q, k, v, decay, dtype=jnp.float32)
    assert rel_err(attend(q, k, v, decay), o_ref) < F32_TOL


def test_forward_mode_and_hessian_on_xla_match_the_reference(x64, rng):
    """``jax.jvp`` and ``jax.hessian`` through the ``xla`` backend (in the decay and in
    q) equal those of the quadratic reference; the kernels refuse them by name
    (tests/bad_inputs/op_cases.py)."""
    q, k, v, decay, _ = attention_inputs(rng, 1, 6, 2, 2, 2, decay=[0.2, 0.9],
                                         dtype=jnp.float64)
    decay = decay.astype(jnp.float64)

    def loss(attend, q, decay):
        return jnp.sum(jnp.sin(attend(q, k, v, decay)))

    xla = functools.partial(lightning_attention, backend="xla", chunk_size=16)
    ref = lambda *x: quadratic_reference(*x)[0]  # noqa: E731
    tangents = (jnp.asarray(rng.standard_normal(q.shape)),
                jnp.asarray(rng.standard_normal(decay.shape)))
    @functools.partial(jax.jit, static_argnums=0)
    def derivatives(attend, q, decay):
        jvp = jax.jvp(functools.partial(loss, attend), (q, decay), tangents)
        return jvp, jax.hessian(lambda d: loss(attend, q, d))(decay)

    for got, want in zip(jax.tree.leaves(derivatives(xla, q, decay)),
                         jax.tree.leaves(derivatives(ref, q, decay))):
        assert rel_err(got, want) < 1e-10
