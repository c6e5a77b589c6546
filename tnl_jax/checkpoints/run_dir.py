"""What a training run leaves in its ``run_dir``, read back without the training code.

    run_dir/checkpoints/<step>/state/    Orbax: {"params", "opt_state", "step"}
    run_dir/checkpoints/<step>/data/     the data iterator's position
    run_dir/checkpoints/<step>/config/   the run's TrainConfig as JSON (model: ModelConfig)
    run_dir/tokenizer.model|json         a copy of the run's tokenizer file, if it had one
    run_dir/metrics.jsonl                one record per logged step, appended (never rewritten)
    run_dir/trainer.lock                 while a trainer runs: its pid and host

``tnl_jax.training.run_checkpoints`` writes this layout with these names.

A checkpoint that cannot be read (a lost ``state/``, tensor directory or ``config/``)
is passed over for the newest one that can, with a warning naming each step passed
and why (``newest_usable``: the one fallback, which resuming a run uses too); when
none can be read, ``UnreadableCheckpoints`` lists them all.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from tnl_jax.checkpoints import saved_shapes

CHECKPOINTS_DIR = "checkpoints"
STATE_ITEM, DATA_ITEM, CONFIG_ITEM = "state", "data", "config"
T = TypeVar("T")


class UnreadableCheckpoints(ValueError):
    """The run directory has checkpoints, and none of them can be restored (a problem
    of the directory given, so a ``ValueError``, which the command lines print alone)."""


def newest_usable(steps: Iterable[int], restore: Callable[[int], T],
                  refuse: Callable[[int, T], str | None], unusable: dict[int, str],
                  fatal: tuple[type[BaseException], ...] = ()) -> tuple[int, T] | None:
    """(step, what ``restore(step)`` read) of the first of ``steps`` (newest first) that
    ``restore`` reads and ``refuse`` accepts (``None``: no reason to refuse); each step
    passed goes into ``unusable`` with the reason. An error of a ``fatal`` type is
    raised at once (it is the caller's, not the checkpoint's). None when none will do."""
    for step in steps:
        try:
            restored = restore(step)
        except fatal:
            raise
        except Exception as error:  # Any unreadable checkpoint: try the one before.
            unusable[step] = f"cannot be restored: {brief(error)}"
            continue
        reason = refuse(step, restored)
        if reason is None:
            return step, restored
        unusable[step] = reason
    return None


def brief(error: BaseException, limit: int = 240) -> str:
    """``Type: message``, its first line only and at most ``limit`` characters (a
    tensorstore error holds its whole JSON spec)."""
    text = f"{type(error).__name__}: {str(error).strip()}".splitlines()[0]
    return text if len(text) <= limit else text[:limit - 1] + "…"


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
    """The run config saved with the checkpoint of ``step`` (default: the newest
    whose config can be read, ``newest_intact``), a nested dict."""
    if step is None:
        return newest_intact(directory, lambda step: read_config(directory, step))[1]
    saved = ocp.JsonCheckpointHandler().restore(epath.Path(_item(directory, CONFIG_ITEM, step)))
    if not isinstance(saved, dict):
        raise ValueError(f"the saved config is a {type(saved).__name__}, not a mapping")
    return saved


def newest_intact(directory: str | Path, read: Callable[[int], T],
                  fatal: tuple[type[BaseException], ...] = ()) -> tuple[int, T]:
    """(step, ``read(step)``) of the newest checkpoint of the run in ``directory`` that
    ``read`` can read, warning about each newer one it passes; ``UnreadableCheckpoints``
    naming every step and why when there is none."""
    latest_step(directory)  # FileNotFoundError when there is no checkpoint at all.
    unusable: dict[int, str] = {}
    found = newest_usable(complete_steps(directory), read, lambda step, _: None, unusable, fatal)
    if found is None:
        raise UnreadableCheckpoints(
            f"{directory}: no checkpoint in {Path(directory) / CHECKPOINTS_DIR} can be read:\n"
            + "".join(f"  step {s}: {why}\n" for s, why in unusable.items())
            + "Restore a checkpoint's missing files from a copy, or start from another run.")
    for passed, why in unusable.items():
        warnings.warn(f"checkpoint at step {passed} in {Path(directory) / CHECKPOINTS_DIR} "
                      f"{why}; using step {found[0]} instead", stacklevel=2)
    return found


def _read_step_params(directory: str | Path, step: int, abstract: nnx.State) -> dict:
    """The parameters of the checkpoint of ``step``, whose config must be readable too
    (a step without its config is not intact, as for resuming)."""
    read_config(directory, step)
    saved_shapes.check(_item(directory, STATE_ITEM, step), nnx.to_pure_dict(abstract), "params")
    item = {"params": abstract}
    args = ocp.args.PyTreeRestore(item=item, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(item))
    handler = ocp.PyTreeCheckpointHandler()  # Not a Checkpointer: no step metadata here.
    try:
        restored = handler.restore(epath.Path(_item(directory, STATE_ITEM, step)), args=args)
    finally:
        handler.close()
    return nnx.to_pure_dict(restored["params"])


def read_params(directory: str | Path, abstract: nnx.State) -> dict:
    """The newest intact checkpoint's parameters (not the optimizer state) as a pure
    dict, in the shapes, dtypes and shardings of ``abstract`` (an ``nnx.State`` of
    ``jax.ShapeDtypeStruct``, the tree the run saved). Other names or shapes raise
    ``saved_shapes.ParamsMismatch`` at once: the caller's config, not a broken file."""
    return newest_intact(directory, lambda step: _read_step_params(directory, step, abstract),
                         fatal=(saved_shapes.ParamsMismatch,))[1]
