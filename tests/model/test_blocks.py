"""The blocks alone: plain keyword constructors, no ModelConfig, each against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.tolerances import rel_err
from tests.model.reference import linear_mixer, softmax_mixer, srms
from tests.readme import run_python_blocks
from tnl_jax.model import (SGLU, DecoderLayer, FixedDecay, Lrpe, NormLinearAttention,
                           SoftmaxAttention, SRMSNorm, alibi_slopes, layer_decays)
from tnl_jax.model.lrpe import apply_lrpe, lrpe_theta_init
from tnl_jax.model.positions import positions_in_segments

HEADS, WIDTH = 4, 32


def randomize(module, rng, std=0.3):
    params = nnx.state(module, nnx.Param)
    nnx.update(module, jax.tree.map(lambda x: jnp.asarray(rng.normal(0, std, x.shape), x.dtype),
                                    params))
    return module


def weights(mixer) -> dict[str, np.ndarray]:
    get = lambda p: np.asarray(p[...], np.float64)
    if isinstance(mixer, SoftmaxAttention):
        return {"qkv": get(mixer.qkv_proj), "out": get(mixer.out_proj)}
    out = {"qkvu": get(mixer.qkvu_proj), "out": get(mixer.out_proj)}
    if mixer.lrpe is not None:
        out["theta"] = get(mixer.lrpe.theta)
    return out


def test_srms_norm(rng):
    x = rng.normal(size=(3, 5, 16)) * 4
    assert rel_err(SRMSNorm()(jnp.asarray(x, jnp.float32)), srms(x)) < 1e-6
    assert SRMSNorm()(jnp.asarray(x, jnp.bfloat16)).dtype == jnp.bfloat16


def test_alibi_slopes_and_layer_decays():
    np.testing.assert_allclose(alibi_slopes(8), 2.0 ** (-np.arange(1, 9)), rtol=1e-6)
    # 20 heads (TNL-3B): 16 slopes of 16, then slopes 0, 2, 4, 6 of 32.
    s20 = alibi_slopes(20)
    np.testing.assert_allclose(s20[:16], 2.0 ** (-0.5 * np.arange(1, 17)), rtol=1e-6)
    np.testing.assert_allclose(s20[16:], 2.0 ** (-0.25 * np.array([1, 3, 5, 7])), rtol=1e-6)
    d = layer_decays(4, 5)
    assert d.dtype == np.float32 and d.shape == (5, 4)
    np.testing.assert_allclose(d[:, 0], 2.0 ** -2 * (1 - np.arange(5) / 4 + 1e-5), rtol=1e-6)
    np.testing.assert_allclose(layer_decays(4, 1)[0], alibi_slopes(4))


def test_lrpe_is_relative(rng):
    theta = jnp.asarray(lrpe_theta_init(2, 8))
    np.testing.assert_allclose(theta[1, 0, 0], 10000 ** (-2 / 16 * 8), rtol=1e-6)
    q, k = (jnp.asarray(rng.normal(size=(1, 1, 2, 8)), jnp.float32) for _ in range(2))
    dot = lambda tq, tk: jnp.sum(apply_lrpe(q, theta, jnp.array([[tq]], jnp.float32)) *
                                 apply_lrpe(k, theta, jnp.array([[tk]], jnp.float32)), -1)
    np.testing.assert_allclose(dot(7.0, 3.0), dot(104.0, 100.0), rtol=1e-4)
    assert not np.allclose(dot(7.0, 3.0), dot(7.0, 5.0))
    assert Lrpe(2, 8, rngs=nnx.Rngs(0)).theta.shape == (2, 1, 8)


def test_positions_in_segments():
    seg = jnp.array([[1, 1, 1, 2, 2, 3], [0, 0, 5, 5, 5, 5]])
    np.testing.assert_array_equal(positions_in_segments(seg),
                                  [[0, 1, 2, 0, 1, 0], [0, 1, 0, 1, 2, 3]])


@pytest.mark.parametrize("use_lrpe, learn_decay", [(True, False), (False, True)])
def test_norm_linear_attention_matches_reference(rng, use_lrpe, learn_decay):
    decay = alibi_slopes(HEADS)
    mixer = NormLinearAttention(num_heads=HEADS, in_features=WIDTH, use_lrpe=use_lrpe,
                                decay=decay, learn_decay=learn_decay, backend="xla",
                                chunk_size=16, rngs=nnx.Rngs(0))
    if not learn_decay:  # The learned rates are randomized below; keep them near 1.
        randomize(mixer, rng)
    x = rng.normal(size=(2, 37, WIDTH))
    seg = np.array([[1] * 20 + [2] * 17, [1] * 37])
    pos = np.asarray(positions_in_segments(jnp.asarray(seg)), np.float64)
    want = linear_mixer(srms(x), weights(mixer), np.asarray(mixer.decay_rates(), np.float64),
                        seg, pos, HEADS)
    got = mixer(jnp.asarray(srms(x), jnp.float32), jnp.asarray(seg))  # positions: default
    assert rel_err(got, want) < 1e-4


def test_softmax_attention_matches_reference(rng):
    mixer = randomize(SoftmaxAttention(HEADS, WIDTH, rngs=nnx.Rngs(0)), rng)
    x = rng.normal(size=(2, 13, WIDTH))
    seg, pos = np.zeros((2, 13), int), np.broadcast_to(np.arange(13.0), (2, 13))
    want = softmax_mixer(x, weights(mixer), seg, pos, HEADS)
    assert rel_err(mixer(jnp.asarray(x, jnp.float32)), want) < 1e-4


def test_softmax_attention_without_rope_reads_no_positions(rng):
    """``rope_theta=None`` (NoPE): the reference without rotation, whatever the
    positions; with RoPE the same positions change the output."""
    nope = randomize(SoftmaxAttention(HEADS, WIDTH, rope_theta=None, rngs=nnx.Rngs(0)), rng)
    x = rng.normal(size=(2, 13, WIDTH))
    seg, pos = np.zeros((2, 13), int), np.broadcast_to(np.arange(13.0), (2, 13))
    want = softmax_mixer(x, weights(nope), seg, pos, HEADS, rope_theta=None)
    shuffled = jnp.asarray(rng.permutation(13)[None].repeat(2, 0))
    for positions in (None, shuffled):
        assert rel_err(nope(jnp.asarray(x, jnp.float32), positions=positions), want) < 1e-4
    roped = SoftmaxAttention(HEADS, WIDTH, rngs=nnx.Rngs(0))
    nnx.update(roped, nnx.state(nope, nnx.Param))
    assert rel_err(roped(jnp.asarray(x, jnp.float32), positions=shuffled), want) > 1e-2


def test_logn_queries_sharpen_only_past_the_training_rows(rng):
    """``logn_length=L``: the reference with queries scaled by log(p + 1) / log(L) past
    position L - 1 (ragged segments restart the positions); within L the plain layer."""
    logn = randomize(SoftmaxAttention(HEADS, WIDTH, logn_length=8, rngs=nnx.Rngs(0)), rng)
    x = rng.normal(size=(2, 29, WIDTH))
    seg = np.array([[1] * 20 + [2] * 9, [1] * 29])
    pos = np.asarray(positions_in_segments(jnp.asarray(seg)), np.float64)
    want = softmax_mixer(x, weights(logn), seg, pos, HEADS, logn_length=8)
    got = logn(jnp.asarray(x, jnp.float32), jnp.asarray(seg))
    assert rel_err(got, want) < 1e-4
    plain = SoftmaxAttention(HEADS, WIDTH, rngs=nnx.Rngs(0))
    nnx.update(plain, nnx.state(logn, nnx.Param))
    unscaled = plain(jnp.asarray(x, jnp.float32), jnp.asarray(seg))
    assert rel_err(unscaled[:, :8], got[:, :8]) < 1e-6
    assert rel_err(unscaled[1, 8:], got[1, 8:]) > 1e-3


@pytest.mark.parametrize("length", [1, 2.5, True, "2048"])
def test_logn_length_must_be_an_integer_of_at_least_two(length):
    with pytest.raises(ValueError, match=f"logn_length={length!r}: expected an integer >= 2"):
        SoftmaxAttention(HEADS, WIDTH, logn_length=length, rngs=nnx.Rngs(0))


def test_sglu_and_keyword_dtypes(rng):
    mlp = randomize(SGLU(WIDTH, 48, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)), rng)
    assert mlp.l1.shape == (WIDTH, 48) and mlp.l1[...].dtype == jnp.float32
    x = rng.normal(size=(3, WIDTH))
    w = [np.asarray(p[...], np.float64) for p in (mlp.l1, mlp.l2, mlp.l3)]
    want = ((x @ w[0]) * (x @ w[1])) @ w[2]
    got = mlp(jnp.asarray(x, jnp.float32))
    assert got.dtype == jnp.bfloat16 and rel_err(got, want) < 2e-2


def test_segment_ids_and_positions_are_optional(rng):
    layer = randomize(DecoderLayer(HEADS, WIDTH, 48, use_lrpe=True, decay=alibi_slopes(HEADS),
                                   backend="xla", rngs=nnx.Rngs(1)), rng, std=0.1)
    x = jnp.asarray(rng.normal(size=(2, 11, WIDTH)), jnp.float32)
    explicit = layer(x, jnp.ones((2, 11), jnp.int32), jnp.broadcast_to(jnp.arange(11), (2, 11)))
    np.testing.assert_allclose(layer(x), explicit, rtol=1e-5, atol=1e-5)


def test_the_layer_owns_its_decay():
    fixed = NormLinearAttention(HEADS, WIDTH, decay=alibi_slopes(HEADS), rngs=nnx.Rngs(0))
    assert isinstance(fixed.fixed_decay, FixedDecay) and fixed.log_decay is None
    assert "fixed_decay" not in nnx.to_pure_dict(nnx.state(fixed, nnx.Param))
    np.testing.assert_array_equal(fixed.decay_rates(), alibi_slopes(HEADS))
    learned = NormLinearAttention(HEADS, WIDTH, decay=alibi_slopes(HEADS), learn_decay=True,
                                  rngs=nnx.Rngs(0))
    assert isinstance(learned.log_decay, nnx.Param) and learned.fixed_decay is None
    np.testing.assert_allclose(learned.decay_rates(), alibi_slopes(HEADS), rtol=1e-6)
    none = NormLinearAttention(HEADS, WIDTH, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(none.decay_rates(), np.zeros(HEADS))


@pytest.mark.parametrize("make, message", [
    (lambda: NormLinearAttention(HEADS, WIDTH, learn_decay=True, rngs=nnx.Rngs(0)),
     "learn_decay=True needs decay="),
    (lambda: NormLinearAttention(HEADS, WIDTH, decay=np.ones(3), rngs=nnx.Rngs(0)),
     r"decay has shape \(3,\), expected \(4,\)"),
    (lambda: NormLinearAttention(3, WIDTH, rngs=nnx.Rngs(0)), "in_features=32 .* num_heads=3"),
    (lambda: DecoderLayer(HEADS, WIDTH, 48, attention="softmax", decay=np.ones(4),
                          rngs=nnx.Rngs(0)), "softmax' takes no"),
    (lambda: DecoderLayer(HEADS, WIDTH, 48, attention="mamba", rngs=nnx.Rngs(0)),
     "attention='mamba'"),
])
def test_bad_arguments_name_themselves(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_readme_example_builds_a_model_from_the_blocks():
    namespace = run_python_blocks("Your own model from the blocks")
    logits, model = namespace["logits"], namespace["model"]
    assert logits.shape == (2, 32, 256) and np.all(np.isfinite(logits))
    decays = [layer.token_mixer.decay_rates() for layer in model.layers]
    assert not np.allclose(decays[0], decays[1])  # Each layer holds its own rates.
