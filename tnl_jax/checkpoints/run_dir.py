"""What a training run leaves in its ``run_dir``, read back without the training code.

    run_dir/checkpoints/<step>/state/    Orbax: {"params", "opt_state", "step"}
    run_dir/checkpoints/<step>/data/     the data iterator's position
    run_dir/checkpoints/<step>/config/   the run's TrainConfig as JSON (model: ModelConfig)
    run_dir/tokenizer.model|json         a copy of the run's tokenizer file, if it had one
    run_dir/metrics.jsonl                one record per logged step, appended (never rewritten)
    run_dir/trainer.lock                 while a trainer runs: its pid and host

``tnl_jax.training.run_checkpoints`` writes this layout with these names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from tnl_jax.checkpoints import saved_shapes

CHECKPOINTS_DIR = "checkpoints"
STATE_ITEM, DATA_ITEM, CONFIG_ITEM = "state", "data", "config"


def is_run_dir(directory: str | Path) -> bool:
    return (Path(directory) / CHECKPOINTS_DIR).is_dir()


def complete_steps(directory: str | Path) -> list[int]:
    """The steps of the complete checkpoints, newest first (Orbax names unfinished ones
    ``<step>.…tmp…``); empty when there are none."""
    root = Path(directory) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted((int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()),
                  reverse=True)


def latest_step(directory: str | Path) -> int:
    """The newest complete checkpoint's step."""
    steps = complete_steps(directory)
    if not steps:
        raise FileNotFoundError(f"{directory}: no complete checkpoint in "
                                f"{Path(directory) / CHECKPOINTS_DIR}")
    return steps[0]


def _item(directory: str | Path, item: str, step: int | None = None) -> Path:
    step = latest_step(directory) if step is None else step
    return Path(directory).absolute() / CHECKPOINTS_DIR / str(step) / item


def read_config(directory: str | Path, step: int | None = None) -> dict[str, Any]:
    """The run config saved with the checkpoint of ``step`` (default: the newest), a
    nested dict."""
    return ocp.JsonCheckpointHandler().restore(epath.Path(_item(directory, CONFIG_ITEM, step)))


def read_params(directory: str | Path, abstract: nnx.State) -> dict:
    """The newest checkpoint's parameters (not the optimizer state) as a pure dict, in
    the shapes, dtypes and shardings of ``abstract`` (an ``nnx.State`` of
    ``jax.ShapeDtypeStruct``, the tree the run saved)."""
    saved_shapes.check(_item(directory, STATE_ITEM), nnx.to_pure_dict(abstract), "params")
    item = {"params": abstract}
    args = ocp.args.PyTreeRestore(item=item, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(item))
    handler = ocp.PyTreeCheckpointHandler()  # Not a Checkpointer: no step metadata here.
    try:
        restored = handler.restore(epath.Path(_item(directory, STATE_ITEM)), args=args)
    finally:
        handler.close()
    return nnx.to_pure_dict(restored["params"])

