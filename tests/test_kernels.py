"""Kernel-specific coverage in interpret mode: sequence splits (one, several, one per
chunk), padded head sizes, long ragged rows with segments, and the decay gradient
where cancellation would show (γ = 0 over many chunks)."""
import functools

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels.lightning import kernel_vjp, reference, tuning
from attention_inputs import assert_grads_close, attention_inputs, rel_err

F32_TOL = 1e-4


def kernels(q, k, v, decay, *, segment_ids=None, initial_state=None, chunks_per_split=None,
            chunk_size=16, state_split_factor=None):
    run_ids = None if segment_ids is None else reference.run_ids_from_segments(segment_ids)
    return kernel_vjp.lightning_attention_kernels(
        q, k, v, decay, run_ids=run_ids, initial_state=initial_state, chunk_size=chunk_size,
        interpret=True, chunks_per_split=chunks_per_split,
        state_split_factor=state_split_factor)


def reference_f64(q, k, v, decay, *, segment_ids=None, initial_state=None):
    run_ids = None if segment_ids is None else reference.run_ids_from_segments(segment_ids)
    as64 = lambda x: None if x is None else jnp.asarray(x, jnp.float64)
    return reference.quadratic(as64(q), as64(k), as64(v), as64(decay), run_ids=run_ids,
                               initial_state=as64(initial_state))


def output_and_final_loss(fn, *, do, segment_ids):
    """``(q, k, v, decay, s0) -> Σ o·do + Σ final_state`` of ``fn``, to differentiate."""
    def f(q, k, v, d, s0):
        o, final = fn(q, k, v, d, segment_ids=segment_ids, initial_state=s0)
        return jnp.sum(o * do.astype(q.dtype)) + jnp.sum(final)
    return f


