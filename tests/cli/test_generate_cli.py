"""`tnl-generate` reads a training run, a converted and a Hugging Face directory, and
names a bad argument (or a tokenizer the model's vocabulary cannot hold) before it
reads the weights; `tnl-convert` writes the converted directory, tokenizer included."""
import shutil

import pytest

from tests.paths import PUBLISHED
from tnl_jax.checkpoints.hf_config import load_config
from tnl_jax.cli import convert as convert_cli
from tnl_jax.cli import generate as generate_cli

PUBLISHED_VOCAB = load_config(PUBLISHED).vocab_size


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory):
    hf_dir = tmp_path_factory.mktemp("hf") / "published"
    shutil.copytree(PUBLISHED, hf_dir)
    (hf_dir / "tokenizer.model").write_bytes(b"stands for a SentencePiece model")
    out = tmp_path_factory.mktemp("converted") / "out"
    convert_cli.main(["--hf", str(hf_dir), "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory) -> str:
    """A `tokenizers` word-level tokenizer of exactly the published model's vocabulary
    (no bos token), so that every id the model samples decodes to a word."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    specials = ["<pad>", "</s>", "<unk>", "def", "f"]
    words = specials + [f"w{i}" for i in range(PUBLISHED_VOCAB - len(specials))]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tokenizer.save(str(path))
    return str(path)


def test_convert_copies_the_tokenizer(converted_dir, capsys):
    assert (converted_dir / "tokenizer.model").read_bytes() == b"stands for a SentencePiece model"
    assert (converted_dir / "model_config.json").exists() and (converted_dir / "params").is_dir()


@pytest.mark.parametrize("kind", ["run", "converted", "hf"])
def test_generate_from_each_kind_of_directory(kind, tiny_run, converted_dir, word_tokenizer,
                                              capsys):
    directory = {"run": tiny_run.dir, "converted": converted_dir, "hf": PUBLISHED}[kind]
    # The run's own tokenizer is bytes; the published model's 96 ids need a 96-id one.
    extra = [] if kind == "run" else ["--tokenizer", word_tokenizer]
    generate_cli.main(["--checkpoint", str(directory), "--prompt", "def f", "--max-new-tokens",
                       "5", "--temperature", "0", "--dtype", "float32", *extra])
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("def f") and len(out[-1]) > len("def f")


def test_generate_names_what_a_directory_lacks(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        generate_cli.main(["--checkpoint", str(tmp_path), "--prompt", "x"])
    assert exit_.value.code == 2
    assert ("found an empty directory, expected a training run directory with checkpoints/"
            in capsys.readouterr().err)


@pytest.mark.parametrize("arguments, says", [
    ([], "found a Hugging Face directory (config.json) without its tokenizer (tokenizer.model "
         "or tokenizer.json) for the model's 96 ids; give the tokenizer"),
    (["--tokenizer", "bytes"], "tokenizer 'bytes' has 259 ids (0 to 258) but the model's "
                               "vocab_size is 96"),
    (["--tokenizer", "WORDS", "--prompt", ""], "--prompt is empty"),
    (["--tokenizer", "WORDS", "--temperature", "nan"], "temperature=nan: expected a finite"),
    (["--tokenizer", "WORDS", "--temperature", "-1"], "temperature=-1.0: expected a finite"),
    (["--tokenizer", "WORDS", "--top-k", "0"], "top_k=0: expected None or an integer in [1, "
                                                "vocab_size=96]"),
    (["--tokenizer", "WORDS", "--top-k", "97"], "top_k=97"),
    (["--tokenizer", "WORDS", "--top-p", "1.5"], "top_p=1.5: expected a finite number in (0, 1]"),
    (["--tokenizer", "WORDS", "--max-new-tokens", "-1"], "max_new_tokens=-1: expected an integer"),
    (["--tokenizer", "WORDS", "--dtype", "int8"], "--dtype='int8': expected one of "
                                                  "('float32', 'bfloat16', 'float16')"),
    (["--tokenizer", "WORDS", "--dtype", "float64"], "--dtype='float64': expected one of"),
])
def test_a_bad_argument_exits_2_naming_it(arguments, says, word_tokenizer, capsys):
    arguments = [word_tokenizer if a == "WORDS" else a for a in arguments]
    if "--prompt" not in arguments:
        arguments += ["--prompt", "def f"]
    with pytest.raises(SystemExit) as exit_:
        generate_cli.main(["--checkpoint", str(PUBLISHED), *arguments])
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err
