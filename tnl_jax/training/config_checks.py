"""Range checks of every training config key, in one place.

``config.check(cfg)`` raises the ``problems`` found here. It runs when a config is
loaded (``config.load``) and again when training starts, before anything compiles: a
bad number is named with its key, its value and what is allowed, instead of failing
after minutes of compilation or, worse, training something else (``grad_clip=-1``
meaning "no clipping", ``lr=.nan`` a NaN run). Every problem of a config is listed in
one error. The checks that need the devices (the
mesh's size, the processes' rows) are ``mesh_problems`` and ``batch_split_problems``,
called again by ``training.sharding`` once the mesh is known.
"""
from __future__ import annotations

import math
from typing import Any

from tnl_jax.data.passkey import MIN_EXAMPLE_TOKENS
from tnl_jax.partitioning import MESH_AXES
from tnl_jax.range_checks import INT32_MAX, integer, number, text
from tnl_jax.training import losses, tensorboard

SEED_LIMIT = 2**32  # Grain's shuffles take seeds in [0, 2**32).


def optimizer_problems(*, lr: Any, warmup: Any, steps: Any, min_lr_ratio: Any,
                       weight_decay: Any, beta1: Any, beta2: Any, grad_clip: Any) -> list[str]:
    """Every AdamW and schedule number finite and in range (``optim.adamw`` checks the
    same arguments, under the same names)."""
    return [
        *number("lr", lr, 0, low_open=True, meaning=" (the peak learning rate)"),
        *integer("warmup", warmup, 0, " (steps of linear warmup; the step counter is int32)",
                 INT32_MAX),
        *integer("steps", steps, 1, " (optimizer steps; the step counter is int32)",
                 INT32_MAX),
        *number("min_lr_ratio", min_lr_ratio, 0, 1, high_open=False,
                meaning=" (the final learning rate as a fraction of lr)"),
        *number("weight_decay", weight_decay, 0),
        *number("beta1", beta1, 0, 1),
        *number("beta2", beta2, 0, 1),
        *number("grad_clip", grad_clip, 0, meaning=" (the largest global gradient norm; 0: "
                "no clipping)"),
    ]


def mesh_problems(sizes: dict[str, Any]) -> list[str]:
    """Mesh axis sizes (``MESH_AXES`` names): each >= 1, or -1 for the devices the
    others leave, at most one -1."""
    found = []
    for axis, size in sizes.items():
        if not (isinstance(size, int) and not isinstance(size, bool) and (size >= 1 or size == -1)):
            found.append(f"mesh.{axis}={size!r}: an axis size must be positive or -1 (the "
                         f"devices the other axes leave)")
    if list(sizes.values()).count(-1) > 1:
        found.append(f"mesh {sizes}: at most one axis may be -1")
    return found


def batch_split_problems(batch_size: int, seq_len: int, grad_accum: int, *, batch_shards: int,
                         seq_shards: int, process_groups: int = 1) -> list[str]:
    """Whether the batch splits evenly: rows over ``batch_shards`` devices (mesh.data x
    mesh.fsdp) and ``process_groups`` x ``grad_accum`` parts, the sequence over
    ``seq_shards`` (mesh.context)."""
    found = []
    if batch_size % batch_shards:
        found.append(f"batch_size={batch_size} must divide by mesh.data x mesh.fsdp "
                     f"({batch_shards})")
    if seq_len % seq_shards:
        found.append(f"seq_len={seq_len} must divide by mesh.context ({seq_shards})")
    if batch_size % (process_groups * grad_accum):
        parts = (f"grad_accum ({grad_accum})" if process_groups == 1 else
                 f"the processes' row groups x grad_accum ({process_groups} x {grad_accum})")
        found.append(f"batch_size={batch_size} must divide by {parts}")
    return found


def _known_product(sizes: list[int]) -> int:
    """The product of the sizes already known (not -1): a divisor of the final product."""
    return math.prod(s for s in sizes if s >= 1)


def _run_problems(cfg: Any) -> list[str]:
    """Run length, bookkeeping, evaluation and the sample."""
    found = [
        *text("run_dir", cfg.run_dir),
        *integer("checkpoint_every", cfg.checkpoint_every, 1, " (steps between checkpoints)"),
        *integer("keep_checkpoints", cfg.keep_checkpoints, 1, " (checkpoints kept)"),
        *integer("log_every", cfg.log_every, 1, " (steps between metrics lines)"),
        *integer("eval_every", cfg.eval_every, 0, " (steps between evaluations; 0: none)"),
        *integer("eval_batches", cfg.eval_batches, 0),
        *integer("seed", cfg.seed, 0),
        *integer("sample_tokens", cfg.sample_tokens, 0, " (0: no sample)"),
        *text("init_from", cfg.init_from, optional=True, meaning=" (a run or checkpoint "
              "directory)"),
        *tensorboard.setting_problems(cfg.tensorboard),
    ]
    if isinstance(cfg.seed, int) and cfg.seed >= SEED_LIMIT:
        found.append(f"seed={cfg.seed}: expected an integer below 2**32")
    if cfg.eval_every and cfg.eval_batches == 0:
        found.append(f"eval_batches=0 with eval_every={cfg.eval_every}: an evaluation needs "
                     f"at least 1 batch (or set eval_every=0 for none)")
    if cfg.sample_tokens and not cfg.sample_prompt:
        found.append(f"sample_prompt={cfg.sample_prompt!r}: the sample needs a prompt "
                     f"(or set sample_tokens=0 for no sample)")
    return found