@pytest.mark.parametrize("chunks_per_split", [1, 3, None, 1000])
def test_sequence_splits_give_the_same_answer(x64, rng, chunks_per_split):
    """1: a split per chunk; 3: uneven last split (padded chunks); 1000: one split."""
    q, k, v, decay, kw = attention_inputs(rng, 1, 100, 2, 16, 32, decay=[0.0, 0.4],
                                          segments=True, initial_state=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
    ds = jnp.asarray(rng.standard_normal(kw["initial_state"].shape), jnp.float32)
    seg = kw["segment_ids"]

    def run(fn):
        def f(q, k, v, decay, s0):
            return fn(q, k, v, decay, segment_ids=seg, initial_state=s0)
        outs, vjp = jax.vjp(f, q, k, v, decay, kw["initial_state"])
        return outs, vjp((do.astype(outs[0].dtype), ds.astype(outs[1].dtype)))

    (o, s), grads = run(lambda *a, **k: kernels(*a, chunks_per_split=chunks_per_split, **k))
    (o_ref, s_ref), grads_ref = run(reference_f64)
    assert rel_err(o, o_ref) < F32_TOL and rel_err(s, s_ref) < F32_TOL
    assert_grads_close(grads, grads_ref, seq=q.shape[1], initial_state=kw["initial_state"],
                       tol=F32_TOL)


@pytest.mark.parametrize("chunks_per_split,factor,learned_decay", [(2, 2, True), (3, 3, False)])
def test_state_passes_in_finer_splits(x64, rng, chunks_per_split, factor, learned_decay):
    """The state-only passes in splits of one chunk under output splits of 2 and 3, the
    last state splits all padding: a learned decay (the dS-only pass skips the first output
    split, its dS comes from the dK walk) and a fixed one (the pass walks it too, for the
    initial state's gradient)."""
    q, k, v, decay, kw = attention_inputs(rng, 1, 100, 2, 16, 32, decay=[0.0, 0.4],
                                          segments=True, initial_state=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
    loss = functools.partial(output_and_final_loss, do=do, segment_ids=kw["segment_ids"])
    argnums = (0, 1, 2, 3, 4) if learned_decay else (0, 1, 2, 4)
    args = (q, k, v, decay, kw["initial_state"])
    ours = functools.partial(kernels, chunks_per_split=chunks_per_split,
                             state_split_factor=factor)
    grads = jax.grad(loss(ours), argnums)(*args)
    grads_ref = jax.grad(loss(reference_f64), argnums)(*(jnp.asarray(x, jnp.float64) for x in args))
    for g, g_ref in zip(grads, grads_ref):
        assert rel_err(g, g_ref) < F32_TOL


def test_state_passes_split_finer_to_fill_a_wave():
    """4 x 32K at d 128 (64 programs per split, 2 splits): the state-only passes cover one
    split, so they split it in two; 1 x 128K (16 programs, 8 splits): 112 programs, kept."""
    assert tuning.state_split_factor(256, 64, 2, "mosaic") == 2
    assert tuning.state_split_factor(256, 16, 8, "mosaic") == 1
    assert tuning.state_split_factor(8, 1, 2, "mosaic") == 2  # splits keep 4 chunks
    assert tuning.state_split_factor(512, 128, 1, "mosaic") == 1  # no state-only passes


@pytest.mark.parametrize("dk,dv", [(8, 8), (24, 12), (64, 32)])
def test_head_sizes_padded_inside(x64, rng, dk, dv):
    q, k, v, decay, _ = attention_inputs(rng, 2, 33, 2, dk, dv, decay=[0.1, 2.0])
    o, s = kernels(q, k, v, decay)
    o_ref, s_ref = reference_f64(q, k, v, decay)
    assert o.shape == v.shape and s.shape == (2, 2, dk, dv)
    assert rel_err(o, o_ref) < F32_TOL and rel_err(s, s_ref) < F32_TOL


def test_decay_gradient_without_decay_over_many_chunks(x64, rng):
    """γ = 0 over 24 chunks, no initial state (training): the plain 1e-4 bound."""
    q, k, v, decay, _ = attention_inputs(rng, 1, 384, 1, 16, 16, decay=[0.0])
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
    loss = lambda fn: lambda d: jnp.sum(fn(q, k, v, d)[0] * do)
    g = jax.grad(loss(kernels))(decay)
    g_ref = jax.grad(loss(reference_f64))(jnp.asarray(decay, jnp.float64))
    assert rel_err(g, g_ref) < F32_TOL


def test_split_policy_fills_the_gpu_only_when_needed():
    """Many rows: one split; one long row: splits, a power of two in number."""
    for lowering, target in tuning.TARGET_PROGRAMS.items():
        assert tuning.split_chunks(n_chunks=128, programs_per_split=512, lowering=lowering) == 128
        per_split = tuning.split_chunks(n_chunks=2048, programs_per_split=32, lowering=lowering)
        assert 2048 % per_split == 0 and target <= (2048 // per_split) * 32 < 2 * target
        assert tuning.split_chunks(n_chunks=5, programs_per_split=1, lowering=lowering) >= 1
    # Mosaic GPU programs fill an SM: one wave of them, as measured (tuning.py).
    assert tuning.split_chunks(n_chunks=512, programs_per_split=64, lowering="mosaic") == 256


@pytest.mark.parametrize("forward,dq,dk,dv,fused,chunks_per_split", [
    ((16, 16), (32, 32), (16, 32), (32, 16), False, None),
    ((32, 32), (16, 16), (32, 16), (16, 32), False, 2),
    ((16, 16), (16, 32), (16, 16), (16, 16), True, None),
    ((32, 16), (32, 32), (32, 16), (32, 16), True, 2)])
def test_feature_blocks_and_chunks_of_the_tuning_table(x64, rng, monkeypatch, forward, dq, dk,
                                                       dv, fused, chunks_per_split):
    """``(block, chunk)`` per kernel: the state split across programs in dk and dv, and
    chunks of 16 and 32 rows in one op; dK and dV from one fused walk; one sequence
    split and several."""
    launch = lambda block_and_chunk: tuning.Launch(block_and_chunk[0], chunk=block_and_chunk[1])
    monkeypatch.setitem(tuning._TABLE, (32, 32), tuning.KernelConfig(
        forward=launch(forward), dq=launch(dq), dk=launch(dk), dv=launch(dv),
        fused_dkdv=tuning.Launch(chunk=32) if fused else None))
    q, k, v, decay, kw = attention_inputs(rng, 1, 50, 2, 32, 32, decay=[0.2, 3.0],
                                          segments=True, initial_state=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
    loss = functools.partial(output_and_final_loss, do=do, segment_ids=kw["segment_ids"])

    args = (q, k, v, decay, kw["initial_state"])
    grads = jax.grad(loss(functools.partial(kernels, chunks_per_split=chunks_per_split,
                                             chunk_size=None)),
                     argnums=range(5))(*args)
    grads_ref = jax.grad(loss(reference_f64), argnums=range(5))(
        *(jnp.asarray(x, jnp.float64) for x in args))
    assert_grads_close(grads, grads_ref, seq=q.shape[1], initial_state=kw["initial_state"],
                       tol=F32_TOL)


def test_decay_gradient_with_an_initial_state_is_anchored_per_split(x64, rng):
    """An initial state and 16 splits of 64 rows: the boundary terms cancel against
    ``L·⟨S, dS⟩`` of each split, not ``T·⟨S_0, dS_0⟩`` (backward.py), so the decay
    gradient holds the plain bound (anchored at the row's end it was at 3.7e-4)."""
    q, k, v, decay, kw = attention_inputs(rng, 1, 1024, 2, 16, 16, decay=[1.0, 8.0],
                                          initial_state=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)

    def loss(fn):
        return lambda d, s0: jnp.sum(fn(q, k, v, d, initial_state=s0)[0] * do)

    g = jax.grad(loss(functools.partial(kernels, chunks_per_split=4)))(decay,
                                                                        kw["initial_state"])
    g_ref = jax.grad(loss(reference_f64))(*(jnp.asarray(x, jnp.float64)
                                            for x in (decay, kw["initial_state"])))
    assert rel_err(g, g_ref) < F32_TOL


@pytest.mark.parametrize("seq", [37, 200])
def test_decay_gradient_in_training_holds_the_plain_bound(x64, rng, seq):
    """Packed documents, no initial state: every gradient within 1e-4, decay included."""
    q, k, v, decay, kw = attention_inputs(rng, 2, seq, 4, 16, 16, decay=[0.0, 0.05, 1.0, 8.0],
                                          segments=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)
    seg = kw["segment_ids"]

    def loss(fn):
        return lambda q, k, v, d: jnp.sum(fn(q, k, v, d, segment_ids=seg)[0] * do.astype(q.dtype))

    grads = jax.grad(loss(kernels), argnums=range(4))(q, k, v, decay)
    grads_ref = jax.grad(loss(reference_f64), argnums=range(4))(
        *(jnp.asarray(x, jnp.float64) for x in (q, k, v, decay)))
    for name, g, g_ref in zip(["q", "k", "v", "decay"], grads, grads_ref):
        assert rel_err(g, g_ref) < F32_TOL, name


def test_tuning_rows_resolve_to_blocks_that_fit(monkeypatch):
    """Block 0 is the whole head; float32 tiles are capped (shared memory), and the fused
    dK/dV walk, which holds the whole state, is dropped when the head exceeds the cap."""
    monkeypatch.setitem(tuning._TABLE, (128, 128), tuning.KernelConfig(
        forward=tuning.Launch(0, 4, 3, 32), dq=tuning.Launch(64, chunk=128), dk=tuning.Launch(128),
        dv=tuning.Launch(0), fused_dkdv=tuning.Launch(0, 8, 1, 128)))
    bf16 = tuning.kernel_config(128, 128, chunk_size=None, itemsize=2, mosaic=False)
    assert (bf16.forward.block, bf16.dq.block, bf16.dk.block, bf16.dv.block) == (128, 64, 128, 128)
    assert bf16.fused_dkdv == tuning.Launch(128, 8, 1, 128) and bf16.chunk == 128
    assert bf16.forward.chunk == 32 and bf16.dv.chunk == 64
    f32 = tuning.kernel_config(128, 128, chunk_size=16, itemsize=4)
    assert {f32.forward.block, f32.dq.block, f32.dk.block, f32.dv.block} == {
        tuning.FLOAT32_MAX_BLOCK}
    assert f32.fused_dkdv is None and {x.chunk for x in f32.launches} == {16}
    assert max(x.num_stages for x in f32.launches) <= tuning.FLOAT32_MAX_STAGES
    with pytest.raises(ValueError, match="dQ and dK walks need one chunk length"):
        tuning.KernelConfig(forward=tuning.Launch(), dq=tuning.Launch(chunk=32),
                            dk=tuning.Launch(chunk=64), dv=tuning.Launch())
    generic = tuning.kernel_config(32, 16, chunk_size=None)
    assert (generic.forward.block, generic.dq.block) == (16, 32)


@pytest.mark.parametrize("fused_dkdv", [True, False])
def test_fixed_decay_skips_the_decay_gradient(x64, rng, monkeypatch, fused_dkdv):
    """The custom VJP sees which inputs are differentiated: with the decay fixed (TNL's)
    the dQ and dK walks compute no decay-gradient partials (nor read Q and K for them),
    and the other gradients are unchanged; differentiating the decay turns them on."""
    monkeypatch.setitem(tuning._HOPPER_TABLE, (16, 16), {})
    if not fused_dkdv:
        monkeypatch.setitem(tuning._TABLE, (16, 16), tuning.KernelConfig(
            forward=tuning.Launch(), dq=tuning.Launch(), dk=tuning.Launch(),
            dv=tuning.Launch()))
    asked = []
    for name in ("dq_or_dk_walk", "dkdv_walk"):
        walk = getattr(kernel_vjp, name)

        def recording(*args, walk=walk, **kwargs):
            asked.append(kwargs["decay_grad"])
            return walk(*args, **kwargs)
        monkeypatch.setattr(kernel_vjp, name, recording)
    q, k, v, decay, kw = attention_inputs(rng, 1, 100, 2, 16, 16, decay=[0.0, 0.4],
                                          segments=True, initial_state=True)
    do = jnp.asarray(rng.standard_normal(v.shape), jnp.float32)

    def loss(fn):
        return lambda q, k, v, d: jnp.sum(fn(q, k, v, d, segment_ids=kw["segment_ids"],
                                             initial_state=kw["initial_state"])[0] * do)

    fixed = jax.grad(loss(functools.partial(kernels, chunks_per_split=3)),
                     argnums=(0, 1, 2))(q, k, v, decay)
    assert asked == [False, False]
    learned = jax.grad(loss(functools.partial(kernels, chunks_per_split=3)),
                       argnums=(0, 1, 2, 3))(q, k, v, decay)
    assert asked[2:] == [True, True]
    grads_ref = jax.grad(loss(reference_f64), argnums=(0, 1, 2, 3))(
        *(jnp.asarray(x, jnp.float64) for x in (q, k, v, decay)))
    for grads in (fixed, learned):
        for g, g_ref in zip(grads, grads_ref):
            assert rel_err(g, g_ref) < F32_TOL
