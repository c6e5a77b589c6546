"""Paired bootstrap intervals for held-out bits per byte, over documents and seeds.

Two architectures are scored on the same documents (``documents.WindowScores``); the
statistic is the difference of their token-weighted bits per byte. Resampling documents
with replacement (the same draw for both sides: paired) and, when there are several
seeds, seeds with replacement (seed ``s`` of both sides together: they share the data
order) gives its spread; the interval is the percentile interval of the resampled
differences. A difference whose interval excludes 0 is more than document and seed
noise (not more than the choice of corpus).
"""
from __future__ import annotations

import math

import numpy as np


def bits_per_byte(loss: np.ndarray, count: np.ndarray) -> float:
    """Token-weighted bits per byte (byte tokens) of summed losses and counts."""
    return float(loss.sum() / (count.sum() * math.log(2)))


def paired_difference(loss_a: np.ndarray, loss_b: np.ndarray, count: np.ndarray, *,
                      draws: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """``a`` minus ``b`` in bits per byte, with a bootstrap interval.

    ``loss_a``, ``loss_b``: ``(seeds, documents)`` summed losses (nats); ``count``:
    ``(documents,)`` targets per document, the same for both (same documents). Returns
    the difference over the mean of seeds, the interval, and the relative difference
    (``a / b - 1``) with its interval.
    """
    loss_a, loss_b = np.atleast_2d(loss_a), np.atleast_2d(loss_b)
    if loss_a.shape != loss_b.shape or loss_a.shape[1] != len(count):
        raise ValueError(f"paired_difference: shapes {loss_a.shape}, {loss_b.shape} and "
                         f"{len(count)} documents do not pair")
    seeds, docs = loss_a.shape
    rng = np.random.default_rng(seed)
    seed_draw = rng.integers(0, seeds, (draws, seeds))
    doc_draw = rng.integers(0, docs, (draws, docs))
    # Per draw: mean over the drawn seeds of each side's summed loss on the drawn docs.
    sum_a = loss_a[seed_draw[:, :, None], doc_draw[:, None, :]].sum(2).mean(1)
    sum_b = loss_b[seed_draw[:, :, None], doc_draw[:, None, :]].sum(2).mean(1)
    n = count[doc_draw].sum(1) * math.log(2)
    diffs, ratios = (sum_a - sum_b) / n, sum_a / sum_b - 1
    tail = (1 - level) / 2 * 100
    total = count.sum() * math.log(2)
    mean_a, mean_b = loss_a.sum(1).mean(), loss_b.sum(1).mean()
    return {"a_bits_per_byte": float(mean_a / total), "b_bits_per_byte": float(mean_b / total),
            "difference": float((mean_a - mean_b) / total),
            "interval": [float(np.percentile(diffs, tail)), float(np.percentile(diffs, 100 - tail))],
            "relative": float(mean_a / mean_b - 1),
            "relative_interval": [float(np.percentile(ratios, tail)),
                                  float(np.percentile(ratios, 100 - tail))],
            "seeds": seeds, "documents": docs, "draws": draws, "level": level}


def seed_spread(values: list[float]) -> dict:
    """Mean, sample standard deviation and range of a per-seed figure."""
    array = np.asarray(values, np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1
            else 0.0, "min": float(array.min()), "max": float(array.max()), "n": len(array)}
