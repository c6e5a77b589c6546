"""A scorer of a run's newest weights: per-token losses and top-1 hits of any batch
(``documents``, ``passkey`` and ``recall`` build the batches).

The trainer's own pieces build everything (``loop.initial_params`` with ``init_from``
at the run, ``steps.token_losses``), so the numbers are those of
the model that trained; one process (a quality study's models fit one device).
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from tnl_jax.evaluation.scorer import Scorer, one_document_per_row
from tnl_jax.training import sharding
from tnl_jax.training.config import TrainConfig
from tnl_jax.training.loop import initial_params, under_mesh
from tnl_jax.training.steps import token_losses


def load_scorer(cfg: TrainConfig) -> tuple[Scorer, object]:
    """A function from a host batch to its per-token losses and top-1 hits (NumPy,
    (rows, seq_len)), with the newest weights of ``cfg.run_dir``; and the mesh."""
    if jax.process_count() != 1:
        raise ValueError("the quality metrics run in one process")
    mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.context, cfg.mesh.tensor)
    trained = dataclasses.replace(cfg, init_from=cfg.run_dir)
    graphdef, params, rest, _ = initial_params(trained, mesh)
    step = under_mesh(jax.jit(lambda p, batch: token_losses(
        graphdef, p, rest, batch, cfg.loss_chunk_tokens)), mesh)

    def score(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if one_document_per_row(batch["segment_ids"]):  # No (T, T) segment mask needed.
            batch = {k: v for k, v in batch.items() if k != "segment_ids"}
        losses, correct = step(params, sharding.global_batch(batch, mesh))
        return np.asarray(jax.device_get(losses)), np.asarray(jax.device_get(correct))

    return score, mesh
