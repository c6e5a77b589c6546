"""Training and evaluation batches with Grain: documents in, packed rows out.

Sources give a `grain.MapDataset` of documents (1-D int32 token arrays):

- `"stdlib"`: the `.py` files of the running Python's standard library, read as
  bytes in sorted order (nothing to download); a fixed ~2 % of files, chosen by a
  hash of their path, is held out for evaluation (unless `eval_source` names other
  files: those are held out whole).
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

`passkey_rows` > 0 mixes rows of passkey examples (`passkey.py`: a number hidden in
the training text, asked for at the end; each row examples of one length, from 128
tokens to the row's, one after another, only the answers in the loss, weighing as much
as a text row) into the
training rows at that share; the held-out batches stay the source's own.

Documents of fewer than two tokens are skipped (they hold no target). A split with no
document left is an error at start, never an endless search or a loss of 0.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from tnl_jax.data import passkey, sources


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
    eval_source: str | None = None  # Held-out documents from other files, used whole.
    vocab_size: int | None = None  # Token ids must lie below it (None: the tokenizer's).
    eval_min_bytes: int = 0  # Only text files at least this big are held out (long documents).
    # A small corpus whose hash holds out nothing holds out one document (sources._keep);
    # off when nothing is evaluated, so that then every document trains.
    hold_out_one: bool = True
    passkey_rows: float = 0.0  # Share of training rows that are passkey examples.


def documents(spec: DataSpec, split: str, key: str = "data") -> grain.MapDataset:
    """This process's share of the documents of `split` ('train', 'eval' or 'all');
    `key` names the source in errors."""
    docs = sources.open_documents(spec.source, split, spec.tokenizer, spec.eval_fraction,
                                  spec.seq_len, spec.vocab_size, key, spec.eval_min_bytes,
                                  spec.hold_out_one)
    return docs[spec.process_index::spec.process_count]


def require_documents(docs: grain.MapDataset, spec: DataSpec, problem: str) -> None:
    """A ``ValueError`` saying ``problem`` unless ``docs`` holds a document with targets
    (read in order until one is found: one read for any sane corpus)."""
    if any(docs[i] is not None for i in range(len(docs))):
        return
    share = (f" (the share of process {spec.process_index} of {spec.process_count})"
             if spec.process_count > 1 else "")
    raise ValueError(problem + share)


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


def _packed(docs: grain.MapDataset, spec: DataSpec, shuffle_window: int = 0,
            extra_rows: grain.MapDataset | None = None) -> grain.IterDataset:
    """Rows of `seq_len + 1` tokens, batched; `extra_rows` (rows already made, such as
    passkey examples) are mixed in as `spec.passkey_rows` of the rows.

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
    if extra_rows is not None:  # Text rows weigh every target 1 (`rows_from_packed`).
        packed = packed.map(lambda row: {**row, "weights": np.ones(spec.seq_len + 1, np.float32)})
        packed = grain.IterDataset.mix(
            [packed, extra_rows.to_iter_dataset()], [1 - spec.passkey_rows, spec.passkey_rows])
    if shuffle_window > 1:
        packed = grain.experimental.WindowShuffleIterDataset(
            packed, window_size=shuffle_window, seed=spec.seed)
    return packed.map(rows_from_packed).batch(spec.batch_size, drop_remainder=True)


def train_batches(spec: DataSpec) -> grain.DatasetIterator:
    """An endless, checkpointable iterator of packed batches, reshuffled every epoch."""
    docs = documents(spec, "train")
    require_documents(docs, spec, (
        f"data={spec.source!r}: no training document with at least {sources.MIN_TOKENS} tokens "
        f"(empty documents are skipped; eval_fraction={spec.eval_fraction} of the documents "
        f"is held out)"))
    extra = passkey_training_rows(docs, spec) if spec.passkey_rows else None
    return iter(_packed(docs.shuffle(seed=spec.seed).repeat(None), spec, spec.shuffle_window,
                        extra))


def passkey_training_rows(docs: grain.MapDataset, spec: DataSpec) -> grain.MapDataset:
    """Rows of passkey examples made from this process's training documents
    (``passkey.training_rows``): the rows ``spec.passkey_rows`` mixes in. Needs the
    bytes tokenizer."""
    if not hasattr(spec.tokenizer, "encode_bytes"):
        raise ValueError(f"passkey_rows={spec.passkey_rows} makes passkey examples from the "
                         f"training text's bytes: it needs tokenizer=bytes")
    bos_id = getattr(spec.tokenizer, "bos_id", None)
    filler = passkey.filler_of(docs, bos_id, spec.seed)
    if len(filler) < spec.seq_len:  # The longest example's filler must fit in it.
        raise ValueError(f"passkey_rows={spec.passkey_rows} hides passkeys in the training "
                         f"text of data={spec.source!r}: it has {len(filler)} bytes, fewer than a "
                         f"{spec.seq_len}-token example's filler; use more text or a "
                         f"shorter seq_len")
    return passkey.training_rows(filler, spec.seq_len, bos_id, spec.seed)


def held_out_documents(spec: DataSpec) -> tuple[grain.MapDataset, DataSpec]:
    """The held-out documents and the spec that reads them: all of `eval_source` when
    given, else the `eval_fraction` split of `source`. None is an error: an evaluation
    of nothing would report a held-out loss of 0."""
    if spec.eval_source:
        spec = dataclasses.replace(spec, source=spec.eval_source)
        docs = documents(spec, "all", key="eval_data")
        require_documents(docs, spec, f"eval_data={spec.source!r}: no document with at least "
                                      f"{sources.MIN_TOKENS} tokens (empty documents are skipped)")
        return docs, spec
    docs = documents(spec, "eval")
    require_documents(docs, spec, (
        f"no held-out set: data={spec.source!r} holds out no document with at least "
        f"{sources.MIN_TOKENS} tokens at eval_fraction={spec.eval_fraction}; name held-out "
        f"files with eval_data=..., raise eval_fraction, or set eval_every=0 for no evaluation"))
    return docs, spec


def eval_batches(spec: DataSpec, count: int) -> list[dict[str, np.ndarray]]:
    """The first `count` held-out batches (`held_out_documents`), in a fixed order: the
    same every evaluation. `count=0` (no evaluation) reads nothing and gives `[]`."""
    if count == 0:
        return []
    docs, spec = held_out_documents(spec)
    batches = []
    for batch in _packed(docs.repeat(None), spec):
        batches.append(batch)
        if len(batches) == count:
            break
    return batches
