"""Held-out documents scored one by one, at chosen context windows.

The quality study's held-out set is a fixed list of documents, chosen by the run's own
rule before any result (``held_out_documents``: for the standard library, the files of
at least ``eval_min_bytes`` whose path hashes into ``eval_fraction``), split once more
by a hash into a **validation** half (for choosing the learning rate) and a **test**
half (the reported numbers): ``split_halves``.

``score_windows`` cuts each document into consecutive windows of ``window`` tokens,
each scored from its own start (the context restarts at every window), so every target
of a document is scored exactly once at every window: the same targets, different
context. From it:

- length extrapolation: the loss at windows of 2K, 8K, 32K, 64K tokens;
- context gain: the loss with a 512-token window minus the loss with the full
  document as context, by the target's position in the document; what a model gains
  from context beyond 512 tokens, on identical targets (not "later tokens are easier").

Sums are kept per document and position bucket (``WindowScores``), so that documents
can be resampled (``bootstrap``) and architectures paired document by document.
"""
from __future__ import annotations

import dataclasses
import math
import zlib
from pathlib import Path

import numpy as np

from tnl_jax.data import sources
from tnl_jax.evaluation import positions as buckets
from tnl_jax.evaluation.scorer import Scorer


@dataclasses.dataclass(frozen=True)
class Document:
    key: str  # The split's key: path relative to the source's root, then ":start".
    tokens: np.ndarray  # int32, BOS first.


@dataclasses.dataclass
class WindowScores:
    """Per document (rows) and position bucket (columns): summed loss (nats) and
    target count, at one window."""
    window: int
    keys: list[str]
    loss: np.ndarray  # (documents, buckets) float64
    count: np.ndarray  # (documents, buckets) float64
    edges: tuple[int, ...] = buckets.EDGES

    def to_dict(self) -> dict:
        return {"window": self.window, "keys": self.keys, "loss": self.loss.tolist(),
                "count": self.count.tolist(), "edges": list(self.edges)}

    @classmethod
    def from_dict(cls, d: dict) -> "WindowScores":
        return cls(d["window"], d["keys"], np.asarray(d["loss"]), np.asarray(d["count"]),
                   tuple(d["edges"]))


def held_out_documents(source: str, tokenizer, eval_fraction: float,
                       eval_min_bytes: int) -> list[Document]:
    """The held-out text documents of ``source`` (``stdlib`` or a text glob), by the
    training split's rule, in key order."""
    if source == "stdlib":
        root, paths = sources.stdlib_root(), sources.stdlib_files()
    else:
        root, paths = None, [Path(p) for p in sources.expand(source, "data")]
    kept = sources.kept_sections(paths, "eval", eval_fraction, root, eval_min_bytes)
    docs = [Document(key, sources.read_section(section, tokenizer)) for key, section in kept]
    return sorted((d for d in docs if len(d.tokens) >= 2), key=lambda d: d.key)


def is_validation(key: str) -> bool:
    """Half of the held-out documents, by a hash of the key: the validation half."""
    return zlib.crc32(f"validation:{key}".encode()) % 2 == 0


def split_halves(docs: list[Document]) -> tuple[list[Document], list[Document]]:
    """(validation, test): disjoint, fixed by the keys alone."""
    return ([d for d in docs if is_validation(d.key)],
            [d for d in docs if not is_validation(d.key)])


def window_rows(tokens: np.ndarray, window: int) -> list[tuple[int, np.ndarray]]:
    """``(start, piece)`` of consecutive windows: ``piece`` holds tokens ``start`` to
    ``start + window`` (``window + 1`` tokens, fewer at the end), so window ``i`` scores
    targets ``start + 1`` to ``start + window``: each target once."""
    return [(start, tokens[start:start + window + 1])
            for start in range(0, len(tokens) - 1, window)]


def _batch(pieces: list[np.ndarray], window: int, rows: int) -> dict[str, np.ndarray]:
    """A ``(rows, window)`` batch of pieces, padded (mask 0) after each and below."""
    batch = {"input_ids": np.zeros((rows, window), np.int32),
             "targets": np.zeros((rows, window), np.int32),
             "segment_ids": np.zeros((rows, window), np.int32),
             "positions": np.zeros((rows, window), np.int32),
             "loss_mask": np.zeros((rows, window), np.float32)}
    for row, piece in enumerate(pieces):
        n = len(piece) - 1
        batch["input_ids"][row, :n] = piece[:-1]
        batch["targets"][row, :n] = piece[1:]
        batch["segment_ids"][row, :n] = 1
        batch["positions"][row, :n] = np.arange(n)
        batch["loss_mask"][row, :n] = 1.0
    return batch


def score_windows(score: Scorer, docs: list[Document], window: int, batch_tokens: int,
                  edges: tuple[int, ...] = buckets.EDGES) -> WindowScores:
    """Every document's targets scored at ``window``, ``max(1, batch_tokens // window)``
    rows per batch (one compilation per window). A target's bucket is its position in
    the document (the input token's, as ``positions.bucket_sums``)."""
    rows = max(1, batch_tokens // window)
    pieces = [(i, start, piece) for i, d in enumerate(docs)
              for start, piece in window_rows(d.tokens, window)]
    loss = np.zeros((len(docs), len(edges)))
    count = np.zeros((len(docs), len(edges)))
    for first in range(0, len(pieces), rows):
        part = pieces[first:first + rows]
        batch = _batch([p for _, _, p in part], window, rows)
        losses, _ = score(batch)
        for row, (doc, start, piece) in enumerate(part):
            n = len(piece) - 1
            more_loss, more_count = buckets.bucket_sums(
                losses[row, :n], np.ones(n), start + np.arange(n), edges)
            loss[doc] += more_loss
            count[doc] += more_count
    return WindowScores(window, [d.key for d in docs], loss, count, tuple(edges))


def summary(scores: WindowScores, bytes_per_token: float = 1.0) -> dict:
    """Bits per byte over all targets and by position bucket."""
    return buckets.summarise(scores.loss.sum(0), scores.count.sum(0), bytes_per_token,
                             scores.edges)


def context_gain(short: WindowScores, full: WindowScores) -> dict[str, float | None]:
    """Per position bucket: bits per byte at the short window minus at the full one, on
    the same targets (positive: the model uses the far context)."""
    if short.keys != full.keys or not np.array_equal(short.count, full.count):
        raise ValueError("context_gain compares scores of the same documents and targets")
    names = buckets.bucket_names(full.edges)
    out = {}
    for column, name in enumerate(names):
        n = full.count[:, column].sum()
        out[name] = None if n == 0 else float(
            (short.loss[:, column].sum() - full.loss[:, column].sum()) / (n * math.log(2)))
    return out
