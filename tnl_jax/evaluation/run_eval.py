"""Per-token losses of a run's newest weights on its held-out set, by position bucket.

The trainer's own pieces build everything (``loop.initial_params`` with ``init_from``
at the run, ``loop.data_spec``, ``steps.token_losses``), so the numbers are those of
the model that trained; one process (a quality study's models fit one device).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np

from tnl_jax import data
from tnl_jax.evaluation import positions as buckets
from tnl_jax.tokenizers import get_tokenizer
from tnl_jax.training import sharding
from tnl_jax.training.config import TrainConfig
from tnl_jax.training.loop import data_spec, initial_params, under_mesh
from tnl_jax.training.steps import token_losses

Scorer = Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]


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
        losses, correct = step(params, sharding.global_batch(batch, mesh))
        return np.asarray(jax.device_get(losses)), np.asarray(jax.device_get(correct))

    return score, mesh


def held_out(cfg: TrainConfig, score: Scorer, mesh, batches: int) -> dict:
    """Held-out nats per token, bits per byte and both by position bucket, over the
    first ``batches`` held-out batches of ``cfg`` (the run's own held-out rule)."""
    tokenizer = get_tokenizer(cfg.tokenizer, cfg.model)
    spec = data_spec(cfg, tokenizer, mesh)
    edges = buckets.EDGES
    loss_sums, counts = np.zeros(len(edges)), np.zeros(len(edges))
    for batch in data.eval_batches(spec, batches):
        losses, _ = score(batch)
        more_loss, more_count = buckets.bucket_sums(losses, batch["loss_mask"],
                                                     batch["positions"], edges)
        loss_sums, counts = loss_sums + more_loss, counts + more_count
    if cfg.tokenizer != "bytes":
        raise ValueError("bits per byte is computed for the byte tokenizer only")
    return {"batches": batches, "rows": batches * cfg.batch_size, "seq_len": cfg.seq_len,
            **buckets.summarise(loss_sums, counts)}
