"""The TNL modules and model against plain NumPy references; presets; config checks."""
import glob

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model_reference import reference_logits
from tnl_jax.config import ModelConfig, load_model_config
from tnl_jax.decay import alibi_slopes, layer_decays
from tnl_jax.lrpe import apply_lrpe, lrpe_theta_init
from tnl_jax.model import count_flops_per_token, count_params, create_model, positions_in_segments
from tnl_jax.norms import srms_norm
from attention_inputs import rel_err

SMALL = dict(vocab_size=97, decoder_embed_dim=32, decoder_layers=3, decoder_attention_heads=4,
             glu_dim=48, pad_token_id=0, attention_backend="xla", chunk_size=16)


def randomize(model, rng, scale=0.3):
    """Weights larger than the 0.02 init so that every path visibly matters."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    leaves = [jnp.asarray(rng.normal(0, scale, x.shape), x.dtype) for x in leaves]
    nnx.update(model, jax.tree.unflatten(treedef, leaves))
    return model


def test_srms_norm(rng):
    x = rng.normal(size=(3, 5, 16)) * 4
    want = x / np.sqrt(np.mean(x ** 2, -1, keepdims=True) + 1e-6)
    assert rel_err(srms_norm(jnp.asarray(x, jnp.float32)), want) < 1e-6
    assert srms_norm(jnp.asarray(x, jnp.bfloat16)).dtype == jnp.bfloat16


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


def test_positions_in_segments():
    seg = jnp.array([[1, 1, 1, 2, 2, 3], [0, 0, 5, 5, 5, 5]])
    np.testing.assert_array_equal(positions_in_segments(seg), [[0, 1, 2, 0, 1, 0], [0, 1, 0, 1, 2, 3]])


@pytest.mark.parametrize("changes", [
    {},
    {"no_scale_embedding": True, "tie_word_embeddings": False, "decoder_attention_heads": 2},
    {"use_decay": False, "linear_use_lrpe_list": [1, 0, 1]},
    {"architecture": "softmax"},
    {"architecture": "hybrid", "softmax_every": 2},
])
def test_tnl_logits_match_reference(rng, changes):
    cfg = ModelConfig(**{**SMALL, **changes})
    model = randomize(create_model(cfg, nnx.Rngs(0)), rng)
    ids = rng.integers(0, cfg.vocab_size, (2, 21))
    assert rel_err(model(jnp.asarray(ids)), reference_logits(model, ids)) < 1e-4


def test_packed_documents_stay_apart(rng):
    model = randomize(create_model(ModelConfig(**SMALL), nnx.Rngs(1)), rng)
    ids = rng.integers(0, 97, (1, 24))
    seg = np.array([[1] * 10 + [2] * 14])
    packed = model(jnp.asarray(ids), segment_ids=jnp.asarray(seg))
    assert rel_err(packed, reference_logits(model, ids, seg)) < 1e-4
    alone = model(jnp.asarray(ids[:, 10:]))
    assert rel_err(packed[:, 10:], alone) < 1e-5


def test_bf16_compute_close_to_float32(rng):
    cfg = ModelConfig(**SMALL)
    model = randomize(create_model(cfg, nnx.Rngs(0)), rng, scale=0.1)
    ids = jnp.asarray(rng.integers(0, 97, (2, 16)))
    full = model(ids)
    model_bf16 = nnx.merge(nnx.graphdef(create_model(cfg.replace(dtype="bfloat16"), nnx.Rngs(0))),
                           nnx.state(model))
    low = model_bf16(ids)
    assert low.dtype == jnp.float32
    assert rel_err(low, full) < 5e-2


def test_remat_and_learnable_decay_gradients(rng):
    cfg = ModelConfig(**{**SMALL, "decoder_layers": 2}, decay_learnable=True, remat="full")
    model = create_model(cfg, nnx.Rngs(0))
    # Learned decay starts at the fixed schedule (log space).
    stack = model.stacks[1].layers.token_mixer
    np.testing.assert_allclose(np.exp(stack.log_decay[...]), layer_decays(4, 2)[1:], rtol=1e-5)
    randomize(model, rng, scale=0.1)
    ids = jnp.asarray(rng.integers(0, 97, (1, 16)))

    def loss(m):
        return jnp.mean(jax.nn.logsumexp(m(ids), -1))

    grads = nnx.jit(nnx.grad(loss))(model)
    g = grads.stacks[1].layers.token_mixer.log_decay[...]
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
    plain = nnx.merge(nnx.graphdef(create_model(cfg.replace(remat="none"), nnx.Rngs(0))),
                      nnx.state(model))
    g_plain = nnx.jit(nnx.grad(loss))(plain).stacks[1].layers.token_mixer.log_decay[...]
    np.testing.assert_allclose(g, g_plain, rtol=1e-4, atol=1e-7)


def test_logical_axis_names():
    model = nnx.eval_shape(lambda: create_model(ModelConfig(**SMALL, tie_word_embeddings=False),
                                                nnx.Rngs(0)))
    specs = jax.tree.leaves(nnx.get_partition_spec(nnx.state(model, nnx.Param)),
                            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    names = {name for spec in specs for name in spec}
    assert names <= {"vocab", "embed", "heads", "mlp", "layers", None}
    assert {"vocab", "embed", "heads", "mlp", "layers"} <= names


@pytest.mark.parametrize("preset, expected, tolerance", [
    ("tnl-1b", 1.020e9, 1e-3), ("tnl-7b", 6.84e9, 1e-3), ("tnl-385m", 0.399e9, 1e-2),
    ("tnl-3b", 2.91e9, 1e-2), ("tnl-15b", 15.93e9, 1e-2), ("tnl-tiny", 3.57e6, 1e-2),
])
def test_preset_parameter_counts(preset, expected, tolerance):
    cfg = load_model_config(f"configs/{preset}.yaml")
    assert abs(count_params(cfg) / expected - 1) < tolerance


def test_every_preset_loads():
    assert len(glob.glob("configs/*.yaml")) >= 6
    for path in glob.glob("configs/*.yaml"):
        load_model_config(path)


def test_unknown_config_key_names_nearest():
    with pytest.raises(ValueError, match="decoder_layers"):
        ModelConfig.from_dict({"decoder_layer": 4})
    with pytest.raises(ValueError, match="norm_type"):
        ModelConfig(norm_type="layernorm")


def test_flops_per_token():
    cfg = load_model_config("configs/tnl-1b.yaml")
    flops = count_flops_per_token(cfg, 2048)
    six_n = 6 * count_params(cfg)  # the usual estimate, attention left out
    assert 1.0 < flops / six_n < 1.2
    assert count_flops_per_token(cfg.replace(architecture="softmax"), 8192) > \
        count_flops_per_token(cfg.replace(architecture="softmax"), 2048)
