"""The one contract between a model and the quality metrics: a scorer takes a batch
(the pipeline's keys: ``input_ids``, ``targets``, ``segment_ids``, ``positions``,
``loss_mask``, each ``(rows, seq_len)``) and gives its per-token losses and top-1 hits
as NumPy arrays of that shape. ``run_eval.load_scorer`` makes one from a run directory;
the tests use hand-written ones."""
from __future__ import annotations

from typing import Callable

import numpy as np

Scorer = Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]
