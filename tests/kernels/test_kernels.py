"""The Pallas kernels in interpret mode, Triton lowering (float32): sequence splits
(one, several, one per chunk), state-only passes in finer splits, padded head sizes,
feature blocks and chunks of a kernel config, long ragged rows with segments, and the
decay gradient where cancellation would show (γ = 0 over many chunks)."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import KernelConfig, Launch, lightning_attention
from pallas_kernels.lightning import tuning
from tests.kernels.attention_inputs import (
    assert_grads_close,
    attention_inputs,
    quadratic_reference,
)
from tests.tolerances import F32_TOL, rel_err



def table_config(dk: int, dv: int, **splits) -> KernelConfig:
    """The float32 Triton launches of the tables in chunks of 16, with split overrides."""
    config = tuning.kernel_config(tuning.padded_head_dim(dk), tuning.padded_head_dim(dv),
                                  chunk_size=16, itemsize=4, mosaic=False)
    return dataclasses.replace(config, **splits)


def kernels(q, k, v, decay, *, segment_ids=None, initial_state=None, kernel_config=None,
            **splits):
    """``(o, final_state)`` of the op's interpret backend with ``kernel_config`` (default:
    the tables' in chunks of 16, with ``splits`` overriding the split policies)."""
    config = kernel_config or table_config(q.shape[-1], v.shape[-1], **splits)
    return lightning_attention(q, k, v, decay, segment_ids=segment_ids,
                               initial_state=initial_state, return_final_state=True,
                               backend="interpret", kernel_config=config)


def output_and_final_loss(fn, *, do, segment_ids):
    """``(q, k, v, decay, s0) -> Σ o·do + Σ final_state`` of ``fn``, to differentiate."""
    def f(q, k, v, d, s0):
        o, final = fn(q, k, v, d, segment_ids=segment_ids, initial_state=s0)
        return jnp.sum(o * do.astype(q.dtype)) + jnp.sum(final)
    return f


