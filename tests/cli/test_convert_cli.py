"""`tnl-convert`: each direction from the command line, the source's kind detected or
checked against the flag that names it, every problem one line with exit status 2."""
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from tests.paths import PUBLISHED
from tnl_jax.checkpoints import loader
from tnl_jax.cli import convert as convert_cli


def convert(*arguments) -> None:
    convert_cli.main([str(a) for a in arguments])


def fails(capsys, *arguments) -> str:
    with pytest.raises(SystemExit) as exit_:
        convert_cli.main([str(a) for a in arguments])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("tnl-convert: error: ") and error.count("\n") == 1, error
    return error


def test_each_direction_and_the_flags_that_name_a_kind(tiny_run, tmp_path, rng, capsys):
    hf_dir = tmp_path / "published"
    shutil.copytree(PUBLISHED, hf_dir)
    (hf_dir / "tokenizer.model").write_bytes(b"stands for a SentencePiece model")
    convert("--hf", hf_dir, "--out", tmp_path / "converted")  # As before: --hf -> converted.
    assert "a converted directory (model_config.json, params/) from a Hugging Face" in \
        capsys.readouterr().out
    convert("--converted", tmp_path / "converted", "--out", tmp_path / "back")  # -> hf.
    convert("--from", tiny_run.dir, "--to", "converted", "--out", tmp_path / "run-converted")
    convert("--run", tiny_run.dir, "--out", tmp_path / "run-hf")
    assert "tokenizer: none: the run trained on bytes" in capsys.readouterr().out
    kinds = {d: loader.directory_kind(tmp_path / d) for d in ("converted", "back",
                                                              "run-converted", "run-hf")}
    assert kinds == {"converted": "converted", "back": "hf", "run-converted": "converted",
                     "run-hf": "hf"}
    assert (tmp_path / "back" / "tokenizer.model").read_bytes() == \
        (hf_dir / "tokenizer.model").read_bytes()
    ids = jnp.asarray(rng.integers(0, 96, (1, 16)))
    load = lambda d: loader.load_model(d, dtype=jnp.float32, attention_backend="xla")(ids)
    np.testing.assert_array_equal(load(tmp_path / "back"), load(hf_dir))


def test_a_wrong_kind_names_what_it_found_and_the_flag_to_use(tiny_run, tmp_path, capsys):
    error = fails(capsys, "--hf", tiny_run.dir, "--out", tmp_path / "x")
    assert (f"--hf {tiny_run.dir}: found a training run directory (checkpoints/), expected a "
            f"Hugging Face directory with config.json; use --run {tiny_run.dir} (or --from "
            f"{tiny_run.dir})") in error
    error = fails(capsys, "--run", PUBLISHED, "--out", tmp_path / "x")
    assert "found a Hugging Face directory (config.json), expected a training run" in error
    assert f"use --hf {PUBLISHED}" in error
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    error = fails(capsys, "--from", tmp_path / "notes", "--out", tmp_path / "x")
    assert "found a directory with none of checkpoints/, model_config.json or config.json" in error
    error = fails(capsys, "--from", tmp_path / "missing", "--out", tmp_path / "x")
    assert "missing: found no such file or directory" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]  # Nothing written.


def test_an_existing_destination_is_kept_unless_overwrite(tmp_path, rng, capsys):
    out = tmp_path / "out"
    convert("--from", PUBLISHED, "--to", "hf", "--out", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    error = fails(capsys, "--from", PUBLISHED, "--out", out)
    assert "found a Hugging Face directory (config.json), expected a new or empty" in error
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    convert("--from", PUBLISHED, "--out", out, "--overwrite")  # hf -> converted, replacing.
    assert loader.directory_kind(out) == "converted" and not (out / "model.safetensors").exists()