def _batch_problems(cfg: Any) -> list[str]:
    """The batch, the mesh, and whether the mesh's known axes split the batch."""
    found = [
        *integer("batch_size", cfg.batch_size, 1, " (sequences per step)"),
        *integer("seq_len", cfg.seq_len, 1, " (tokens per sequence)"),
        *integer("grad_accum", cfg.grad_accum, 1, " (parts of the batch per step)"),
    ]
    sizes = {axis: getattr(cfg.mesh, axis) for axis in MESH_AXES}
    found += mesh_problems(sizes)
    if found:
        return found
    # Only the axes already known: -1 takes a size that only the device count gives.
    return batch_split_problems(
        cfg.batch_size, cfg.seq_len, cfg.grad_accum,
        batch_shards=_known_product([sizes["data"], sizes["fsdp"]]),
        seq_shards=_known_product([sizes["context"]]))


def _data_problems(cfg: Any) -> list[str]:
    """The data sources, their split and shuffle, the loss's chunks."""
    found = [
        *integer("shuffle_window", cfg.shuffle_window, 0, " (rows; 0 or 1: no shuffle)"),
        *number("eval_fraction", cfg.eval_fraction, 0, 1,
                meaning=" (the share of documents held out)"),
        *integer("eval_min_bytes", cfg.eval_min_bytes, 0, " (bytes; 0: any file)"),
        *text("data", cfg.data), *text("tokenizer", cfg.tokenizer),
        *text("eval_data", cfg.eval_data, optional=True, meaning=" (held-out files, used whole)"),
        *number("passkey_rows", cfg.passkey_rows, 0, 1,
                meaning=" (the share of training rows that are passkey examples)"),
    ]
    if cfg.passkey_rows and (cfg.data == "mqar" or cfg.tokenizer != "bytes"):
        found.append(f"passkey_rows={cfg.passkey_rows!r} hides passkeys in text read as bytes: "
                     f"it needs a text data source and tokenizer='bytes' (got "
                     f"data={cfg.data!r}, tokenizer={cfg.tokenizer!r})")
    if cfg.passkey_rows and isinstance(cfg.seq_len, int) and cfg.seq_len < MIN_EXAMPLE_TOKENS:
        found.append(f"passkey_rows={cfg.passkey_rows!r} needs rows of at least "
                     f"{MIN_EXAMPLE_TOKENS} tokens (a passkey example's), got seq_len={cfg.seq_len}")
    for check, value in ((losses.check_setting, cfg.loss_chunk_tokens),
                         (losses.check_kernel, cfg.loss_kernel)):
        try:
            check(value)
        except (ValueError, TypeError) as error:
            found.append(str(error))
    return found + grad_reduce_problems(cfg.grad_reduce_dtype)


# The dtypes a step may reduce its gradients in across devices (``grad_reduce_dtype``).
GRAD_REDUCE_DTYPES = ("float32", "bfloat16")


def grad_reduce_problems(value) -> list[str]:
    """``[]``, or the one problem of a ``grad_reduce_dtype`` setting."""
    if value in GRAD_REDUCE_DTYPES:
        return []
    return [f"grad_reduce_dtype={value!r}: expected one of {', '.join(GRAD_REDUCE_DTYPES)}"]


def problems(cfg: Any) -> list[str]:
    """Every problem of ``cfg`` (a ``config.TrainConfig``; the model's keys are checked by
    ``ModelConfig`` itself), one line each (``[]``: none)."""
    return [*_run_problems(cfg), *_batch_problems(cfg), *_data_problems(cfg),
            *optimizer_problems(
                lr=cfg.lr, warmup=cfg.warmup, steps=cfg.steps, min_lr_ratio=cfg.min_lr_ratio,
                weight_decay=cfg.weight_decay, beta1=cfg.beta1, beta2=cfg.beta2,
                grad_clip=cfg.grad_clip)]


def raise_problems(found: list[str], what: str = "training config") -> None:
    """One ``ValueError`` listing ``found``, if any."""
    if len(found) == 1:
        raise ValueError(f"{what}: {found[0]}")
    if found:
        raise ValueError(f"{what}: {len(found)} problems:\n  " + "\n  ".join(found))
