"""passkey_rows: rows of passkey examples of every length made from the training text,
only their answers in the loss at a text row's weight, mixed into the training rows at
the asked share; resumable like any row; never in the held-out set."""
import numpy as np
import pytest

from tnl_jax import data
from tnl_jax.data import passkey
from tnl_jax.tokenizers import get_tokenizer
from tnl_jax.training import config as train_config

from tests.data.iterator_checks import assert_resumes_exactly


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer("bytes")


def corpus(tmp_path, files=12):
    rng = np.random.default_rng(0)
    for i in range(files):
        lines = [f"value_{i}_{j} = {int(rng.integers(1000))}" for j in range(60)]
        (tmp_path / f"mod{i:02d}.py").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "*.py")


def spec_for(pattern, tokenizer, **changes):
    values = dict(source=pattern, seq_len=256, batch_size=8, seed=3, tokenizer=tokenizer,
                  eval_fraction=0.2, passkey_rows=0.5)
    return data.DataSpec(**{**values, **changes})


def is_passkey_row(input_ids: np.ndarray) -> bool:
    """Needles and questions: the prefix (the corpus never has it)."""
    return bytes(np.asarray(input_ids, np.uint8)).count(passkey.PREFIX) >= 2


def check_example(ids: np.ndarray, weights: np.ndarray, bos_id: int) -> None:
    """One example's tokens: BOS, filler with the needle, the question, the answer;
    only the answer weighs, together the example's length."""
    assert ids[0] == bos_id
    text = bytes(np.asarray(ids[1:], np.uint8))
    head, answer = text[:-passkey.DIGITS], text[-passkey.DIGITS:]
    assert head.endswith(b"\n" + passkey.PREFIX) and answer.isdigit()
    assert b"\n" + passkey.PREFIX + answer + b"\n" in head[:-len(passkey.PREFIX) - 1]
    assert np.count_nonzero(weights) == passkey.DIGITS
    np.testing.assert_allclose(weights[-passkey.DIGITS:].sum(), len(ids))


def test_passkey_rows_are_examples_of_every_length_answered_from_their_needles(
        tmp_path, tokenizer):
    spec = spec_for(corpus(tmp_path), tokenizer)
    docs = data.documents(spec, "train")
    filler = passkey.filler_of(docs, tokenizer.bos_id, spec.seed)
    train_text = b"".join(bytes(np.asarray(d["tokens"][1:], np.uint8)) for d in docs)
    assert len(filler) == len(train_text)  # Every training byte, once (a small corpus).
    assert passkey.example_lengths(256) == (128, 256)
    rows = passkey.training_rows(filler, spec.seq_len, tokenizer.bos_id, spec.seed)
    lengths = []
    for row in (rows[i] for i in range(8)):
        segments, positions = row["tokens_segment_ids"], row["tokens_positions"]
        assert segments.shape == (257,) and segments[-1] == 0 and row["weights"][-1] == 0
        for segment in range(1, segments.max() + 1):
            where = np.flatnonzero(segments == segment)
            np.testing.assert_array_equal(positions[where], np.arange(len(where)))
            check_example(row["tokens"][where], row["weights"][where], tokenizer.bos_id)
            lengths.append(len(where))
        assert row["weights"].sum() == 256  # A text row's weight.
    assert set(lengths) <= {128, 256}
    # One length a row, drawn uniformly: every length gets about as many tokens.
    per_row = [np.bincount(rows[i]["tokens_segment_ids"])[1:] for i in range(60)]
    assert all(len(set(counts)) == 1 for counts in per_row)  # One length in a row.
    shorts = sum(len(counts) == 2 for counts in per_row)  # Rows of two 128s.
    assert 0.3 <= shorts / len(per_row) <= 0.7
    held_out = b"".join(bytes(np.asarray(d["tokens"][1:], np.uint8))
                        for d in data.documents(spec, "eval"))
    first = rows[0]["tokens"][rows[0]["tokens_segment_ids"] == 1]  # One example's bytes.
    lines = bytes(np.asarray(first[1:], np.uint8)).split(b"\n")
    # Whole lines only: the filler starts and ends inside a line, before the question.
    filler_lines = [line for line in lines[1:-2] if line and passkey.PREFIX not in line]
    assert filler_lines and all(line in train_text and line not in held_out
                                for line in filler_lines)


def test_training_batches_mix_passkey_rows_at_the_share(tmp_path, tokenizer):
    spec = spec_for(corpus(tmp_path), tokenizer, shuffle_window=0)  # Rows in mixed order.
    it = data.train_batches(spec)
    rows = [row for _ in range(6) for row in next(it)["input_ids"]]
    assert np.mean([is_passkey_row(r) for r in rows]) == 0.5  # Grain mixes by the weights.
    plain = data.train_batches(spec_for(spec.source, tokenizer, passkey_rows=0.0))
    assert not any(is_passkey_row(r) for _ in range(6) for r in next(plain)["input_ids"])
    batch = next(it)  # A passkey row's loss is its answer's, a text row's weight.
    masks = [mask for ids, mask in zip(batch["input_ids"], batch["loss_mask"])
             if is_passkey_row(ids)]
    assert masks and all(np.count_nonzero(m) in (passkey.DIGITS, 2 * passkey.DIGITS)
                         and m.sum() == 256 for m in masks)
    text_masks = [mask for ids, mask in zip(batch["input_ids"], batch["loss_mask"])
                  if not is_passkey_row(ids)]
    assert text_masks and all(set(np.unique(m)) <= {0.0, 1.0} for m in text_masks)


def test_passkey_rows_resume_exactly(tmp_path, tokenizer):
    assert_resumes_exactly(spec_for(corpus(tmp_path), tokenizer, shuffle_window=4), skip=3,
                           batches=3)


@pytest.mark.parametrize("changes, expected", [
    ({"passkey_rows": 1.0}, "passkey_rows=1.0: expected a finite number in [0, 1)"),
    ({"passkey_rows": -0.1}, "passkey_rows=-0.1: expected a finite number in [0, 1)"),
    ({"passkey_rows": 0.2, "data": "mqar"}, "it needs a text data source and tokenizer='bytes'"),
    ({"passkey_rows": 0.2, "seq_len": 64}, "needs rows of at least 128 tokens (a passkey "
                                           "example's), got seq_len=64"),
])
def test_bad_passkey_rows_are_named(changes, expected):
    assert train_config.load(None, ["passkey_rows=0.5"]).passkey_rows == 0.5
    with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        train_config.load(None, [f"{k}={v}" for k, v in changes.items()])


def test_a_resume_with_another_passkey_share_is_refused():
    from tnl_jax.training import resume
    saved = train_config.TrainConfig()
    current = train_config.apply(saved, {"passkey_rows": 0.25})
    with pytest.raises(resume.RunConfigChanged, match="passkey_rows.*another data stream"):
        resume.check(train_config.to_dict(saved), train_config.to_dict(current), "x")


def test_too_little_training_text_for_an_example_is_named_at_start(tmp_path, tokenizer):
    (tmp_path / "a.py").write_text("a = 1\nb = 2\n")
    (tmp_path / "b.py").write_text("c = 3\n")
    spec = spec_for(str(tmp_path / "*.py"), tokenizer, eval_fraction=0.0)
    with pytest.raises(ValueError, match=r"passkey_rows=0.5 hides passkeys in the training "
                                         r"text of data=.*: it has \d+ bytes, fewer than "
                                         r"a 256-token example"):
        data.train_batches(spec)
