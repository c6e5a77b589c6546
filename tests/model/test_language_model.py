"""The language model against a plain NumPy reference; presets; config checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.tolerances import rel_err
from tests.model.reference import reference_logits
from tnl_jax import presets
from tnl_jax.model import ModelConfig, count_flops_per_token, count_params, create_model
from tnl_jax.model import layer_decays, load_model_config


@pytest.mark.parametrize("changes", [
    {},
    {"no_scale_embedding": True, "tie_word_embeddings": False, "decoder_attention_heads": 2},
    {"use_decay": False, "linear_use_lrpe_list": [1, 0, 1]},
    {"architecture": "softmax"},
    {"architecture": "hybrid", "softmax_every": 2},
    {"architecture": "hybrid", "softmax_every": 2, "softmax_offset": 0},
    {"architecture": "hybrid", "softmax_every": 2, "softmax_rope": False},
    {"architecture": "hybrid", "softmax_every": 2, "softmax_rope": False,
     "softmax_logn_length": 4},
    {"architecture": "llama"},
])
def test_logits_match_reference(small_model, rng, changes):
    model = small_model(int(rng.integers(1000)), **changes)
    ids = rng.integers(0, model.cfg.vocab_size, (2, 21))
    assert rel_err(model(jnp.asarray(ids)), reference_logits(model, ids)) < 1e-4


def test_packed_documents_stay_apart(small_model, rng):
    model = small_model(1)
    ids = rng.integers(0, model.cfg.vocab_size, (1, 24))
    seg = np.array([[1] * 10 + [2] * 14])
    packed = model(jnp.asarray(ids), segment_ids=jnp.asarray(seg))
    assert rel_err(packed, reference_logits(model, ids, seg)) < 1e-4
    alone = model(jnp.asarray(ids[:, 10:]))
    assert rel_err(packed[:, 10:], alone) < 1e-5


def test_bf16_compute_close_to_float32(small_model, rng):
    model = small_model(0, std=0.1)
    ids = jnp.asarray(rng.integers(0, model.cfg.vocab_size, (2, 16)))
    low_cfg = model.cfg.replace(dtype="bfloat16")
    model_bf16 = nnx.merge(nnx.graphdef(create_model(low_cfg, nnx.Rngs(0))), nnx.state(model))
    low = model_bf16(ids)
    assert low.dtype == jnp.float32
    assert rel_err(low, model(ids)) < 5e-2


def test_each_layer_owns_its_fixed_decay(small_model):
    model = small_model(0)
    _, rest = nnx.split(model, nnx.Param, ...)[1:]
    owned = np.concatenate([stack.layers.token_mixer.fixed_decay[...] for stack in model.stacks])
    np.testing.assert_array_equal(owned, layer_decays(4, 3))  # Differs layer to layer.
    assert len(jax.tree.leaves(rest)) == len(model.stacks)  # The decays: state, not Params.


def test_remat_and_learnable_decay_gradients(small_model, rng):
    model = small_model(0, std=0.1, decoder_layers=2, decay_learnable=True, remat="full")
    stack = model.stacks[1].layers.token_mixer
    assert stack.fixed_decay is None
    # Learned decay starts at the fixed schedule (log space; the random weights spare it).
    fresh = create_model(model.cfg, nnx.Rngs(0)).stacks[1].layers.token_mixer
    np.testing.assert_allclose(np.exp(fresh.log_decay[...]), layer_decays(4, 2)[1:], rtol=1e-5)
    ids = jnp.asarray(rng.integers(0, model.cfg.vocab_size, (1, 16)))

    def loss(m):
        return jnp.mean(jax.nn.logsumexp(m(ids), -1))

    grads = nnx.jit(nnx.grad(loss))(model)
    g = grads.stacks[1].layers.token_mixer.log_decay[...]
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
    plain = nnx.merge(nnx.graphdef(create_model(model.cfg.replace(remat="none"), nnx.Rngs(0))),
                      nnx.state(model))
    g_plain = nnx.jit(nnx.grad(loss))(plain).stacks[1].layers.token_mixer.log_decay[...]
    np.testing.assert_allclose(g, g_plain, rtol=1e-4, atol=1e-7)


def test_logical_axis_names(small_model):
    cfg = ModelConfig(**{**small_model().cfg.to_dict(), "tie_word_embeddings": False})
    model = nnx.eval_shape(lambda: create_model(cfg, nnx.Rngs(0)))
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
    cfg = load_model_config(preset)
    assert abs(count_params(cfg) / expected - 1) < tolerance


def test_every_preset_loads_by_name_and_path():
    assert len(presets.names()) >= 6
    for name in presets.names():
        assert load_model_config(name) == load_model_config(presets.directory() / f"{name}.yaml")
    with pytest.raises(FileNotFoundError, match="tnl-1b"):
        load_model_config("tnl-2b")


def test_flops_per_token():
    cfg = load_model_config("tnl-1b")
    flops = count_flops_per_token(cfg, 2048)
    six_n = 6 * count_params(cfg)  # the usual estimate, attention left out
    assert 1.0 < flops / six_n < 1.2
    assert count_flops_per_token(cfg.replace(architecture="softmax"), 8192) > \
        count_flops_per_token(cfg.replace(architecture="softmax"), 2048)


@pytest.mark.parametrize("every,offset,kinds", [
    (2, -1, ["lrpe", "softmax", "linear", "softmax"]),
    (2, 0, ["softmax", "linear", "softmax", "linear"]),
    (4, 1, ["lrpe", "softmax", "linear", "linear"]),
])
def test_hybrid_softmax_offset_places_the_softmax_layers(every, offset, kinds):
    cfg = ModelConfig(decoder_layers=4, architecture="hybrid", softmax_every=every,
                      softmax_offset=offset)
    assert cfg.layer_kinds() == kinds


@pytest.mark.parametrize("architecture,setting,normed", [
    ("hybrid", None, False), ("hybrid", True, True), ("softmax", True, True),
    ("llama", None, True), ("llama", False, False)])
def test_softmax_qk_norm_gives_the_softmax_layers_query_and_key_gains(architecture, setting,
                                                                      normed):
    """``softmax_qk_norm``: QK normalisation in the softmax layers of any architecture
    (null: the LLaMA-style baseline's alone); the rest of the backbone is unchanged."""
    cfg = ModelConfig(decoder_layers=2, architecture=architecture, softmax_every=2,
                      softmax_qk_norm=setting)
    assert cfg.qk_norm is normed
    model = create_model(cfg, nnx.Rngs(0))
    mixer = model.stacks[-1].layers.token_mixer
    assert (mixer.q_norm is not None) is normed and (mixer.k_norm is not None) is normed
    extra = count_params(cfg) - count_params(cfg.replace(softmax_qk_norm=not normed))
    softmax_layers = cfg.layer_kinds().count("softmax")
    assert extra == (1 if normed else -1) * 2 * cfg.head_dim * softmax_layers
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, cfg.vocab_size)
    logits = model(tokens)
    assert logits.shape == (2, 16, cfg.vocab_size) and bool(jnp.isfinite(logits).all())


def test_llama_baseline_has_gains_swiglu_and_qk_norm_in_every_layer():
    cfg = ModelConfig(decoder_layers=2, architecture="llama")
    assert cfg.layer_kinds() == ["softmax", "softmax"] and cfg.llama_style
    model = nnx.eval_shape(lambda: create_model(cfg, nnx.Rngs(0)))
    layers = model.stacks[0].layers
    assert layers.token_norm.scale.shape == (2, cfg.decoder_embed_dim)
    assert layers.token_mixer.q_norm.scale.shape == (2, cfg.head_dim)
    assert layers.channel_mixer.activation == "silu"
    # Parameters beyond the softmax backbone's: the gains alone.
    extra = count_params(cfg) - count_params(cfg.replace(architecture="softmax"))
    assert extra == cfg.decoder_embed_dim * (2 * 2 + 1) + 2 * 2 * cfg.head_dim
