"""Orbax checkpoints of a run: train state, data iterator and config, together, in the
layout ``tnl_jax.checkpoints.run_dir`` describes (and reads back for inference).

Saves are asynchronous (the step loop continues while files are written) and
atomic (Orbax writes a temporary directory and renames it when complete); a
temporary directory left by a killed process is removed at start-up. Restoring
tries the newest step first and falls back to older ones, with a warning naming
each step it passes and why, when a checkpoint cannot be used (unreadable, partly
deleted, or refused by the caller); nothing is moved. When the run comes to save a
step it passed, the new checkpoint replaces the unusable one (said at the time).
When no checkpoint can be used, restoring is an error: nothing is started over.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Callable

import grain
import jax
import orbax.checkpoint as ocp

from tnl_jax.checkpoints.run_dir import (CHECKPOINTS_DIR, CONFIG_ITEM, DATA_ITEM, STATE_ITEM,
                                         UnreadableCheckpoints, newest_usable)
from tnl_jax.data import IteratorCheckpoint

# Says why the checkpoint of a step, restored as this state, cannot be resumed (None:
# it can). It may raise instead, to stop the run (a changed config, say).
Refusal = Callable[[int, Any], "str | None"]


class ProcessCountChanged(ValueError):
    """A checkpoint's data position was saved by another number of processes."""


class RunCheckpoints:
    """The checkpoints under `{run_dir}/checkpoints`, newest `keep` kept."""

    def __init__(self, run_dir: Path, keep: int):
        self.manager = ocp.CheckpointManager(
            Path(run_dir).absolute() / CHECKPOINTS_DIR,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=True, cleanup_tmp_directories=True))
        self.unusable: dict[int, str] = {}  # Steps passed by the restore, and why.

    def save(self, step: int, state: Any, iterator: grain.DatasetIterator,
             config: dict[str, Any]) -> None:
        """Starts writing step `step`; returns before the files are complete."""
        if step in self.unusable and step in self.manager.all_steps():
            print(f"replacing the checkpoint of step {step} in {self.manager.directory}, "
                  f"which could not be resumed ({self.unusable.pop(step)})", flush=True)
            self.manager.delete(step)
        self.manager.save(step, force=True, args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardSave(state),
            DATA_ITEM: grain.checkpoint.CheckpointSave(IteratorCheckpoint(iterator)),
            CONFIG_ITEM: ocp.args.JsonSave(config)}))

    def restore_latest(self, like: Any, iterator: grain.DatasetIterator,
                       refuse: Refusal = lambda step, state: None) -> tuple[int, Any] | None:
        """(step, state) of the newest checkpoint that can be restored and that
        `refuse` accepts, with `iterator` moved to it; None when there is no checkpoint.

        `like` is a state of the same structure whose arrays give shapes, dtypes and
        shardings. ``UnreadableCheckpoints`` when there are checkpoints but none will do;
        ``ProcessCountChanged`` at once when the newest was saved by another number of
        processes.
        """
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
        def restore(step: int) -> Any:
            self._check_process_count(step)
            return self.manager.restore(step, args=ocp.args.Composite(**{
                STATE_ITEM: ocp.args.StandardRestore(abstract),
                DATA_ITEM: grain.checkpoint.CheckpointRestore(IteratorCheckpoint(iterator))
            }))[STATE_ITEM]

        found = newest_usable(sorted(self.manager.all_steps(), reverse=True), restore,
                              refuse, self.unusable, fatal=(ProcessCountChanged,))
        if found is not None:
            self._warn_passed(found[0])
            return found
        if self.unusable:
            raise UnreadableCheckpoints(
                f"no checkpoint in {self.manager.directory} can be resumed:\n"
                + "".join(f"  step {s}: {why}\n" for s, why in self.unusable.items())
                + "Nothing was moved or deleted. If a reason names a change of code or "
                  "config, rerun as the checkpoints were written; to start this run over, "
                  "move its checkpoints directory away or choose another run_dir.")
        return None

    def _check_process_count(self, step: int) -> None:
        """A clear error when the data position of ``step`` was saved by another number
        of processes (Grain writes one ``process_<i>-of-<n>.json`` per process; each holds
        that process's own rows' position, which another layout cannot take over)."""
        count = jax.process_count()
        data = Path(self.manager.directory) / str(step) / DATA_ITEM
        names = (re.fullmatch(r"process_\d+-of-(\d+)", f.stem) for f in data.glob("*.json"))
        saved = {int(m[1]) for m in names if m}  # Another file there is Grain's business.
        if saved and count not in saved:
            n = max(saved)
            raise ProcessCountChanged(
                f"the checkpoint of step {step}: its data position was saved by {n} "
                f"processes ({data}/process_*-of-{n}.json) and this run has {count}; "
                f"each process saved the position of its own rows. "
                f"Resume with {n} processes (JAX_NUM_PROCESSES={n}), or start a new run "
                f"from its weights (init_from={Path(self.manager.directory).parent})")

    def _warn_passed(self, step: int) -> None:
        for passed, why in self.unusable.items():
            warnings.warn(
                f"checkpoint at step {passed} in {self.manager.directory} {why}; resuming "
                f"from step {step} instead. It is left as it is until this run saves step "
                f"{passed} again, which replaces it (copy it elsewhere first to keep it).")

    def wait(self) -> None:
        """Blocks until every started save is complete on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
