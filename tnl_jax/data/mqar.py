"""Multi-query associative recall (MQAR, Arora et al. 2023): a synthetic recall test.

A document lists `pairs` key-value pairs, then asks for the values of keys in a
random order: `k1 v1 k2 v2 ... kn vn  q1 a1 q2 a2 ...` with `a_i` the value that
followed `q_i`. Only the answers carry loss weight, so loss and accuracy measure
recall alone. Tokens stay inside the byte range (keys 64..127, values 128..191),
so any model with the byte vocabulary can take the task. Documents are generated
from (split, index): the same every run, and different between the two splits.
"""
from __future__ import annotations

import grain
import numpy as np

KEYS = np.arange(64, 128)
VALUES = np.arange(128, 192)
DOCUMENTS_PER_SPLIT = 1_000_000
_SPLIT_SEED = {"train": 0, "eval": 1}


def pairs_for(seq_len: int) -> int:
    """As many pairs as fit twice (statement and queries) in one row, at most 64 keys."""
    return max(1, min(len(KEYS), seq_len // 4))


def document(split: str, index: int, pairs: int) -> dict[str, np.ndarray]:
    """One MQAR example: tokens (4 * pairs) and weights (1 on each answer)."""
    rng = np.random.default_rng([_SPLIT_SEED[split], index])
    keys = rng.choice(KEYS, size=pairs, replace=False)
    values = rng.choice(VALUES, size=pairs, replace=True)
    order = rng.permutation(pairs)
    statement = np.stack([keys, values], axis=1).reshape(-1)
    queries = np.stack([keys[order], values[order]], axis=1).reshape(-1)
    tokens = np.concatenate([statement, queries]).astype(np.int32)
    weights = np.zeros_like(tokens, dtype=np.float32)
    weights[2 * pairs + 1::2] = 1.0
    return {"tokens": tokens, "weights": weights}


def documents(split: str, seq_len: int) -> grain.MapDataset:
    """A large indexed set of MQAR documents sized to fit a row of `seq_len + 1` tokens."""
    pairs = pairs_for(seq_len)
    return grain.MapDataset.range(DOCUMENTS_PER_SPLIT).map(lambda i: document(split, i, pairs))
