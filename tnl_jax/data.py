"""Training and evaluation batches with Grain: documents in, packed rows out.

Sources give a `grain.MapDataset` of documents (1-D int32 token arrays):

- `"stdlib"`: the `.py` files of the running Python's standard library, read as
  bytes in sorted order (nothing to download); a fixed ~2 % of files, chosen by a
  hash of their path, is held out for evaluation.
- a glob of text files, tokenised by the configured tokenizer (bytes, SentencePiece
  or `tokenizers`); a hash of the path holds out files the same way;
- a glob of `.array_record` files, one document (int32 tokens) per record;
- a glob of `.npy` token streams (memory-mapped, see `data_sources.py`);
- `"mqar"`: the synthetic recall task of `data_mqar.py`.

Documents are packed into rows of `seq_len + 1` tokens with Grain's
`ConcatThenSplitIterDataset` (no padding; a long document continues in the next
row as a new segment). Inputs are the first `seq_len` tokens, targets the last:
a target counts in the loss only when it lies in the same segment as its input,
so the loss never crosses a document boundary. Segment ids are 1-based, 0 is
padding; positions restart at 0 in every segment.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import grain
import numpy as np

from tnl_jax import data_sources


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
    docs = data_sources.open_documents(spec.source, split, spec.tokenizer,
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


def _restore_tuples(state: Any) -> Any:
    """Undoes JSON's tuple -> list on Grain's ConcatThenSplit state.

    grain 0.2.18 compares `remainder_slices` entries with the tuple `(-1, -1)`;
    after a JSON round trip they are lists, the comparison fails, and a restored
    iterator reads one document too many. (Found by this package's resume test.)
    """
    if isinstance(state, dict):
        return {k: ({f: tuple(v) for f, v in value.items()} if k == "remainder_slices"
                    else _restore_tuples(value)) for k, value in state.items()}
    if isinstance(state, list):
        return [_restore_tuples(v) for v in state]
    return state


class IteratorCheckpoint:
    """What `grain.checkpoint.CheckpointSave/Restore` see of the training iterator.

    Saving: the state is captured when this object is made, because Orbax may
    write it after the loop has moved on. Restoring: the JSON is repaired (see
    `_restore_tuples`) before the live iterator is moved.
    """

    def __init__(self, iterator: grain.DatasetIterator):
        self._iterator = iterator
        self._state = json.dumps(iterator.get_state(), indent=1).encode()

    def get_state(self) -> bytes:
        return self._state

    def set_state(self, state: bytes) -> None:
        self._iterator.set_state(_restore_tuples(json.loads(state)))

    def start_prefetch(self) -> None:
        """Called by Grain's handler after a restore; the iterator prefetches on its own."""
