"""Loss by position inside a document, and bits per byte: the numbers where long
context shows (a model that uses far context gains most in the late buckets).

A position is the batch's ``positions`` of the *input* token (0-based, restarting at
every segment): the loss there predicts the next token from ``position + 1`` tokens
of the same document, all the context the model can use.
"""
from __future__ import annotations

import math

import numpy as np

# Bucket edges (tokens): 0-512, 512-2K, 2K-8K, 8K-16K; positions past the last edge
# fall in a last open bucket ("16384+") so that no target is dropped silently.
EDGES = (0, 512, 2048, 8192, 16384)


def bucket_names(edges: tuple[int, ...] = EDGES) -> list[str]:
    """``"0-512"``, ..., and ``"16384+"`` for the open bucket past the last edge."""
    return [f"{a}-{b}" for a, b in zip(edges, edges[1:])] + [f"{edges[-1]}+"]


def bucket_sums(losses: np.ndarray, mask: np.ndarray, positions: np.ndarray,
                edges: tuple[int, ...] = EDGES) -> tuple[np.ndarray, np.ndarray]:
    """Summed loss and summed mask weight per bucket (``len(edges)`` buckets, the last
    open), over tokens of any shape: sums, so that batches and processes add up."""
    index = np.searchsorted(np.asarray(edges[1:]), np.asarray(positions), side="right")
    weights = np.asarray(mask, np.float64).ravel()
    loss = np.asarray(losses, np.float64).ravel() * weights
    return (np.bincount(index.ravel(), loss, minlength=len(edges)),
            np.bincount(index.ravel(), weights, minlength=len(edges)))


def bits_per_byte(loss_nats: float, tokens: float, num_bytes: float) -> float:
    """Mean bits per byte of ``tokens`` targets whose summed loss is ``loss_nats``
    and which encode ``num_bytes`` bytes (the byte tokenizer: one byte per target)."""
    return loss_nats / (num_bytes * math.log(2)) if num_bytes else math.nan


def summarise(loss_sums: np.ndarray, counts: np.ndarray, bytes_per_token: float = 1.0,
              edges: tuple[int, ...] = EDGES) -> dict:
    """Overall and per-bucket nats per token and bits per byte (``None`` for an empty
    bucket: a row length below its start)."""
    total, count = float(np.sum(loss_sums)), float(np.sum(counts))
    buckets = {}
    for name, loss, n in zip(bucket_names(edges), loss_sums, counts):
        buckets[name] = None if n == 0 else {
            "tokens": float(n), "nats_per_token": float(loss / n),
            "bits_per_byte": bits_per_byte(float(loss), float(n), float(n) * bytes_per_token)}
    return {"tokens": count, "nats_per_token": total / count if count else math.nan,
            "bits_per_byte": bits_per_byte(total, count, count * bytes_per_token),
            "buckets": buckets}
