"""What a run checks before it creates or compiles anything, beyond the config's ranges:
the run directory's path, the tokenizer (and the vocabulary it implies), the compute
dtype; and the undoing of what a failed start created.

Every problem found here is a ``ValueError`` (``run_errors.StartError`` once a run
has begun starting): one message naming the key, its value and what is expected, which
the command line prints alone with exit status 2. ``removed_on_failure`` deletes the
folders a start created when it fails before training begins, so that a failed start
leaves no empty ``run_dir``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator


from tnl_jax.model.config_checks import needs_x64
from tnl_jax.path_checks import first_existing
from tnl_jax.tokenizers import TOKENIZER_FILES, Tokenizer, check_fits, get_tokenizer
from tnl_jax.training.run_errors import StartError

if TYPE_CHECKING:
    from tnl_jax.training.config import TrainConfig

METRICS_FILE = "metrics.jsonl"
_SAID: set[tuple[str, Path]] = set()  # The tokenizer copies already announced.


def _writable(folder: Path) -> str | None:
    """Why files cannot be made in ``folder`` (None: they can): a real attempt, so that
    read-only mounts and permissions are both seen."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tnl-write-check-", dir=folder))
    except OSError as error:
        return error.strerror or str(error)
    return None


def run_dir_problem(run_dir: str) -> str | None:
    """What keeps ``run_dir`` from holding a run (None: nothing): a file in its place or
    on its path, a dangling link, a folder that cannot be written, a ``checkpoints``
    or ``metrics.jsonl`` of the wrong kind."""
    from tnl_jax.checkpoints.run_dir import CHECKPOINTS_DIR  # Orbax: not for --help.
    path = Path(run_dir)
    key = f"run_dir={run_dir!r}"
    existing = first_existing(path)
    if existing.is_symlink() and not existing.exists():
        place = "is" if existing == path else f"passes through {str(existing)!r},"
        return (f"{key} {place} a symbolic link to {os.readlink(existing)!r}, which does not "
                f"exist")
    if not existing.is_dir():
        place = "is a file" if existing == path else f"passes through {str(existing)!r}, a file"
        return f"{key} {place}: expected a folder (or a path where one can be made)"
    checkpoints, metrics_file = path / CHECKPOINTS_DIR, path / METRICS_FILE
    for inside in (checkpoints, metrics_file):
        if inside.is_symlink() and not inside.exists():
            return (f"{key}: {inside} is a symbolic link to {os.readlink(inside)!r}, which "
                    f"does not exist")
    if checkpoints.exists() and not checkpoints.is_dir():
        return f"{key}: {checkpoints} is not a folder: expected the run's checkpoints folder"
    if metrics_file.exists() and not metrics_file.is_file():
        return f"{key}: {metrics_file} is not a file: expected the run's metrics log"
    for folder in (existing, checkpoints if checkpoints.is_dir() else None):
        why = folder is not None and _writable(folder)
        if why:
            return f"{key}: cannot write in {folder} ({why}): expected a writable folder"
    return None


def check_run_dir(run_dir: str) -> None:
    """``StartError`` when ``run_dir_problem`` finds one."""
    problem = run_dir_problem(run_dir)
    if problem:
        raise StartError(problem)


def check_dtype(cfg: TrainConfig) -> None:
    """No float64 that would silently be float32: ``model.dtype=float64`` is refused (the
    model's logits and the attention op's state are float32 whatever the compute dtype),
    and so is ``model.param_dtype=float64`` without jax's 64-bit mode (jax would make
    float32 weights while the run reported float64)."""
    if cfg.model.dtype == "float64":
        raise StartError(
            "model.dtype='float64': training computes float32 logits and float32 attention "
            "state whatever the compute dtype, so it would not be float64: expected float32, "
            "bfloat16 or float16")
    for problem in needs_x64("model.param_dtype", cfg.model.param_dtype):
        raise StartError(problem)


