"""What a directory given to a loader, ``tnl-convert``, ``tnl-generate`` or training
holds, told by what it has (nothing is read):

    run        a training run: checkpoints/
    converted  tnl-convert's format: model_config.json (and params/)
    hf         the published Hugging Face layout: config.json (and the weights)
    empty      an empty directory
    missing    no such path (or a dangling symlink)
    file       not a directory
    other      a directory with none of the three

A wrong kind is an error that names what was found and what was expected.
"""
from __future__ import annotations

from pathlib import Path

from tnl_jax.checkpoints import converted, run_dir

HF_CONFIG = "config.json"
CHECKPOINT_KINDS = ("run", "converted", "hf")
FOUND = {
    "run": f"a training run directory ({run_dir.CHECKPOINTS_DIR}/)",
    "converted": f"a converted directory ({converted.CONFIG_FILE}, {converted.PARAMS_DIR}/)",
    "hf": f"a Hugging Face directory ({HF_CONFIG})",
    "empty": "an empty directory",
    "missing": "no such file or directory",
    "file": "a file, not a directory",
    "other": (f"a directory with none of {run_dir.CHECKPOINTS_DIR}/, {converted.CONFIG_FILE} "
              f"or {HF_CONFIG}"),
}
EXPECTED = {
    "run": f"a training run directory with {run_dir.CHECKPOINTS_DIR}/",
    "converted": f"a converted directory with {converted.CONFIG_FILE} (tnl-convert's output)",
    "hf": f"a Hugging Face directory with {HF_CONFIG}",
}


class WrongDirectoryKind(ValueError):
    """A directory is not the kind its argument takes."""


def directory_kind(path: str | Path) -> str:
    """One of ``run``, ``converted``, ``hf``, ``empty``, ``missing``, ``file``, ``other``
    (the module docstring)."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if not path.is_dir():
        return "file"
    if run_dir.is_run_dir(path):
        return "run"
    if (path / converted.CONFIG_FILE).is_file():
        return "converted"
    if (path / HF_CONFIG).is_file():
        return "hf"
    return "other" if any(path.iterdir()) else "empty"


def checkpoint_kind(path: str | Path, argument: str | None = None,
                    expected: tuple[str, ...] = CHECKPOINT_KINDS, hint: str = "") -> str:
    """``directory_kind(path)``, which must be one of ``expected``; else
    ``WrongDirectoryKind`` (``FileNotFoundError`` for a missing path) naming
    ``argument``, the path, what it is and what was expected, then ``hint``."""
    kind = directory_kind(path)
    if kind in expected:
        return kind
    named = f"{argument} {path}" if argument else str(path)
    message = (f"{named}: found {FOUND[kind]}, expected "
               f"{' or '.join(EXPECTED[k] for k in expected)}{hint}")
    if kind == "missing":
        raise FileNotFoundError(message)
    raise WrongDirectoryKind(message)


def refuse_as_run_dir(path: str | Path) -> None:
    """``WrongDirectoryKind`` when ``path`` holds a converted or Hugging Face
    checkpoint: a run there would write its checkpoints beside those weights, and every
    loader would then read the run's instead."""
    kind = directory_kind(path)
    if kind in ("converted", "hf"):
        raise WrongDirectoryKind(
            f"run_dir={str(path)!r}: found {FOUND[kind]}, expected a new or empty directory or "
            f"a training run's: a run there would write {run_dir.CHECKPOINTS_DIR}/ beside these "
            f"weights, and loading it would then read the run's, not these. Choose another "
            f"run_dir; to start from these weights, add init_from={path}")
