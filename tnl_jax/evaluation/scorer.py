"""The one contract between a model and the quality metrics: a scorer takes a batch
(the pipeline's keys: ``input_ids``, ``targets``, ``segment_ids``, ``positions``,
``loss_mask``, each ``(rows, seq_len)``) and gives its per-token losses and top-1 hits
as NumPy arrays of that shape. ``run_eval.load_scorer`` makes one from a run directory;
the tests use hand-written ones."""
from __future__ import annotations

from typing import Callable

import numpy as np

Scorer = Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]


def one_document_per_row(segment_ids: np.ndarray) -> bool:
    """Whether each row holds one document and then only padding (segment 0) at its
    end. Causal attention then needs no segment mask: padding comes after every real
    token, so no real token sees it. (A softmax layer's mask is ``(rows, T, T)``: 8 GiB
    at 8 rows of 32K tokens.)"""
    valid = segment_ids != 0
    padding_last = bool(np.all(valid[:, 1:] <= valid[:, :-1]))
    one_id = bool(np.all((segment_ids == segment_ids[:, :1]) | ~valid))
    return padding_last and one_id