def _tokenizer_copy(run_dir: str, name: str) -> Path | None:
    """The run's own copy of tokenizer ``name`` (``keep_tokenizer``), if it has one."""
    suffix = Path(name).suffix
    candidates = [n for n in TOKENIZER_FILES if Path(n).suffix == suffix] or list(TOKENIZER_FILES)
    return next((Path(run_dir) / n for n in candidates if (Path(run_dir) / n).is_file()), None)


def tokenizer_source(tokenizer: str, run_dir: str) -> str:
    """The file to read tokenizer ``tokenizer`` from: it, or when it is gone, the copy
    the run in ``run_dir`` kept of it (said when used)."""
    path = Path(tokenizer).expanduser()
    if tokenizer == "bytes" or path.is_file() or any(
            (path / name).is_file() for name in TOKENIZER_FILES):
        return tokenizer
    copy = _tokenizer_copy(run_dir, tokenizer)
    if copy is None:
        return tokenizer  # get_tokenizer names what is missing.
    if (tokenizer, copy) not in _SAID:
        _SAID.add((tokenizer, copy))
        print(f"tokenizer={tokenizer!r} is gone: using the copy this run kept, {copy}",
              flush=True)
    return str(copy)


def tokenizer_file(tokenizer: str, run_dir: str) -> Path | None:
    """The file tokenizer ``tokenizer`` is read from (``tokenizer_source``; a folder's
    ``tokenizer.model`` or ``.json``); None for ``bytes`` or a file that is missing."""
    if tokenizer == "bytes":
        return None
    path = Path(tokenizer_source(tokenizer, run_dir)).expanduser()
    if path.is_dir():
        path = next((path / name for name in TOKENIZER_FILES if (path / name).is_file()), path)
    return path if path.is_file() else None


def open_tokenizer(cfg: TrainConfig) -> Tokenizer:
    """The run's tokenizer, checked to fit ``model.vocab_size``."""
    tokenizer = get_tokenizer(tokenizer_source(cfg.tokenizer, cfg.run_dir))
    check_fits(tokenizer, cfg.tokenizer, cfg.model.vocab_size, fix=(
        f"set model.vocab_size={tokenizer.vocab_size} or more"
        + (", or leave it unset to take the tokenizer's" if cfg.tokenizer != "bytes" else "")))
    return tokenizer


def fit_vocabulary(cfg: TrainConfig, vocab_size_given: bool) -> TrainConfig:
    """``cfg`` with the model's vocabulary and special ids taken from a text tokenizer
    (SentencePiece, ``tokenizers``) when ``model.vocab_size`` was not given (by an
    override, a ``--config`` file or ``init_from``); then checked to fit."""
    if cfg.tokenizer != "bytes" and not vocab_size_given:
        tokenizer = get_tokenizer(tokenizer_source(cfg.tokenizer, cfg.run_dir))
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(
            cfg.model, vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id,
            bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id))
    open_tokenizer(cfg)
    return cfg


def first_new_folder(run_dir: str) -> Path | None:
    """The topmost folder of ``run_dir``'s path that does not exist yet (the one a start
    creates, with everything below it); None when ``run_dir`` exists."""
    path = Path(run_dir).absolute()
    existing = first_existing(path)
    if existing == path:
        return None
    while path.parent != existing:
        path = path.parent
    return path


@contextlib.contextmanager
def removed_on_failure(new_folder: Path | None, enabled: bool = True) -> Iterator["Started"]:
    """Yields a ``Started``; when the block raises before ``Started.done()``, deletes
    ``new_folder`` (``first_new_folder`` before the start: what this start created).
    Entered while holding the run's lock, so that no other trainer's folder is deleted;
    ``enabled=False`` (processes other than 0) deletes nothing."""
    started = Started()
    try:
        yield started
    except BaseException:
        if enabled and not started.finished and new_folder is not None and new_folder.is_dir():
            shutil.rmtree(new_folder, ignore_errors=True)
        raise


class Started:
    """Whether a run's start is over (training has begun: its files are its own)."""

    def __init__(self):
        self.finished = False

    def done(self) -> None:
        self.finished = True