def pallas_call_outputs(jaxpr) -> dict[str, list[int]]:
    """Per kernel name in ``jaxpr`` (nested jaxprs included), its numbers of outputs."""
    found: dict[str, list[int]] = {}

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "pallas_call":
                found.setdefault(str(eqn.params["name"]), []).append(
                    len(eqn.outvars))
            for param in eqn.params.values():
                for sub in param if isinstance(param, (list, tuple)) else [param]:
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        visit(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        visit(sub)

    visit(jaxpr.jaxpr)
    return found


@pytest.mark.parametrize("chunks_per_split,factor,learned_decay", [
    (1, None, True), (2, 2, True), (3, 3, False)])
def test_sequence_splits_give_the_same_answer(x64, rng, chunks_per_split, factor,
                                              learned_decay):
    """Output, final state and every gradient (cotangents on both outputs) with a split
    per chunk, and output splits of 2 and 3 chunks
    (uneven, the last padded) whose state-only passes run in splits of one chunk (the
    last all padding). A learned decay: the dS-only pass skips the first output split,
    the dK walk gives its dS; a fixed one: the pass walks it too, for the initial
    state's gradient."""
    q, k, v, decay, kw = attention_inputs(rng, 1, 100, 2, 16, 32, decay=[0.0, 0.4],
                                          segments=True, initial_state=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
    ds = jnp.asarray(rng.standard_normal(kw["initial_state"].shape), jnp.float32)
    seg, s0 = kw["segment_ids"], kw["initial_state"]
    primals = (q, k, v, decay, s0) if learned_decay else (q, k, v, s0)

    def run(fn, primals):
        def f(*primals):
            q, k, v, *rest = primals
            d, s0 = rest if learned_decay else (decay.astype(q.dtype), rest[0])
            return fn(q, k, v, d, segment_ids=seg, initial_state=s0)
        outs, vjp = jax.vjp(f, *primals)
        return outs, vjp((do.astype(outs[0].dtype), ds.astype(outs[1].dtype)))

    ours = functools.partial(kernels, chunks_per_split=chunks_per_split,
                             state_split_factor=factor)
    # Under jit: the interpreted kernels run compiled (3x faster than op by op).
    (o, s), grads = jax.jit(functools.partial(run, ours))(primals)
    (o_ref, s_ref), grads_ref = run(quadratic_reference,
                                    tuple(jnp.asarray(x, jnp.float64) for x in primals))
    assert rel_err(o, o_ref) < F32_TOL and rel_err(s, s_ref) < F32_TOL
    if learned_decay:
        assert_grads_close(grads, grads_ref, seq=q.shape[1], initial_state=s0, tol=F32_TOL)
    else:
        for g, g_ref in zip(grads, grads_ref):
            assert rel_err(g, g_ref) < F32_TOL


@pytest.mark.parametrize("dk,dv", [(8, 24), (40, 12)])
def test_head_sizes_padded_inside(x64, rng, dk, dv):
    q, k, v, decay, _ = attention_inputs(rng, 2, 33, 2, dk, dv, decay=[0.1, 2.0])
    o, s = jax.jit(kernels)(q, k, v, decay)
    o_ref, s_ref = quadratic_reference(q, k, v, decay)
    assert o.shape == v.shape and s.shape == (2, 2, dk, dv)
    assert rel_err(o, o_ref) < F32_TOL and rel_err(s, s_ref) < F32_TOL


def test_decay_gradient_without_decay_over_many_chunks(x64, rng):
    """γ = 0 over 24 chunks, no initial state (training): the plain 1e-4 bound."""
    q, k, v, decay, _ = attention_inputs(rng, 1, 384, 1, 16, 16, decay=[0.0])
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
    loss = lambda fn: lambda d: jnp.sum(fn(q, k, v, d)[0] * do)
    g = jax.jit(jax.grad(loss(kernels)))(decay)
    g_ref = jax.grad(loss(quadratic_reference))(jnp.asarray(decay, jnp.float64))
    assert rel_err(g, g_ref) < F32_TOL


@pytest.mark.parametrize("forward,dq,dk,dv,fused,chunks_per_split", [
    ((16, 16), (32, 32), (16, 32), (32, 16), False, None),
    ((32, 16), (16, 32), (32, 16), (16, 32), True, 2)])
def test_feature_blocks_and_chunks_of_a_kernel_config(x64, rng, forward, dq, dk, dv, fused,
                                                      chunks_per_split):
    """``(block, chunk)`` per walk: the state split across programs in dk and dv, and
    chunks of 16 and 32 rows in one op; dK and dV from one fused walk; one sequence
    split and several."""
    launch = lambda block_and_chunk: Launch(block_and_chunk[0], chunk=block_and_chunk[1])
    config = KernelConfig(forward=launch(forward), dq=launch(dq), dk=launch(dk), dv=launch(dv),
                          fused_dkdv=Launch(chunk=32) if fused else None,
                          chunks_per_split=chunks_per_split)
    q, k, v, decay, kw = attention_inputs(rng, 1, 50, 2, 32, 32, decay=[0.2, 3.0],
                                          segments=True, initial_state=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
    loss = functools.partial(output_and_final_loss, do=do, segment_ids=kw["segment_ids"])

    args = (q, k, v, decay, kw["initial_state"])
    grads = jax.jit(jax.grad(loss(functools.partial(kernels, kernel_config=config)),
                             argnums=range(5)))(*args)
    grads_ref = jax.grad(loss(quadratic_reference), argnums=range(5))(
        *(jnp.asarray(x, jnp.float64) for x in args))
    assert_grads_close(grads, grads_ref, seq=q.shape[1], initial_state=kw["initial_state"],
                       tol=F32_TOL)


def test_decay_gradient_with_an_initial_state_is_anchored_per_split(x64, rng):
    """An initial state and 16 splits of 64 rows: the boundary terms cancel against
    ``L·⟨S, dS⟩`` of each split, not ``T·⟨S_0, dS_0⟩`` (docs/DESIGN.md), so the decay
    gradient holds the plain bound (anchored at the row's end it was at 3.7e-4)."""
    q, k, v, decay, kw = attention_inputs(rng, 1, 1024, 2, 16, 16, decay=[1.0, 8.0],
                                          initial_state=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)

    def loss(fn):
        return lambda d, s0: jnp.sum(fn(q, k, v, d, initial_state=s0)[0] * do)

    g = jax.jit(jax.grad(loss(functools.partial(kernels, chunks_per_split=4))))(
        decay, kw["initial_state"])
    g_ref = jax.grad(loss(quadratic_reference))(*(jnp.asarray(x, jnp.float64)
                                                  for x in (decay, kw["initial_state"])))
    assert rel_err(g, g_ref) < F32_TOL


def test_decay_gradient_in_training_holds_the_plain_bound(x64, rng):
    """Packed documents, no initial state, ragged T in three splits (the policy's): every
    gradient within 1e-4, decay included."""
    q, k, v, decay, kw = attention_inputs(rng, 2, 200, 4, 16, 16, decay=[0.0, 0.05, 1.0, 8.0],
                                          segments=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
    seg = kw["segment_ids"]

    def loss(fn):
        return lambda q, k, v, d: jnp.sum(fn(q, k, v, d, segment_ids=seg)[0] * do.astype(q.dtype))

    grads = jax.jit(jax.grad(loss(kernels), argnums=range(4)))(q, k, v, decay)
    grads_ref = jax.grad(loss(quadratic_reference), argnums=range(4))(
        *(jnp.asarray(x, jnp.float64) for x in (q, k, v, decay)))
    for name, g, g_ref in zip(["q", "k", "v", "decay"], grads, grads_ref):
        assert rel_err(g, g_ref) < F32_TOL, name


@pytest.mark.parametrize("fused_dkdv", [True, False])
def test_fixed_decay_skips_the_decay_gradient(x64, rng, fused_dkdv):
    """The custom VJP sees which inputs are differentiated: with the decay fixed (TNL's)
    the dQ and dK walks compute no decay-gradient partials (one output fewer for dQ, two
    for dK, which then emits no dS either), and the other gradients are unchanged;
    differentiating the decay turns them on."""
    launch = Launch(chunk=16)
    config = KernelConfig(forward=launch, dq=launch, dk=launch, dv=launch,
                          fused_dkdv=launch if fused_dkdv else None, chunks_per_split=3)
    q, k, v, decay, kw = attention_inputs(rng, 1, 100, 2, 16, 16, decay=[0.0, 0.4],
                                          segments=True, initial_state=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)

    def loss(fn):
        return lambda q, k, v, d: jnp.sum(fn(q, k, v, d, segment_ids=kw["segment_ids"],
                                             initial_state=kw["initial_state"])[0] * do)

    ours = loss(functools.partial(kernels, kernel_config=config))
    args = (q, k, v, decay)
    key_walk = "lightning_bwd_dkdv" if fused_dkdv else "lightning_bwd_dk"
    outputs = {}
    for name, argnums in (("fixed", (0, 1, 2)), ("learned", (0, 1, 2, 3))):
        walks = pallas_call_outputs(jax.make_jaxpr(jax.grad(ours, argnums))(*args))
        outputs[name] = (walks["lightning_bwd_dq"], walks[key_walk])
    key_outputs = 2 if fused_dkdv else 1  # dk (and dv)
    assert outputs["fixed"] == ([1], [key_outputs])
    assert outputs["learned"] == ([2], [key_outputs + 2])
    # The gradients with the decay differentiated: test_feature_blocks_and_chunks_...
    fixed = jax.jit(jax.grad(ours, argnums=(0, 1, 2)))(*args)
    grads_ref = jax.grad(loss(quadratic_reference), argnums=(0, 1, 2))(
        *(jnp.asarray(x, jnp.float64) for x in args))
    for g, g_ref in zip(fixed, grads_ref):
        assert rel_err(g, g_ref) < F32_TOL
