"""A published checkpoint end to end, as the README's "Published checkpoints" section
tells it: the Hugging Face directory as published (sharded safetensors, index,
SentencePiece ``tokenizer.model``) -> load with its tokenizer -> generate -> fine-tune
with ``init_from`` -> export back to the Hugging Face layout. The published test
checkpoint (``tnl_tiny_published``: 96 ids, d 64) stands for the 385M/1B/7B ones; the
sharded ``.bin`` files as published are in tests/bad_inputs/checkpoint_cases.py."""
import io
import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tests.paths import PUBLISHED
from tests.tolerances import rel_err
from tnl_jax import load_hf
from tnl_jax.checkpoints import loader
from tnl_jax.cli import convert as convert_cli
from tnl_jax.cli import generate as generate_cli
from tnl_jax.tokenizers import get_tokenizer
from tnl_jax.training import config as train_config
from tnl_jax.training import loop
from tnl_jax.training.metrics import read_metrics


def corpus(rng) -> str:
    words = ["".join(rng.choice(list("abcdefghij"), rng.integers(2, 6))) for _ in range(60)]
    return "\n".join(" ".join(rng.choice(words, 12)) for _ in range(400))


def sentencepiece_model(text: str) -> bytes:
    """A SentencePiece model of at most 96 pieces (unk 0, bos 1, eos 2 as the published
    Baichuan tokenizer and config.json have them)."""
    import sentencepiece
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()), model_writer=model, vocab_size=96,
        hard_vocab_limit=False, minloglevel=2)
    return model.getvalue()


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The test checkpoint laid out as the Hub publishes one: two safetensors shards and
    ``model.safetensors.index.json``, ``config.json``, ``tokenizer.model``; and a text."""
    root = tmp_path_factory.mktemp("hub")
    directory = root / "TransNormerLLM-tiny"
    directory.mkdir()
    shutil.copyfile(PUBLISHED / "config.json", directory / "config.json")
    tensors = load_file(str(PUBLISHED / "model.safetensors"))
    names = sorted(tensors)
    shards = {name: f"model-0000{1 + (i >= len(names) // 2)}-of-00002.safetensors"
              for i, name in enumerate(names)}
    for shard in sorted(set(shards.values())):
        save_file({n: tensors[n] for n in names if shards[n] == shard}, str(directory / shard))
    total = sum(t.nbytes for t in tensors.values())
    (directory / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": shards}))
    text = corpus(np.random.default_rng(29))
    (directory / "tokenizer.model").write_bytes(sentencepiece_model(text))
    (root / "corpus.txt").write_text(text)
    return directory


def test_load_and_generate_with_its_tokenizer(published, capsys):
    ids = jnp.asarray(np.load(PUBLISHED / "input_ids.npy")[:, :48])
    expected = np.load(PUBLISHED / "expected_logits.npy")[:, :48]
    model = loader.load_model(published, dtype=jnp.float32, attention_backend="xla")
    assert rel_err(model(ids), expected) < 1e-4
    assert loader.tokenizer_spec(published) == str(published / "tokenizer.model")
    generate_cli.main(["--checkpoint", str(published), "--prompt", "abc de", "--max-new-tokens",
                       "6", "--temperature", "0", "--dtype", "float32"])
    out = capsys.readouterr().out.strip()
    tokenizer = get_tokenizer(str(published / "tokenizer.model"))
    assert out.startswith("abc de") and len(tokenizer.encode(out)) > len(tokenizer.encode("abc de"))


def test_fine_tune_with_init_from_then_export_back(published, tmp_path, rng, capsys):
    run = tmp_path / "run"
    cfg = train_config.load(None, [
        f"init_from={published}", f"tokenizer={published / 'tokenizer.model'}",
        f"data={published.parent / 'corpus.txt'}", f"run_dir={run}", "seq_len=32",
        "batch_size=2", "steps=2", "checkpoint_every=2", "eval_every=0", "sample_tokens=0",
        "warmup=1", "model.attention_backend=xla"])
    assert cfg.model.vocab_size == 96  # The published model's, from its config.json.
    loop.main(cfg)
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2]
    assert (run / "tokenizer.model").read_bytes() == (published / "tokenizer.model").read_bytes()
    out = tmp_path / "exported"
    convert_cli.main(["--from", str(run), "--to", "hf", "--out", str(out)])
    assert "tokenizer: tokenizer.model" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors",
                                                     "tokenizer.model"]
    hf_config = json.loads((out / "config.json").read_text())
    published_config = json.loads((published / "config.json").read_text())
    assert {k: hf_config[k] for k in published_config} == published_config
    ids = jnp.asarray(rng.integers(0, 96, (2, 20)))
    tuned = loader.load_model(run, dtype=jnp.float32, attention_backend="xla")
    exported = load_hf(out, dtype=jnp.float32, attention_backend="xla")
    np.testing.assert_array_equal(exported(ids), tuned(ids))
    before = loader.load_model(published, dtype=jnp.float32, attention_backend="xla")
    assert rel_err(tuned(ids), before(ids)) > 1e-4  # Two steps of fine-tuning moved it.
