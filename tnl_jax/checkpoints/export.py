"""Any checkpoint directory (a training run, a converted or a Hugging Face one) written
as a Hugging Face or a converted directory, with its tokenizer: what ``tnl-convert`` does.

The weights go through float32 unchanged, so a round trip gives the same logits. The
destination is checked before anything is read (a new or empty directory; an existing
converted or Hugging Face one only with ``overwrite``), the new directory is written
beside it under a temporary name and renamed into place when complete: a failure
leaves the destination as it was, never a mix of two checkpoints.
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import jax.numpy as jnp

from tnl_jax.checkpoints import converted, hf, loader
from tnl_jax.checkpoints.hf_config import config_to_hf
from tnl_jax.checkpoints.kinds import FOUND, WrongDirectoryKind, checkpoint_kind, directory_kind
from tnl_jax.model.config import ModelConfig
from tnl_jax.model.language_model import LanguageModel
from tnl_jax.path_checks import first_existing
from tnl_jax.tokenizers import TOKENIZER_FILES

WRITERS: dict[str, Callable[[LanguageModel, Path], None]] = {
    "hf": hf.save_hf, "converted": converted.write}
REPLACEABLE = ("converted", "hf")  # What `overwrite` may replace: never a run or other files.


def default_target(kind: str) -> str:
    """A Hugging Face directory becomes a converted one; anything else a Hugging Face one."""
    return "converted" if kind == "hf" else "hf"


def check_destination(out: Path, source: Path, overwrite: bool) -> None:
    """Refuses, before anything is read or written, a destination that is the source or
    holds it, a file or a path through one, or a non-empty directory (unless ``overwrite`` and it is a
    converted or Hugging Face directory)."""
    if out.resolve() == source.resolve() or out.resolve() in source.resolve().parents \
            or source.resolve() in out.resolve().parents:
        raise ValueError(f"--out {out}: this is, holds or lies inside the source {source}; "
                         "write the conversion to another directory")
    existing = first_existing(out.absolute())
    if existing != out.absolute() and not existing.is_dir():
        raise WrongDirectoryKind(f"--out {out}: passes through {str(existing)!r}, which is "
                                 "not a directory: expected a new or empty directory")
    kind = directory_kind(out)
    if kind in ("missing", "empty"):
        return
    if kind == "file":
        raise WrongDirectoryKind(f"--out {out}: found {FOUND[kind]}, expected a new or "
                                 "empty directory")
    if not overwrite:
        raise FileExistsError(
            f"--out {out}: found {FOUND[kind]}, expected a new or empty directory; nothing was "
            "written. Choose another --out, or add --overwrite to replace it (replaced only "
            "once the new directory is complete)")
    if kind not in REPLACEABLE:
        raise FileExistsError(
            f"--out {out}: found {FOUND[kind]}; --overwrite replaces only a converted or "
            "Hugging Face directory, never a training run or other files: choose another --out")


@contextlib.contextmanager
def staged(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """A new directory beside ``out`` to write into, renamed to ``out`` when the block
    ends without an error (an existing ``out`` is replaced then, not before, and only
    with ``overwrite``: another writer may have filled it meanwhile); removed, with any
    parent directories made for it, when the block or the rename fails."""
    made = [p for p in reversed(out.absolute().parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
        stage.chmod(0o777 & ~hf.current_umask())  # mkdtemp's 0700 would make the result private.
        if out.is_dir() and any(out.iterdir()):
            if not overwrite:
                raise FileExistsError(f"--out {out}: filled by another process while this "
                                      "conversion ran; nothing of it was changed")
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.replaced-", dir=out.parent))
            out.rename(old / out.name)
            try:
                stage.rename(out)
            except BaseException:
                (old / out.name).rename(out)  # Put the old one back.
                old.rmdir()
                raise
            shutil.rmtree(old)
        else:
            if out.is_dir():
                out.rmdir()
            stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for parent in reversed(made):
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


def tokenizer_files(source: Path, kind: str) -> list[Path]:
    """The tokenizer files that go with ``source``: a converted or Hugging Face
    directory's own; a run's copy, or the file its config names (none for ``bytes``)."""
    if kind != "run":
        return [source / name for name in TOKENIZER_FILES if (source / name).is_file()]
    spec = loader.tokenizer_spec(source)
    if spec == "bytes":
        return []
    path = Path(spec)
    if path.is_dir():
        path = next((path / n for n in TOKENIZER_FILES if (path / n).is_file()), path)
    if not path.is_file() or path.name not in TOKENIZER_FILES:
        raise FileNotFoundError(f"{source}: the run's tokenizer {spec!r} is not a "
                                f"{' or '.join(TOKENIZER_FILES)} file that exists")
    return [path]


def export(source: str | Path, out: str | Path, to: str | None = None,
           overwrite: bool = False, expected: tuple[str, ...] = ("run", "converted", "hf"),
           argument: str = "--from") -> tuple[str, str, ModelConfig, list[str]]:
    """Writes the model in ``source`` (of a kind in ``expected``) to ``out`` as ``to``
    (``"hf"`` or ``"converted"``; default ``default_target``), float32, with its
    tokenizer files. Returns (source kind, target kind, model config, tokenizer files
    written)."""
    source, out = Path(source), Path(out)
    kind = checkpoint_kind(source, argument, expected)
    to = to or default_target(kind)
    if to not in WRITERS:
        raise ValueError(f"--to {to!r}: expected one of {sorted(WRITERS)}")
    check_destination(out, source, overwrite)
    if to == "hf":
        config_to_hf(loader.load_model_config(source))  # A model the layout cannot hold.
    tokenizers = tokenizer_files(source, kind)
    model = loader.load_model(source, dtype=jnp.float32)
    with staged(out, overwrite) as stage:
        WRITERS[to](model, stage)
        for path in tokenizers:
            shutil.copyfile(path, stage / path.name)
    return kind, to, model.cfg, [path.name for path in tokenizers]
