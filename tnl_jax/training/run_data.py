"""A run's data: this process's share of the rows as a ``DataSpec``, the endless
training iterator and the fixed held-out batches."""
from __future__ import annotations

import warnings
from typing import Any

from tnl_jax import data
from tnl_jax.data import files
from tnl_jax.training import sharding
from tnl_jax.training.config import TrainConfig


def data_spec(cfg: TrainConfig, tokenizer, mesh) -> data.DataSpec:
    """The data of ``cfg`` for this process: its share of the rows
    (``sharding.process_rows``), whole sequences."""
    index, count = sharding.process_rows(mesh)
    return data.DataSpec(source=cfg.data, seq_len=cfg.seq_len,
                         batch_size=cfg.batch_size // count, seed=cfg.seed,
                         tokenizer=tokenizer, eval_fraction=cfg.eval_fraction,
                         shuffle_window=cfg.shuffle_window,
                         process_index=index, process_count=count,
                         eval_source=cfg.eval_data, vocab_size=cfg.model.vocab_size,
                         eval_min_bytes=cfg.eval_min_bytes, hold_out_one=bool(cfg.eval_every),
                         passkey_rows=cfg.passkey_rows)


def data_iterators(cfg: TrainConfig, tokenizer, mesh) -> tuple[Any, list[dict]]:
    """This process's endless training iterator and the fixed held-out batches (a
    warning when ``eval_data`` reads training files: its loss is then no held-out loss)."""
    spec = data_spec(cfg, tokenizer, mesh)
    train = data.train_batches(spec)
    if cfg.eval_every and cfg.eval_data:
        shared = files.shared_files(cfg.data, cfg.eval_data)
        if shared:
            warnings.warn(f"eval_data={cfg.eval_data!r} holds {len(shared)} file(s) that "
                          f"data={cfg.data!r} trains on (e.g. {shared[0]}): its loss is not a "
                          f"held-out loss", stacklevel=2)
    return train, data.eval_batches(spec, cfg.eval_batches if cfg.eval_every else 0)
