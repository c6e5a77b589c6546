"""Bytes, SentencePiece and `tokenizers` tokenizers, built tiny in the test."""
import pytest

from tnl_jax import ModelConfig
from tnl_jax.tokenizers import get_tokenizer

TEXT = "Lightning attention keeps training speed constant. Ünïcode ✓ too.\n"
CORPUS = [f"line {i}: the quick brown fox jumps over the lazy dog {i % 7}." for i in range(200)]


def test_bytes_round_trip_and_specials():
    tok = get_tokenizer("bytes", ModelConfig())
    ids = tok.encode(TEXT)
    assert ids[:3] == [76, 105, 103] and max(ids) < 256
    assert tok.decode(ids) == TEXT
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (256, 257, 258, 259)
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, 300]) == TEXT


def test_sentencepiece(tmp_path):
    import sentencepiece
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS))
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "tokenizer"), vocab_size=60,
        model_type="bpe", pad_id=3, minloglevel=2)
    tok = get_tokenizer(str(tmp_path / "tokenizer.model"))
    ids = tok.encode("the quick brown fox")
    assert len(ids) < len("the quick brown fox") and tok.decode(ids) == "the quick brown fox"
    assert tok.vocab_size == 60 and (tok.pad_id, tok.bos_id, tok.eos_id) == (3, 1, 2)
    assert get_tokenizer(str(tmp_path)).vocab_size == 60  # a directory works too
    small = ModelConfig(vocab_size=50, pad_token_id=3, bos_token_id=1, eos_token_id=2)
    with pytest.raises(ValueError, match="has 60 ids .* vocab_size is 50"):
        get_tokenizer(str(tmp_path / "tokenizer.model"), small)


def test_hf_tokenizers_json(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    tok = get_tokenizer(str(tmp_path / "tokenizer.json"))
    ids = tok.encode("the lazy dog jumps")
    assert len(ids) < len("the lazy dog jumps") and tok.decode(ids) == "the lazy dog jumps"
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)


def test_bad_specs(tmp_path):
    with pytest.raises(FileNotFoundError):
        get_tokenizer(str(tmp_path / "missing.model"))
    (tmp_path / "vocab.txt").write_text("x")
    with pytest.raises(ValueError, match="expected 'bytes'"):
        get_tokenizer(str(tmp_path / "vocab.txt"))
