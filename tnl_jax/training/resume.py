"""Resuming a run: only from a finite checkpoint, and only under its own config.

A checkpoint's parameters, optimizer state and data position mean something only
under the config that wrote them. A resume that changed the model, the tokenizer, the
data stream or the optimizer state's structure would continue another run from this
one's numbers, so each such change is an error naming the key with its saved and new
value, raised before anything is compiled or written. The changes listed in
``SAFE_TO_CHANGE`` only change how the run goes on (its length, cadence, logging,
evaluation, optimizer settings, mesh) and are printed. A key in neither list (a new
one, say) must match: it is not known to be safe. A checkpoint holding a non-finite
value (written before the train step checked its state) is passed over like an
unreadable one (``RunCheckpoints.restore_latest``).
"""
from __future__ import annotations

from typing import Any

import grain
import jax

from tnl_jax.checkpoints import run_dir as run_layout
from tnl_jax.data import files
from tnl_jax.training import config as train_config
from tnl_jax.training import start
from tnl_jax.training.divergence import count_non_finite
from tnl_jax.training.run_checkpoints import RunCheckpoints

SAFE_TO_CHANGE = frozenset({
    "run_dir",  # The same directory, reached by another path (or copied).
    "steps", "checkpoint_every", "keep_checkpoints", "log_every", "tensorboard", "eval_every",
    "eval_batches", "eval_data", "sample_prompt", "sample_tokens",
    "init_from",  # Read at a fresh start only.
    "lr", "min_lr_ratio", "warmup", "weight_decay", "beta1", "beta2",
    "grad_clip",  # While it stays on (> 0) or off: see _grad_clip_switched.
    "grad_accum", "loss_chunk_tokens", "loss_kernel",  # The same batch, split otherwise.
    "grad_reduce_dtype",  # The same gradients, reduced at another precision.
    "mesh.data", "mesh.fsdp", "mesh.context", "mesh.tensor",  # Resharded on restore.
    # How the model is run, not what it computes: the parameters mean the same.
    "model.remat", "model.attention_backend", "model.chunk_size", "model.scan_unroll",
    "model.norm_kernel",
})
_DATA_STREAM = frozenset({"data", "seq_len", "batch_size", "seed", "shuffle_window",
                          "eval_fraction", "eval_min_bytes", "passkey_rows"})
# The saved config's records of the files behind two keys, beside the keys: the data
# files' fingerprint (``files.fingerprint``) and the tokenizer file's digest. A changed
# file under the same key is refused; a changed key naming the same files (another path
# to them) is safe.
DATA_FILES, TOKENIZER_FILE = "data_files", "tokenizer_file"
RECORDS = {"data": DATA_FILES, "tokenizer": TOKENIZER_FILE}


def run_config(cfg: train_config.TrainConfig) -> dict[str, Any]:
    """What a checkpoint saves of its run: the config's keys, the fingerprint of the
    training data's files (names, sizes, hashes) and the tokenizer file's digest."""
    tokenizer = start.tokenizer_file(cfg.tokenizer, cfg.run_dir)
    return {**train_config.to_dict(cfg), DATA_FILES: files.fingerprint(cfg.data),
            TOKENIZER_FILE: files.file_digest(str(tokenizer)) if tokenizer else "bytes"}


