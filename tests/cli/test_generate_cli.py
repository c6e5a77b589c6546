"""`tnl-generate` reads a training run, a converted and a Hugging Face directory;
`tnl-convert` writes the converted one, tokenizer included."""
import shutil

import pytest

from tests.paths import PUBLISHED
from tnl_jax.cli import convert as convert_cli
from tnl_jax.cli import generate as generate_cli


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory):
    hf_dir = tmp_path_factory.mktemp("hf") / "published"
    shutil.copytree(PUBLISHED, hf_dir)
    (hf_dir / "tokenizer.model").write_bytes(b"stands for a SentencePiece model")
    out = tmp_path_factory.mktemp("converted") / "out"
    convert_cli.main(["--hf", str(hf_dir), "--out", str(out)])
    return out


def test_convert_copies_the_tokenizer(converted_dir, capsys):
    assert (converted_dir / "tokenizer.model").read_bytes() == b"stands for a SentencePiece model"
    assert (converted_dir / "model_config.json").exists() and (converted_dir / "params").is_dir()


@pytest.mark.parametrize("kind", ["run", "converted", "hf"])
def test_generate_from_each_kind_of_directory(kind, tiny_run, converted_dir, capsys):
    directory = {"run": tiny_run.dir, "converted": converted_dir, "hf": PUBLISHED}[kind]
    # The converted directory's tokenizer file is a stand-in: use bytes there.
    extra = ["--tokenizer", "bytes"] if kind == "converted" else []
    generate_cli.main(["--checkpoint", str(directory), "--prompt", "def f", "--max-new-tokens",
                       "5", "--temperature", "0", "--dtype", "float32", *extra])
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("def f") and len(out[-1]) > len("def f")


def test_generate_names_what_a_directory_lacks(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        generate_cli.main(["--checkpoint", str(tmp_path), "--prompt", "x"])
    assert exit_.value.code == 2 and "no checkpoints/" in capsys.readouterr().err
