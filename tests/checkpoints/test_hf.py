"""Hugging Face checkpoints: the published checkpoint in bfloat16, round trips, errors
(parity with the published code in float32: test_hf_config.py)."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.tolerances import rel_err
from tests.paths import PUBLISHED
from tnl_jax.checkpoints.hf import load_hf, params_to_hf, save_hf
from tnl_jax.checkpoints.hf_config import config_to_hf


def test_published_checkpoint_in_bfloat16():
    model = load_hf(PUBLISHED, attention_backend="xla")
    assert model.embed_tokens[...].dtype == jnp.bfloat16
    ids = np.load(PUBLISHED / "input_ids.npy")[:, :64]
    expected = np.load(PUBLISHED / "expected_logits.npy")[:, :64]
    assert rel_err(model(jnp.asarray(ids)), expected) < 5e-2


@pytest.mark.parametrize("changes", [{}, {"tie_word_embeddings": False, "no_scale_embedding": True}])
def test_save_load_round_trip(tmp_path, rng, small_model, changes):
    model = small_model(std=0.2, **changes)
    save_hf(model, tmp_path)
    loaded = load_hf(tmp_path, dtype=jnp.float32, attention_backend="xla")
    ids = jnp.asarray(rng.integers(0, model.cfg.vocab_size, (2, 12)))
    assert rel_err(loaded(ids), model(ids)) < 1e-6


def test_sharded_index(tmp_path, rng, small_model):
    model = small_model(std=0.2)
    tensors = params_to_hf(model)
    names = sorted(tensors)
    halves = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
    for file, keys in halves.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / file))
    weight_map = {k: f for f, keys in halves.items() for k in keys}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    save_hf(model, tmp_path / "single")
    (tmp_path / "config.json").write_text((tmp_path / "single" / "config.json").read_text())
    ids = jnp.asarray(rng.integers(0, model.cfg.vocab_size, (1, 9)))
    assert rel_err(load_hf(tmp_path, dtype=jnp.float32)(ids), model(ids)) < 1e-6


def write(tmp_path, tensors, config):
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def checkpoint(small_model):
    model = small_model(std=0.2)
    return params_to_hf(model), config_to_hf(model.cfg)


def test_shape_mismatch_names_key_and_shapes(tmp_path, checkpoint):
    tensors, config = checkpoint
    key = "model.layers.1.channel_mixer.l3.weight"
    write(tmp_path, {**tensors, key: np.zeros((32, 41), np.float32)}, config)
    with pytest.raises(ValueError, match=rf"{key}.*\(32, 41\).*\(32, 48\)"):
        load_hf(tmp_path)


def test_missing_and_unexpected_keys(tmp_path, checkpoint):
    tensors, config = checkpoint
    key = "model.layers.2.token_mixer.out_proj.weight"
    write(tmp_path, {k: v for k, v in tensors.items() if k != key}, config)
    with pytest.raises(ValueError, match=key):
        load_hf(tmp_path)
    write(tmp_path, {**tensors, "model.layers.7.extra.weight": np.ones(3, np.float32)}, config)
    with pytest.raises(ValueError, match="model.layers.7.extra.weight"):
        load_hf(tmp_path)


def test_no_weights_and_torch_files(tmp_path, checkpoint):
    _, config = checkpoint
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really")
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install torch"):
            load_hf(tmp_path)
