"""Passkey retrieval: a number hidden at a chosen depth of a long filler, asked for at
the end; accuracy by length and depth.

The study's models read Python source as bytes, so the needle and the question are
Python too: the line ``PASS_KEY = 58213`` is put at a line break near ``depth`` of
the filler (held-out source files, read end to end), and the row ends with the
needle's own prefix again, ``PASS_KEY = ``, then the five digits, the only scored
targets. As in Mohtashami & Jaggi's passkey ("The pass key is ... What is the pass
key? The pass key is"), the question ends with the words that preceded the key, so
the answer is a copy of what followed them: a model that finds the needle can
answer. (The first form, ``assert PASS_KEY == ``, matched the needle only up to
``PASS_KEY =``; every model, softmax at 2K included, scored about 0 digits right, below
the 1 in 10 of a guessed digit: they did not read it as a question. Results carry
``QUESTION``, so a report never mixes the two.) An example is right when all five
digits are the model's top-1 predictions (teacher forced); chance is 1e-5. Filler
offsets and keys are drawn from (length, depth, index): every model sees the same rows.
"""
from __future__ import annotations

import numpy as np

from tnl_jax.data.passkey import DIGITS, PREFIX, QUESTION, example_bytes, needle
from tnl_jax.evaluation.scorer import Scorer

__all__ = ["DEPTHS", "DIGITS", "PREFIX", "QUESTION", "accuracy", "batch_of", "example_bytes",
           "needle"]

DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)


def batch_of(filler: bytes, length: int, depth: float, rows: int,
             bos_id: int | None) -> dict[str, np.ndarray]:
    """``rows`` examples as a model batch (byte ids, BOS first when the tokenizer has
    one); only the answer's digits carry loss weight."""
    width = length + (bos_id is not None) - 1
    batch = {k: np.zeros((rows, width), np.int32)
             for k in ("input_ids", "targets", "segment_ids", "positions")}
    batch["loss_mask"] = np.zeros((rows, width), np.float32)
    for row in range(rows):
        text, answer_at = example_bytes(filler, length, depth, row)
        ids = np.frombuffer(text, np.uint8).astype(np.int32)
        if bos_id is not None:
            ids, answer_at = np.concatenate([[bos_id], ids]), answer_at + 1
        batch["input_ids"][row], batch["targets"][row] = ids[:-1], ids[1:]
        batch["segment_ids"][row] = 1
        batch["positions"][row] = np.arange(width)
        batch["loss_mask"][row, answer_at - 1:answer_at - 1 + DIGITS] = 1.0
    return batch


def accuracy(score: Scorer, filler: bytes, lengths: tuple[int, ...], rows: int,
             bos_id: int | None, depths: tuple[float, ...] = DEPTHS) -> list[dict]:
    """Per (length, depth): the share of examples with every digit right, and the
    share of digits right."""
    results = []
    for length in lengths:
        for depth in depths:
            batch = batch_of(filler, length, depth, rows, bos_id)
            _, correct = score(batch)
            hits = (np.asarray(correct) * batch["loss_mask"]).sum(1)
            results.append({"length": length, "depth": depth, "rows": rows,
                            "question": QUESTION,
                            "accuracy": float(np.mean(hits == DIGITS)),
                            "digit_accuracy": float(hits.sum() / (rows * DIGITS))})
    return results
