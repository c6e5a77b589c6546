"""MQAR recall of a trained model, in distribution and beyond (Zoology's protocol).

Each evaluation example (``tnl_jax.data.mqar.example`` of the ``eval`` stream, never
trained on) sits alone in a row, padded after it. Recall is the share of answers whose
top-1 prediction is right (only answers carry weight). ``mqar.train_mix`` holds the
training mixture's settings; ``mqar.extrapolation_mix`` longer examples and more pairs
than any training row, reported apart: a model may recall well at the lengths it saw and fail
past them (RoPE's unseen positions, a fixed decay's horizon).
"""
from __future__ import annotations


import numpy as np

from tnl_jax.data import mqar
from tnl_jax.data.pipeline import rows_from_packed
from tnl_jax.evaluation.scorer import Scorer


def example_row(index: int, length: int, pairs: int, vocab: int, row_len: int
                ) -> dict[str, np.ndarray]:
    """Model inputs of one ``eval`` example in a row of ``row_len`` tokens (``>=
    length - 1``: the example's ``length`` tokens give ``length - 1`` inputs)."""
    doc = mqar.example("eval", index, length, pairs, vocab)
    pad = row_len + 1 - length
    return rows_from_packed({
        "tokens": np.pad(doc["tokens"], (0, pad)), "weights": np.pad(doc["weights"], (0, pad)),
        "tokens_segment_ids": np.pad(np.ones(length, np.int32), (0, pad)),
        "tokens_positions": np.pad(np.arange(length, dtype=np.int32), (0, pad))})


def batch_of(length: int, pairs: int, vocab: int, rows: int, row_len: int
             ) -> dict[str, np.ndarray]:
    """``rows`` examples of one setting, stacked: a batch like the pipeline's."""
    examples = [example_row(i, length, pairs, vocab, row_len) for i in range(rows)]
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def recall_grid(score: Scorer, settings: tuple[tuple[int, int], ...], vocab: int,
                rows: int) -> list[dict]:
    """Recall for each ``(length, pairs)`` of ``settings`` over ``rows`` examples, every
    batch ``max(length) - 1`` tokens wide (one compilation). ``score`` gives a batch's
    per-token losses and top-1 hits."""
    row_len = max(length for length, _ in settings) - 1
    results = []
    for length, pairs in settings:
        batch = batch_of(length, pairs, vocab, rows, row_len)
        _, correct = score(batch)
        mask = batch["loss_mask"]
        results.append({"length": length, "pairs": pairs, "answers": float(mask.sum()),
                        "recall": float((correct * mask).sum() / mask.sum())})
    return results


def evaluate(score: Scorer, seq_len: int, vocab: int, rows: int) -> dict[str, list[dict]]:
    """In-distribution recall of a model trained on rows of ``seq_len`` and, apart,
    recall past the training lengths (one compilation each)."""
    return {"in_distribution": recall_grid(score, mqar.train_mix(seq_len), vocab, rows),
            "extrapolation": recall_grid(score, mqar.extrapolation_mix(seq_len), vocab, rows)}
