"""Training and evaluation batches with Grain: documents in, packed rows out.

Sources give a `grain.MapDataset` of documents (1-D int32 token arrays):

- `"stdlib"`: the `.py` files of the running Python's standard library, read as
  bytes in sorted order (nothing to download); a fixed ~2 % of files, chosen by a
  hash of their path, is held out for evaluation.
- a glob of text files, tokenised by the configured tokenizer (bytes, SentencePiece
  or `tokenizers`); a hash of the path holds out files the same way;
- a glob of `.array_record` files, one document (int32 tokens) per record;
- a glob of `.npy` token streams (memory-mapped, see `sources.py`);
- `"mqar"`: the synthetic recall task of `mqar.py`.

Documents are packed into rows of `seq_len + 1` tokens with Grain's
`ConcatThenSplitIterDataset` (no padding; a long document continues in the next
row as a new segment). Inputs are the first `seq_len` tokens, targets the last:
a target counts in the loss only when it lies in the same segment as its input,
so the loss never crosses a document boundary. Segment ids are 1-based, 0 is
padding; positions restart at 0 in every segment. The iterator's position is saved
with `iterator_state.IteratorCheckpoint`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from tnl_jax.data import sources


BATCH_KEYS = ("input_ids", "targets", "segment_ids", "positions", "loss_mask")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What the pipeline needs to know, independent of the training config."""
    source: str
    seq_len: int
    batch_size: int  # Rows per process.
    seed: int
    tokenizer: Any
    eval_fraction: float = 0.02
    shuffle_window: int = 256  # Rows.
    process_index: int = 0
    process_count: int = 1


def documents(spec: DataSpec, split: str) -> grain.MapDataset:
    """This process's share of the documents of `split` ('train' or 'eval')."""
    docs = sources.open_documents(spec.source, split, spec.tokenizer,
                                       spec.eval_fraction, spec.seq_len)
    return docs[spec.process_index::spec.process_count]


def rows_from_packed(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A packed row of `seq_len + 1` tokens -> model inputs, targets and loss mask."""
    tokens = packed["tokens"]
    segments = packed["tokens_segment_ids"]
    same_document = (segments[1:] == segments[:-1]) & (segments[:-1] != 0)
    weights = packed["weights"][1:] if "weights" in packed else 1.0
    return {
        "input_ids": tokens[:-1].astype(np.int32),
        "targets": tokens[1:].astype(np.int32),
        "segment_ids": segments[:-1].astype(np.int32),
        "positions": packed["tokens_positions"][:-1].astype(np.int32),
        "loss_mask": (same_document * weights).astype(np.float32),
    }


def _packed(docs: grain.MapDataset, spec: DataSpec, shuffle_window: int = 0
            ) -> grain.IterDataset:
    """Rows of `seq_len + 1` tokens, batched.

    Text is concatenated then split (no padding); MQAR examples must stay whole,
    so they are packed first-fit, padding the rest of a row. A long document fills
    many consecutive rows; shuffling rows in a window of `shuffle_window` keeps one
    file from dominating a batch (a much noisier gradient for small batches).
    """
    features = ("tokens", "weights") if spec.source == "mqar" else ("tokens",)
    lengths = {name: spec.seq_len + 1 for name in features}
    docs = docs.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=8))
    if spec.source == "mqar":
        packed = grain.experimental.FirstFitPackIterDataset(
            docs, length_struct=lengths, num_packing_bins=spec.batch_size, shuffle_bins=False)
    else:
        packed = grain.experimental.ConcatThenSplitIterDataset(docs, length_struct=lengths)
    if shuffle_window > 1:
        packed = grain.experimental.WindowShuffleIterDataset(
            packed, window_size=shuffle_window, seed=spec.seed)
    return packed.map(rows_from_packed).batch(spec.batch_size, drop_remainder=True)


def train_batches(spec: DataSpec) -> grain.DatasetIterator:
    """An endless, checkpointable iterator of packed batches, reshuffled every epoch."""
    docs = documents(spec, "train")
    if len(docs) == 0:
        raise ValueError(f"data={spec.source!r}: no training documents for process "
                         f"{spec.process_index} of {spec.process_count}")
    return iter(_packed(docs.shuffle(seed=spec.seed).repeat(None), spec, spec.shuffle_window))


def eval_batches(spec: DataSpec, count: int) -> list[dict[str, np.ndarray]]:
    """The first `count` held-out batches, in a fixed order: the same every evaluation."""
    docs = documents(spec, "eval")
    batches = []
    for batch in _packed(docs.repeat(None) if len(docs) else docs, spec):
        batches.append(batch)
        if len(batches) == count:
            break
    return batches

