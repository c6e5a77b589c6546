"""Documents in, packed training batches out (Grain).

    sources.py         where documents come from: stdlib, text, .npy, .array_record, mqar
    files.py           a source's files: glob (each file once), kind by suffix, fingerprint
    mqar.py            the synthetic associative-recall task
    passkey.py         passkey examples: the evaluation's, and rows to train on
    pipeline.py        packing into rows with segment ids, batches, the train/eval iterators
    iterator_state.py  the iterator's position, for run checkpoints
"""
from tnl_jax.data.iterator_state import IteratorCheckpoint
from tnl_jax.data.pipeline import (BATCH_KEYS, DataSpec, documents, eval_batches,
                                   rows_from_packed, train_batches)

__all__ = ["BATCH_KEYS", "DataSpec", "IteratorCheckpoint", "documents", "eval_batches",
           "rows_from_packed", "train_batches"]
