"""Orbax checkpoints of a run: train state, data iterator and config, together, in the
layout ``tnl_jax.checkpoints.run_dir`` describes (and reads back for inference).

Saves are asynchronous (the step loop continues while files are written) and
atomic (Orbax writes a temporary directory and renames it when complete); a
temporary directory left by a killed process is removed at start-up. Restoring
tries the newest step first and falls back to older ones with a warning when a
checkpoint cannot be read.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from tnl_jax.checkpoints.run_dir import CHECKPOINTS_DIR, CONFIG_ITEM, DATA_ITEM, STATE_ITEM
from tnl_jax.data import IteratorCheckpoint


class RunCheckpoints:
    """The checkpoints under `{run_dir}/checkpoints`, newest `keep` kept."""

    def __init__(self, run_dir: Path, keep: int):
        self.manager = ocp.CheckpointManager(
            Path(run_dir).absolute() / CHECKPOINTS_DIR,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=True, cleanup_tmp_directories=True))

    def save(self, step: int, state: Any, iterator: grain.DatasetIterator,
             config: dict[str, Any]) -> None:
        """Starts writing step `step`; returns before the files are complete."""
        self.manager.save(step, force=True, args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardSave(state),
            DATA_ITEM: grain.checkpoint.CheckpointSave(IteratorCheckpoint(iterator)),
            CONFIG_ITEM: ocp.args.JsonSave(config)}))

    def restore_latest(self, like: Any, iterator: grain.DatasetIterator
                       ) -> tuple[int, Any] | None:
        """(step, state) of the newest readable checkpoint, with `iterator` moved to it.

        `like` is a state of the same structure whose arrays give shapes, dtypes and
        shardings. None when there is no readable checkpoint.
        """
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(**{
                    STATE_ITEM: ocp.args.StandardRestore(abstract),
                    DATA_ITEM: grain.checkpoint.CheckpointRestore(IteratorCheckpoint(iterator))}))
                return step, restored[STATE_ITEM]
            except Exception as error:  # Any unreadable checkpoint: try the one before.
                warnings.warn(f"checkpoint at step {step} in {self.manager.directory} cannot be "
                              f"restored ({type(error).__name__}: {error}); trying an older one")
                self._set_aside(step)
        return None

    def _set_aside(self, step: int) -> None:
        """Moves an unreadable step out of the way (kept for inspection, not reused)."""
        if jax.process_index() == 0:
            aside = Path(f"{self.manager.directory}.unreadable")
            aside.mkdir(exist_ok=True)
            (Path(self.manager.directory) / str(step)).rename(aside / f"{step}-{time.time():.0f}")
        self.manager.reload()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def wait(self) -> None:
        """Blocks until every started save is complete on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
