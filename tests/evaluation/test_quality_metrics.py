"""The quality study's metrics against hand computations: position buckets, bits per
byte, MQAR recall rows (NumPy only: no model, well under a second)."""
import math

import numpy as np

from tnl_jax.evaluation import positions, recall


def test_position_buckets_and_bits_per_byte_by_hand():
    positions_ = np.array([[0, 511, 512, 2047], [2048, 8191, 8192, 16384]])
    losses = np.array([[1.0, 3.0, 2.0, 4.0], [5.0, 7.0, 6.0, 9.0]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.float32)  # 2047 is masked out.
    sums, counts = positions.bucket_sums(losses, mask, positions_)
    assert sums.tolist() == [4.0, 2.0, 12.0, 6.0, 9.0]
    assert counts.tolist() == [2, 1, 2, 1, 1]
    summary = positions.summarise(sums, counts)
    assert math.isclose(summary["nats_per_token"], 33 / 7)
    assert math.isclose(summary["bits_per_byte"], 33 / 7 / math.log(2))
    assert summary["buckets"]["0-512"]["nats_per_token"] == 2.0
    assert math.isclose(summary["buckets"]["2048-8192"]["bits_per_byte"], 6 / math.log(2))
    assert summary["buckets"]["16384+"]["tokens"] == 1
    empty = positions.summarise(np.zeros(5), np.array([3.0, 0, 0, 0, 0]))
    assert empty["buckets"]["512-2048"] is None


def test_mqar_eval_rows_hold_one_example_then_padding():
    batch = recall.batch_of(length=64, pairs=4, vocab=300, rows=2, row_len=127)
    assert batch["input_ids"].shape == (2, 127)
    row = {k: v[0] for k, v in batch.items()}
    assert row["loss_mask"].sum() == 4 and row["loss_mask"][63:].sum() == 0
    # The example's 64 tokens give 63 targets (the 64th input's target is padding).
    assert (row["segment_ids"][:64] == 1).all() and (row["segment_ids"][64:] == 0).all()
    statement = dict(zip(row["input_ids"][:8:2], row["input_ids"][1:8:2]))
    answered = np.flatnonzero(row["loss_mask"])
    assert all(statement[row["input_ids"][i]] == row["targets"][i] for i in answered)


def test_mqar_recall_counts_top1_hits_on_answers_only():
    def score(batch):  # Right on every even row, wrong elsewhere; hits off answers ignored.
        correct = np.zeros(batch["loss_mask"].shape)
        correct[::2] = 1.0
        return np.zeros_like(correct), correct + (batch["loss_mask"] == 0)

    grid = recall.evaluate(score, seq_len=63, vocab=300, rows=4)
    assert [(r["length"], r["pairs"]) for r in grid["in_distribution"]] == \
        [(16, 1), (32, 2), (64, 4), (64, 8)]
    assert [(r["length"], r["pairs"]) for r in grid["extrapolation"]] == \
        [(128, 8), (128, 16), (256, 8), (256, 32)]
    assert all(r["recall"] == 0.5 for r in grid["in_distribution"] + grid["extrapolation"])
    assert grid["in_distribution"][3]["answers"] == 4 * 8
