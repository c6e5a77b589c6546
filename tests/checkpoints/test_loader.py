"""One loader for a training run, a converted and a Hugging Face directory; the
converted format; training's `init_from` from each."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from tests.tolerances import rel_err
from tests.paths import PUBLISHED
from tests.training.runs import tiny_config
from tnl_jax import create_model
from tnl_jax.checkpoints import converted, export, hf, kinds, loader, run_dir
from tnl_jax.training import loop, sharding


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory):
    """The published test checkpoint, with a tokenizer file, converted."""
    hf_dir = tmp_path_factory.mktemp("hf") / "published"
    shutil.copytree(PUBLISHED, hf_dir)
    (hf_dir / "tokenizer.json").write_text("{}")
    out = tmp_path_factory.mktemp("converted") / "out"
    export.export(hf_dir, out)
    return out


def published_logits(columns: int):
    ids = jnp.asarray(np.load(PUBLISHED / "input_ids.npy")[:, :columns])
    return ids, np.load(PUBLISHED / "expected_logits.npy")[:, :columns]


def test_directory_kinds(tiny_run, converted_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    (tmp_path / "file").write_text("x")
    paths = [tiny_run.dir, converted_dir, PUBLISHED] + [tmp_path / name for name in (
        "empty", "other", "file", "missing")]
    assert [loader.directory_kind(p) for p in paths] == [
        "run", "converted", "hf", "empty", "other", "file", "missing"]
    with pytest.raises(kinds.WrongDirectoryKind, match=r"init_from .*/empty: found an empty "
                       r"directory, expected a training run .* or a converted .* or a Hugging"):
        kinds.checkpoint_kind(tmp_path / "empty", "init_from")
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        loader.load_model_config(tmp_path / "missing")


def test_converted_directory_loads_and_keeps_the_tokenizer(converted_dir):
    assert (converted_dir / "tokenizer.json").read_text() == "{}"
    assert loader.tokenizer_spec(converted_dir) == str(converted_dir / "tokenizer.json")
    with pytest.raises(FileNotFoundError, match=r"without its tokenizer .* the model's 96 ids"):
        loader.tokenizer_spec(PUBLISHED)
    ids, expected = published_logits(40)
    model = loader.load_model(converted_dir, dtype=jnp.float32, attention_backend="xla")
    assert rel_err(model(ids), expected) < 1e-4
    hf_model = loader.load_model(PUBLISHED, dtype=jnp.float32, attention_backend="xla")
    assert rel_err(hf_model(ids), expected) < 1e-4


def test_params_restore_into_a_fresh_model(converted_dir):
    ids, expected = published_logits(40)
    fresh = create_model(loader.load_model_config(converted_dir), nnx.Rngs(7))
    nnx.update(fresh, loader.load_params(converted_dir, nnx.state(fresh, nnx.Param)))
    assert rel_err(fresh(ids), expected) < 1e-4
    wrong = create_model(loader.load_model_config(converted_dir).replace(glu_dim=64),
                         nnx.Rngs(0))
    for directory in (converted_dir, PUBLISHED):
        with pytest.raises(ValueError, match="do not match the model config"):
            loader.load_params(directory, nnx.state(wrong, nnx.Param))


def test_a_config_saved_with_retired_keys_still_loads(converted_dir, tiny_run, tmp_path,
                                                     monkeypatch):
    """``RETIRED_KEYS`` (how earlier versions ran a step, not what it computed) are
    dropped from a saved config; any other unknown key stays an error naming it."""
    directory = tmp_path / "converted"
    shutil.copytree(converted_dir, directory)
    path = directory / converted.CONFIG_FILE
    values = json.loads(path.read_text())
    path.write_text(json.dumps({**values, "layer_loop": "python", "mlp_product": "stacked"}))
    assert loader.load_model_config(directory) == loader.load_model_config(converted_dir)
    path.write_text(json.dumps({**values, "layer_lop": "scan"}))
    with pytest.raises(ValueError, match="layer_lop"):
        loader.load_model_config(directory)
    saved = run_dir.read_config(tiny_run.dir)
    with_retired = {**saved, "model": {**saved["model"], "layer_loop": "scan"}}
    monkeypatch.setattr(run_dir, "read_config", lambda directory, step=None: with_retired)
    assert loader.load_model_config(tiny_run.dir).to_dict() == saved["model"]


def test_a_training_run_loads_its_newest_checkpoint(tiny_run):
    cfg = loader.load_model_config(tiny_run.dir)
    assert (cfg.decoder_embed_dim, cfg.decoder_layers) == (32, 2)
    assert loader.tokenizer_spec(tiny_run.dir) == "bytes"
    model = loader.load_model(tiny_run.dir, dtype=jnp.float32)
    with ocp.StandardCheckpointer() as checkpointer:
        saved = checkpointer.restore(tiny_run.dir / "checkpoints" / "4" / "state")["params"]
    want = jax.tree.leaves(saved)
    got = jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["run", "hf"])
def test_init_from(tmp_path, tiny_run, kind):
    cfg = tiny_config(tmp_path)
    if kind == "hf":
        source = tmp_path / "hf"
        hf.save_hf(create_model(cfg.model, nnx.Rngs(7)), source)
    else:
        source = tiny_run.dir
    want = nnx.to_pure_dict(nnx.state(loader.load_model(source, dtype=jnp.float32), nnx.Param))
    mesh = sharding.make_mesh()
    _, params, _, _ = loop.initial_params(tiny_config(tmp_path, f"init_from={source}"), mesh)
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(params), want)
    wrong = tiny_config(tmp_path, f"init_from={source}", "model.glu_dim=32")
    with pytest.raises(ValueError, match="do not match the model config"):
        loop.initial_params(wrong, mesh)


def test_training_refuses_a_checkpoint_directory_as_run_dir(tmp_path):
    run_dir = tmp_path / "published"
    shutil.copytree(PUBLISHED, run_dir)
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(kinds.WrongDirectoryKind, match=r"run_dir=.*found a Hugging Face "
                       r"directory \(config.json\).*add init_from="):
        loop.main(tiny_config(run_dir))
    assert sorted(p.name for p in run_dir.iterdir()) == before  # Nothing written there.