def _same_files(key: str, saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether both configs record the files behind ``key`` and they are the same."""
    record = RECORDS.get(key)
    return bool(record and saved.get(record) and saved.get(record) == current.get(record))


def _data_files_changed(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The refusal line for data files that changed under the same ``data`` (None: the
    same files, or a checkpoint saved before fingerprints were kept)."""
    if not isinstance(saved.get(DATA_FILES), dict) or DATA_FILES not in current:
        return None
    changes = files.describe_changes(saved[DATA_FILES], current[DATA_FILES])
    return (f"  data={current.get('data')!r}: the files changed since the checkpoint: "
            f"{changes}: another data stream: the saved data position is not a position "
            f"in it") if changes else None


class RunConfigChanged(ValueError):
    """The config differs from the one a run's checkpoint was saved with, in a key
    that changes what the saved numbers mean."""


def _grad_clip_switched(old: Any, new: Any) -> bool:
    """Clipping adds an element to the optimizer's chain: on <-> off changes its state."""
    return (float(old or 0) > 0) != (float(new or 0) > 0)


def flat(config: dict[str, Any]) -> dict[str, Any]:
    """``{"model.use_decay": True, ...}`` of a nested config dict (lists are values)."""
    leaves = jax.tree_util.tree_leaves_with_path(
        config, is_leaf=lambda x: x is None or isinstance(x, list))
    return {".".join(str(key.key) for key in path): value for path, value in leaves}


def why_not(key: str, old: Any, new: Any) -> str | None:
    """Why changing ``key`` from ``old`` to ``new`` cannot resume a run; None if it can."""
    if key == "grad_clip" and _grad_clip_switched(old, new):
        return "turns gradient clipping on or off: another optimizer state"
    if key in SAFE_TO_CHANGE:
        return None
    if key.startswith("model.") or key == "tokenizer":
        return "another model: the saved parameters mean something else"
    if key in _DATA_STREAM:
        return "another data stream: the saved data position is not a position in it"
    return "not known to be safe to change on resume"


def check(saved: dict[str, Any], current: dict[str, Any], where: str) -> list[str]:
    """The safe changes from ``saved`` to ``current`` (nested config dicts), as
    ``"key: old -> new"``; ``RunConfigChanged`` naming every other change. ``where``
    names the checkpoint (``"<run_dir> at step <n>"``). A key the saved config lacks
    (written before the key existed) is compared as its default. ``data`` or
    ``tokenizer`` changed to name the same files (``RECORDS``) is a safe change."""
    data_files = _data_files_changed(saved, current)
    same_files = {key for key in RECORDS if _same_files(key, saved, current)}
    saved, current = ({k: v for k, v in c.items() if k not in RECORDS.values()}
                      for c in (saved, current))
    new = flat(current)
    old = {**flat(train_config.to_dict(train_config.TrainConfig())), **flat(saved)}
    changed = sorted(k for k in new if old.get(k) != new[k])
    refused = [(k, reason) for k in changed
               if k not in same_files and (reason := why_not(k, old.get(k), new[k]))]
    lines = [f"  {k}: {old.get(k)!r} (saved) -> {new[k]!r} (now): {reason}"
             for k, reason in refused]
    if data_files and "data" not in changed:
        refused.append(("data (its files)", ""))
        lines.append(data_files)
    if refused:
        raise RunConfigChanged(
            f"cannot resume {where}: the config differs from the checkpoint's in "
            f"{', '.join(k for k, _ in refused)}:\n" + "\n".join(lines) + "\nNothing in the "
            "run directory was changed. To continue this run, drop these changes; to train "
            "the new config, choose a new run_dir (with init_from=<this run_dir> to start "
            "from its weights).")
    return [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed]


def read_saved(directory: str, step: int) -> dict[str, Any]:
    """The config saved with the checkpoint of ``step``; an error if it is not one."""
    saved = run_layout.read_config(directory, step)
    if not isinstance(saved, dict):
        raise ValueError(f"the saved config is a {type(saved).__name__}, not a mapping")
    return saved


def check_run_dir(directory: str, current: dict[str, Any]) -> tuple[int, list[str]] | None:
    """The newest checkpoint whose config can be read, and the safe changes from it to
    ``current`` (``check``); None when ``directory`` has no checkpoint whose config can
    be read (an unreadable one is the restore's to report)."""
    for step in run_layout.complete_steps(directory):
        try:
            saved = read_saved(directory, step)
        except Exception:  # Any unreadable config: the restore falls back past it, and says so.
            continue
        return step, check(saved, current, f"{directory} at step {step}")
    return None


def restore(checkpoints: RunCheckpoints, directory: str, initial_state: Any,
            iterator: grain.DatasetIterator, current: dict[str, Any],
            announced_step: int | None) -> tuple[int, Any]:
    """(step, state) to start from: the newest checkpoint of this run that can be
    restored and is finite, with ``iterator`` moved to it, or (0, ``initial_state``).
    ``announced_step``: the checkpoint whose safe changes ``check_run_dir`` printed."""
    count = jax.jit(count_non_finite)

    def refuse(step: int, state: Any) -> str | None:
        try:
            saved = read_saved(directory, step)
        except Exception as error:  # Any unreadable config: not this run's to resume.
            return f"has a config that cannot be read ({type(error).__name__}: {error})"
        changes = check(saved, current, f"{directory} at step {step}")
        bad = int(count(state))
        if bad:
            return f"holds {bad:,} non-finite values"
        if changes and step != announced_step:
            print(f"resuming with changed settings: {'; '.join(changes)}", flush=True)
        return None

    restored = checkpoints.restore_latest(initial_state, iterator, refuse)
    return restored if restored is not None else (0, initial_state)
