"""Conversions between the three kinds of checkpoint directory: the round trip keeps
the logits bit for bit; a destination is replaced only when asked and only whole;
files get ordinary permissions."""
import os
import shutil
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from tests.paths import PUBLISHED
from tnl_jax.checkpoints import export, hf, loader

CALL = dict(attention_backend="xla", chunk_size=16)  # The same program for every load.


def logits(directory, ids):
    return np.asarray(loader.load_model(directory, dtype=jnp.float32, **CALL)(ids))


def test_run_to_hf_to_converted_to_hf_keeps_the_logits(tiny_run, tmp_path, rng):
    (tmp_path / "run").mkdir()
    run = tmp_path / "run" / "with-tokenizer"
    shutil.copytree(tiny_run.dir, run)
    (run / "tokenizer.json").write_text('{"stands for": "the run\'s tokenizer"}')
    first, middle, last = tmp_path / "hf1", tmp_path / "deep" / "converted", tmp_path / "hf2"
    assert export.export(run, first)[:2] == ("run", "hf")
    assert export.export(first, middle)[:2] == ("hf", "converted")
    assert export.export(middle, last, to="hf")[:2] == ("converted", "hf")
    ids = jnp.asarray(rng.integers(0, 259, (2, 24)))
    want = logits(run, ids)
    for directory in (first, middle, last):
        np.testing.assert_array_equal(logits(directory, ids), want)
        assert (directory / "tokenizer.json").read_text() == (run / "tokenizer.json").read_text()
    a, b = load_file(str(first / "model.safetensors")), load_file(str(last / "model.safetensors"))
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert (first / "config.json").read_text() == (last / "config.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "hf1", "hf2", "run"]


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_files_get_the_permissions_of_any_new_file(tmp_path, small_model, umask):
    old = os.umask(umask)
    try:
        hf.save_hf(small_model(), tmp_path / "hf")
        export.export(tmp_path / "hf", tmp_path / "converted")
    finally:
        os.umask(old)
    for path in [tmp_path / "hf" / "config.json", tmp_path / "hf" / "model.safetensors",
                 tmp_path / "converted" / "model_config.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert stat.S_IMODE((tmp_path / "converted").stat().st_mode) == 0o777 & ~umask


def test_a_destination_is_replaced_only_when_asked_and_only_whole(tiny_run, tmp_path, rng,
                                                                  monkeypatch):
    """The issue's data loss: converting B onto A's directory rewrote part of it."""
    out = tmp_path / "x"
    export.export(PUBLISHED, out)  # A: 96 ids.
    ids = jnp.asarray(rng.integers(0, 96, (1, 20)))
    want_a = logits(out, ids)
    with pytest.raises(FileExistsError, match="nothing was written"):
        export.export(tiny_run.dir, out, to="converted")  # B: 384 ids.

    def fail_halfway(model, directory):
        (directory / "model_config.json").write_text("{}")
        raise OSError("disk full")

    monkeypatch.setitem(export.WRITERS, "converted", fail_halfway)
    with pytest.raises(OSError, match="disk full"):
        export.export(tiny_run.dir, out, to="converted", overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        export.export(tiny_run.dir, tmp_path / "new" / "parent" / "y", to="converted")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # No partial directory left.
    np.testing.assert_array_equal(logits(out, ids), want_a)
    export.export(tiny_run.dir, out, to="converted", overwrite=True)
    assert loader.load_model_config(out).vocab_size == 384
    fresh = tmp_path / "fresh"
    export.export(tiny_run.dir, fresh, to="converted")
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if "params" not in p.parts)
    assert files(out) == files(fresh)
    params = lambda d: jax.tree.leaves(nnx.state(loader.load_model(d, jnp.float32), nnx.Param))
    assert all(np.array_equal(a, b) for a, b in zip(params(out), params(fresh), strict=True))


def test_a_destination_filled_meanwhile_is_left_to_its_writer(tmp_path, monkeypatch):
    out = tmp_path / "x"

    def another_writer_comes_first(model, directory):
        (directory / "config.json").write_text("mine")
        out.mkdir()
        (out / "config.json").write_text("theirs")

    monkeypatch.setitem(export.WRITERS, "hf", another_writer_comes_first)
    with pytest.raises(FileExistsError, match="filled by another process"):
        export.export(PUBLISHED, out, to="hf")
    assert [p.name for p in tmp_path.iterdir()] == ["x"]
    assert (out / "config.json").read_text() == "theirs"
