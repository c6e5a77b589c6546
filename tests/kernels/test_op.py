"""The op, per backend, against the float64 quadratic reference: forward, final state,
segments, initial state, ragged lengths, dk != dv, bf16, gradients, jit/vmap, decode;
every decay from 0 to +inf (λ = 0: each token sees only itself); empty inputs."""
import functools

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import lightning_attention, lightning_attention_step
from tests.kernels.attention_inputs import (
    assert_grads_close,
    attention_inputs,
    quadratic_reference,
)
from tests.readme import run_python_blocks
from tests.tolerances import BF16_TOL, F32_TOL, rel_err

BACKENDS = ["xla", "interpret"]
DECAYS = [0.0, 0.05, 1.0, 8.0, float("inf")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seq,dk,dv,features", [(1, 16, 16, False), (37, 32, 16, True),
                                                (130, 16, 32, True)],
                         ids=["one-token", "ragged-segments+state", "dk<dv-segments+state"])
def test_forward_matches_reference(x64, rng, backend, seq, dk, dv, features):
    q, k, v, decay, kw = attention_inputs(rng, 2, seq, len(DECAYS), dk, dv, decay=DECAYS,
                                          segments=features, initial_state=features)
    o, final = jax.jit(functools.partial(lightning_attention, return_final_state=True,
                                         chunk_size=16, backend=backend))(q, k, v, decay, **kw)
    assert o.dtype == q.dtype and o.shape == v.shape
    assert final.dtype == jnp.float32 and final.shape == (2, len(DECAYS), dk, dv)
    o_ref, final_ref = quadratic_reference(q, k, v, decay, **kw)
    assert rel_err(o, o_ref) < F32_TOL
    assert rel_err(final, final_ref) < F32_TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16(x64, rng, backend):
    q, k, v, decay, kw = attention_inputs(rng, 1, 50, 2, 32, 32, decay=[0.02, 0.5],
                                          dtype=jnp.bfloat16, segments=True, initial_state=True)
    o, final = jax.jit(functools.partial(lightning_attention, return_final_state=True,
                                         chunk_size=16, backend=backend))(q, k, v, decay, **kw)
    assert o.dtype == jnp.bfloat16
    o_ref, final_ref = quadratic_reference(q, k, v, decay, **kw)
    assert rel_err(o, o_ref) < BF16_TOL
    assert rel_err(final, final_ref) < BF16_TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_match_reference_vjp(x64, rng, backend):
    """d(q, k, v, decay, initial_state) against jax.vjp of the quadratic reference: ragged
    T over 5 chunks, dk != dv, segments."""
    seq, dk, dv = 70, 32, 16
    q, k, v, decay, kw = attention_inputs(rng, 2, seq, len(DECAYS), dk, dv, decay=DECAYS,
                                          segments=True, initial_state=True)
    segment_ids, s0 = kw["segment_ids"], kw["initial_state"]
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
    ds = jnp.asarray(rng.standard_normal(s0.shape), jnp.float32)

    def op(q, k, v, decay, s0):
        return lightning_attention(q, k, v, decay, segment_ids=segment_ids, initial_state=s0,
                                   return_final_state=True, chunk_size=16, backend=backend)

    def ref(q, k, v, decay, s0):
        return quadratic_reference(q, k, v, decay, segment_ids=segment_ids, initial_state=s0)

    grads = jax.jit(lambda *primals: jax.vjp(op, *primals)[1]((do, ds)))(q, k, v, decay, s0)
    primals64 = [jnp.asarray(x, jnp.float64) for x in (q, k, v, decay, s0)]
    _, vjp_ref = jax.vjp(ref, *primals64)
    grads_ref = vjp_ref((do.astype(jnp.float64), ds.astype(jnp.float64)))
    assert [g.shape for g in grads] == [g.shape for g in grads_ref]
    # xla differentiates the chunked form itself: no anchored term, the plain bound holds.
    assert_grads_close(grads, grads_ref, seq=seq, initial_state=s0,
                       anchored_decay=backend != "xla", tol=F32_TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jit_and_vmap(rng, backend):
    q, k, v, decay, _ = attention_inputs(rng, 2, 40, 2, 16, 16, decay=[0.1, 1.0])
    op = functools.partial(lightning_attention, chunk_size=16, backend=backend)
    eager = op(q, k, v, decay)
    assert rel_err(jax.jit(op)(q, k, v, decay), eager) < 1e-6
    # vmap over a leading "model" axis, e.g. a stack of layers with their own decays.
    stacked = [jnp.stack([x, 2 * x]) for x in (q, k, v)]
    decays = jnp.stack([decay, decay + 0.5])
    out = jax.vmap(op)(*stacked, decays)
    assert rel_err(out[0], eager) < 1e-6
    assert rel_err(out[1], op(2 * q, 2 * k, 2 * v, decay + 0.5)) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_continues_prefill(rng, backend):
    """Prefill T0 tokens, then decode step by step: equals one call over all tokens."""
    q, k, v, decay, _ = attention_inputs(rng, 2, 45, 3, 32, 16, decay=[0.0, 0.3, 4.0])
    o_full, s_full = lightning_attention(q, k, v, decay, return_final_state=True,
                                         chunk_size=16, backend=backend)
    prefill = 29
    o_pre, state = lightning_attention(q[:, :prefill], k[:, :prefill], v[:, :prefill], decay,
                                       return_final_state=True, chunk_size=16, backend=backend)
    outs = [o_pre]
    for t in range(prefill, q.shape[1]):
        o_t, state = lightning_attention_step(q[:, t], k[:, t], v[:, t], decay, state,
                                              backend=backend)
        outs.append(o_t[:, None])
    assert rel_err(jnp.concatenate(outs, axis=1), o_full) < 1e-5
    assert rel_err(state, s_full) < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_passing_equals_one_call(rng, backend):
    """Two calls chained through the final state equal one call (chunked prefill)."""
    q, k, v, decay, kw = attention_inputs(rng, 1, 90, 2, 16, 16, decay=[0.05, 0.9],
                                          initial_state=True)
    s0 = kw["initial_state"]
    call = functools.partial(lightning_attention, return_final_state=True, chunk_size=16,
                             backend=backend)
    o_full, s_full = call(q, k, v, decay, initial_state=s0)
    o1, s1 = call(q[:, :33], k[:, :33], v[:, :33], decay, initial_state=s0)
    o2, s2 = call(q[:, 33:], k[:, 33:], v[:, 33:], decay, initial_state=s1)
    assert rel_err(jnp.concatenate([o1, o2], 1), o_full) < 1e-5
    assert rel_err(s2, s_full) < 1e-5


@pytest.mark.parametrize("backend", ["xla", "interpret", "pallas"])
@pytest.mark.parametrize("shape", [(2, 0, 3, 8, 4), (0, 5, 3, 8, 4), (2, 5, 3, 0, 4)],
                         ids=["no tokens", "no rows", "dk=0"])
def test_empty_inputs_give_empty_results(monkeypatch, rng, backend, shape):
    """No tokens: empty ``o`` and the initial state as the final state (its gradient the
    final state's cotangent); no rows: empty results; dk = 0: zeros. In every backend
    (the pallas path's wrapper is taken as on a GPU: it launches no kernel), with
    gradients of the inputs' shapes."""
    if backend == "pallas":
        monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    batch, seq, heads, dk, dv = shape
    q, k = (jnp.asarray(rng.standard_normal((batch, seq, heads, dk)), jnp.bfloat16)
            for _ in range(2))
    v = jnp.asarray(rng.standard_normal((batch, seq, heads, dv)), jnp.bfloat16)
    s0 = jnp.asarray(rng.standard_normal((batch, heads, dk, dv)), jnp.float32)
    decay = jnp.asarray(rng.uniform(0, 1, heads), jnp.float32)

    def op(q, k, v, decay, s0):
        return lightning_attention(q, k, v, decay, initial_state=s0, backend=backend,
                                   segment_ids=jnp.zeros((batch, seq), jnp.int32),
                                   return_final_state=True)

    (o, final), vjp = jax.vjp(op, q, k, v, decay, s0)
    assert o.shape == v.shape and o.dtype == jnp.bfloat16 and not o.any()
    assert final.shape == s0.shape and final.dtype == jnp.float32
    ds = jnp.asarray(rng.standard_normal(s0.shape), jnp.float32)
    grads = vjp((o, ds))
    assert [g.shape for g in grads] == [x.shape for x in (q, k, v, decay, s0)]
    assert not any(g.any() for g in grads[:4])
    if seq == 0:
        assert (final == s0).all() and (grads[4] == ds).all()


def test_readme_examples_run_and_an_explicit_kernel_config_gives_the_same_answer():
    """The README's "The op" section as written: the op on the default backend, the
    decode step, the op over a mesh, and the interpreted kernels with a launch
    configuration of one's own."""
    namespace = run_python_blocks("The op")
    o_default = namespace["lightning_attention"](
        *(namespace[name] for name in ("q", "k", "v", "decay")))
    assert namespace["o"].shape == (2, 300, 4, 64)
    assert namespace["o_next"].shape == (2, 4, 64)
    # Over a mesh (here of this process's one device), in three modes: the plain op.
    plain = namespace["lightning_attention"](
        *(namespace[name][:, :256] for name in ("q", "k", "v")), namespace["decay"])
    for name in ("o_jit", "o_axes", "o_own_map"):
        assert rel_err(namespace[name], plain) < F32_TOL, name
    assert rel_err(namespace["o"], o_default) < F32_TOL
