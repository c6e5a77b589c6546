"""Per-document scoring, context gain, passkey rows and the paired bootstrap, against
hand computations with fake scorers (NumPy only: no model)."""
import math

import numpy as np
import pytest

from tnl_jax.evaluation import bootstrap, documents, passkey
from tnl_jax.tokenizers import get_tokenizer


def context_length_scorer(batch):
    """A fake model whose loss at a target is the context it had (1 for the first)."""
    losses = (batch["positions"] + 1.0) * batch["loss_mask"]
    return losses, np.ones_like(losses)


def test_windows_score_every_target_once_with_context_restarting():
    tokens = np.arange(10, dtype=np.int32)
    pieces = documents.window_rows(tokens, 4)
    assert [start for start, _ in pieces] == [0, 4, 8]
    assert sum(len(p) - 1 for _, p in pieces) == 9
    docs = [documents.Document("a:0", tokens), documents.Document("b:0", tokens[:3])]
    edges = (0, 4, 8)
    short = documents.score_windows(context_length_scorer, docs, 4, 8, edges)
    full = documents.score_windows(context_length_scorer, docs, 16, 8, edges)
    # Document a: contexts 1 2 3 4 | 1 2 3 4 | 1 at window 4; 1..9 at the full window.
    np.testing.assert_array_equal(short.loss[0], [10, 10, 1])
    np.testing.assert_array_equal(full.loss[0], [10, 26, 9])
    np.testing.assert_array_equal(short.count, full.count)
    np.testing.assert_array_equal(full.count[1], [2, 0, 0])
    gain = documents.context_gain(short, full)
    assert gain["0-4"] == 0.0
    assert math.isclose(gain["4-8"], (10 - 26) / (4 * math.log(2)))


def test_context_gain_refuses_other_documents():
    doc = documents.Document("a:0", np.arange(6, dtype=np.int32))
    one = documents.score_windows(context_length_scorer, [doc], 4, 8)
    other = documents.score_windows(context_length_scorer, [doc, doc], 4, 8)
    with pytest.raises(ValueError, match="same documents"):
        documents.context_gain(one, other)


def test_held_out_documents_split_into_disjoint_halves(tmp_path):
    for i in range(12):
        (tmp_path / f"f{i:02d}.txt").write_bytes(bytes(range(40 + i)))
    bytes_tokenizer = get_tokenizer("bytes")
    docs = documents.held_out_documents(str(tmp_path / "*.txt"), bytes_tokenizer, 1.0, 0)
    assert len(docs) == 12 and [d.key for d in docs] == sorted(d.key for d in docs)
    assert len(docs[0].tokens) == 41  # BOS and 40 bytes.
    validation, test = documents.split_halves(docs)
    assert validation and test and len(validation) + len(test) == 12
    assert not {d.key for d in validation} & {d.key for d in test}
    # The split is a function of the key alone: the same in any order.
    assert documents.split_halves(docs[::-1])[0] == validation[::-1]


def test_paired_bootstrap_by_hand():
    rng = np.random.default_rng(0)
    count = rng.integers(50, 500, 30).astype(float)
    b = count * rng.uniform(0.5, 1.5, (3, 30))
    same = bootstrap.paired_difference(b, b, count, draws=200)
    assert same["difference"] == 0.0 and same["interval"] == [0.0, 0.0]
    shifted = bootstrap.paired_difference(b + 0.1 * count, b, count, draws=200)
    expected = 0.1 / math.log(2)  # 0.1 nats more on every token.
    assert math.isclose(shifted["difference"], expected)
    assert all(math.isclose(x, expected) for x in shifted["interval"])
    noisy = bootstrap.paired_difference(b * rng.uniform(0.9, 1.1, b.shape), b, count)
    low, high = noisy["interval"]
    assert low < noisy["difference"] < high and noisy["seeds"] == 3
    with pytest.raises(ValueError, match="do not pair"):
        bootstrap.paired_difference(b[:, :5], b, count)
    spread = bootstrap.seed_spread([1.0, 2.0, 3.0])
    assert spread["mean"] == 2.0 and spread["std"] == 1.0


def test_passkey_rows_hide_the_key_and_score_its_digits_only():
    filler = b"".join(f"x_{i} = {i}\n".encode() for i in range(4000))
    text, answer_at = passkey.example_bytes(filler, 600, 0.5, 0)  # Row 0 of batch_of.
    assert len(text) == 600 and text.endswith(text[answer_at:])
    key = text[answer_at:]
    assert len(key) == 5 and key.isdigit()
    where = text.index(b"PASS_KEY = " + key)
    assert 0.35 * 600 < where < 0.55 * 600  # Near half the depth, after a line break.
    assert text[where - 1:where] == b"\n"
    # The question is the needle's prefix again, right before the answer.
    assert text[:answer_at].endswith(b"\n" + passkey.PREFIX) and where < answer_at - 20
    batch = passkey.batch_of(filler, 600, 0.5, rows=3, bos_id=257)
    assert batch["input_ids"].shape == (3, 600) and batch["input_ids"][0, 0] == 257
    assert (batch["loss_mask"].sum(1) == 5).all()
    digits = batch["targets"][0][batch["loss_mask"][0] > 0]
    assert bytes(digits.astype(np.uint8)) == key

    def right_on_first_row(b):
        correct = np.zeros(b["loss_mask"].shape)
        correct[0] = 1.0
        correct[1, b["loss_mask"][1] > 0] = np.array([1, 1, 1, 1, 0])  # One digit wrong.
        return np.zeros_like(correct), correct

    result = passkey.accuracy(right_on_first_row, filler, (600,), 3, 257, depths=(0.5,))
    assert result == [{"length": 600, "depth": 0.5, "rows": 3, "question": passkey.QUESTION,
                       "accuracy": 1 / 3, "digit_accuracy": 9 / 15}]
