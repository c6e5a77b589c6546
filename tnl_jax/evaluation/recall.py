"""MQAR recall against the number of key-value pairs and the sequence length.

An evaluation row holds one MQAR example (``tnl_jax.data.mqar.document``) whose key-
value statement and queries are pulled apart by filler tokens (ids 0-63, neither key
nor value) so that the row is ``length`` tokens long: recall at a length is recall
across that distance, which fixed decays and a bounded state make hard. Recall is the
share of answers whose top-1 prediction is right (only answers carry weight).
"""
from __future__ import annotations

import numpy as np

from tnl_jax.data import mqar
from tnl_jax.data.pipeline import rows_from_packed

FILLER = np.arange(0, 64)


def example_row(index: int, pairs: int, length: int, row_len: int | None = None
                ) -> dict[str, np.ndarray]:
    """Model inputs of one example of ``pairs`` pairs spanning ``length`` tokens, in a
    row of ``row_len`` (default ``length``) padded after it: one row shape for every
    length, so one compilation."""
    row_len = length if row_len is None else row_len
    doc = mqar.document("eval", index, pairs)
    gap = length + 1 - len(doc["tokens"])
    if gap < 0:
        raise ValueError(f"{pairs} pairs need {4 * pairs} tokens, more than {length} + 1")
    filler = np.random.default_rng([2, index]).choice(FILLER, size=gap)
    cut = 2 * pairs  # Statement, then filler, then queries and answers.
    tokens = np.concatenate([doc["tokens"][:cut], filler, doc["tokens"][cut:]])
    weights = np.concatenate([doc["weights"][:cut], np.zeros(gap), doc["weights"][cut:]])
    pad = row_len - length
    return rows_from_packed({
        "tokens": np.pad(tokens, (0, pad)), "weights": np.pad(weights, (0, pad)),
        "tokens_segment_ids": np.pad(np.ones(length + 1, np.int32), (0, pad)),
        "tokens_positions": np.pad(np.arange(length + 1, dtype=np.int32), (0, pad))})


def batch_of(pairs: int, length: int, rows: int, row_len: int | None = None
             ) -> dict[str, np.ndarray]:
    """``rows`` example rows, stacked: a batch like the pipeline's."""
    examples = [example_row(i, pairs, length, row_len) for i in range(rows)]
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def recall_grid(score, pairs: list[int], lengths: list[int], rows: int) -> list[dict]:
    """Recall for each (pairs, length) that fits (``4 * pairs <= length + 1``), over
    ``rows`` examples: ``score`` gives per-token losses and top-1 hits of a batch."""
    results = []
    for length in lengths:
        for count in pairs:
            if 4 * count > length + 1:
                continue
            batch = batch_of(count, length, rows, max(lengths))
            _, correct = score(batch)
            mask = batch["loss_mask"]
            results.append({"pairs": count, "length": length, "answers": float(mask.sum()),
                            "recall": float((correct * mask).sum() / mask.sum())})
    return results
