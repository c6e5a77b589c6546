"""Bad inputs and faults of a training run's directory: a resume under a changed config,
a second trainer, a non-finite step, checkpoints none of which can be resumed. Each
row runs in milliseconds: nothing is compiled."""
import copy
import dataclasses
import errno
import json
import os
import socket
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable

import grain
import jax.numpy as jnp
import numpy as np

from tests.bad_inputs.case import BadInput
from tnl_jax.training import config as train_config
from tnl_jax.training import loop, resume, run_errors, start
from tnl_jax.training.divergence import NonFiniteStep, check_step
from tnl_jax.training.run_checkpoints import RunCheckpoints, UnreadableCheckpoints
from tnl_jax.training.run_lock import LOCK_FILE, RunDirLocked, RunLock


def _resume_with(**changes):
    """Checks a resume with ``changes`` (``model__use_decay=False`` sets
    ``model.use_decay``) against a checkpoint saved with the defaults."""
    def call():
        saved = train_config.to_dict(train_config.TrainConfig())
        current = copy.deepcopy(saved)
        for key, value in changes.items():
            *groups, leaf = key.split("__")
            node = current
            for group in groups:
                node = node[group]
            node[leaf] = value
        return resume.check(saved, current, "runs/x at step 8")
    return call


def _second_trainer():
    with tempfile.TemporaryDirectory() as run_dir, RunLock(run_dir):
        RunLock(run_dir).acquire()


def _live_record_without_a_lock():
    """A record naming a running process of this host (this one's parent), on a
    filesystem whose locks would not have stopped it."""
    with tempfile.TemporaryDirectory() as run_dir:
        record = {"pid": os.getppid(), "host": socket.gethostname()}
        (Path(run_dir) / LOCK_FILE).write_text(json.dumps(record))
        RunLock(run_dir).acquire()


def _step(loss=2.5, grad_norm=1.0, params=0, opt_state=0, last_finite=5):
    record = {"step": 7, "loss": loss, "grad_norm": grad_norm, "lr": 1e-3,
              "non_finite_params": float(params), "non_finite_opt_state": float(opt_state)}
    return lambda: check_step(record, 7, last_finite, "runs/x/checkpoints")


def _another_tokenizer_file():
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "run").mkdir()
        (Path(tmp) / "run" / "tokenizer.json").write_text("the run's tokenizer")
        (Path(tmp) / "tokenizer.json").write_text("another tokenizer")
        cfg = dataclasses.replace(train_config.TrainConfig(), tokenizer=f"{tmp}/tokenizer.json")
        loop.keep_tokenizer(cfg, Path(tmp) / "run")


def _no_checkpoint_readable():
    with tempfile.TemporaryDirectory() as run_dir:
        checkpoints = RunCheckpoints(Path(run_dir), keep=2)
        iterator = iter(grain.MapDataset.range(4).to_iter_dataset())
        checkpoints.save(3, {"w": jnp.arange(3.0)}, iterator, {})
        checkpoints.wait()
        for f in (Path(run_dir) / "checkpoints" / "3" / "state").rglob("*"):
            if f.is_file():
                f.write_bytes(b"garbage")
        try:
            checkpoints.restore_latest({"w": jnp.zeros(3)}, iterator)
        finally:
            checkpoints.close()


def _start_in(layout: dict[str, str | None], run_dir: str) -> Callable[[], Any]:
    """``start.check_run_dir(<tmp>/run_dir)`` with ``layout`` made first in a fresh
    folder: a name -> None is a folder, -> "text" a file, -> "@target" a symbolic link."""
    def call():
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in layout.items():
                path = Path(tmp) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                if content is None:
                    path.mkdir()
                elif content.startswith("@"):
                    path.symlink_to(content[1:].replace("<tmp>", tmp))
                else:
                    path.write_text(content)
            start.check_run_dir(str(Path(tmp) / run_dir))
    return call


def _changed_data_files(change: Callable[[Path], Any]) -> Callable[[], Any]:
    """A resume check after ``change(folder)`` altered the data files of a saved run."""
    def call():
        with tempfile.TemporaryDirectory() as tmp:
            rng = np.random.default_rng(zlib.crc32(change.__name__.encode()))
            for i in range(3):
                raw = rng.integers(0, 256, 50 + i, dtype=np.uint8).tobytes()
                (Path(tmp) / f"doc{i}.txt").write_bytes(raw)
            cfg = dataclasses.replace(train_config.TrainConfig(), data=f"{tmp}/*.txt")
            saved = resume.run_config(cfg)
            change(Path(tmp))
            return resume.check(saved, resume.run_config(cfg), "runs/x at step 8")
    return call


def rewritten(folder: Path) -> None:
    (folder / "doc1.txt").write_bytes(b"other text, other length")


def deleted(folder: Path) -> None:
    (folder / "doc0.txt").unlink()
    (folder / "doc2.txt").unlink()


def _data_read_fails():
    with run_errors.reading_data("corpus/*.txt", 7, 4):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "corpus/a.txt")


def _disk_full_under_orbax():
    """The cause buried as orbax buries it: an ExceptionGroup around a chain."""
    def buried():
        try:
            raise OSError(errno.EFBIG, "File too large", "runs/x/checkpoints/4/state/d/0")
        except OSError as error:
            raise RuntimeError("step_directory_creation failed") from error
    with run_errors.writing_run_dir("runs/x"):
        try:
            buried()
        except RuntimeError as error:
            raise ExceptionGroup("async save", [error]) from None


def _float64(key: str) -> Callable[[], Any]:
    """``start.check_dtype`` of the default config with ``model.<key>=float64`` (jax's
    64-bit mode off, as in the suite)."""
    def call():
        cfg = train_config.TrainConfig()
        model = dataclasses.replace(cfg.model, **{key: "float64"})
        start.check_dtype(dataclasses.replace(cfg, model=model))
    return call


CASES = [
    BadInput("run: resume with model.use_decay changed (same shapes)",
             _resume_with(model__use_decay=False), resume.RunConfigChanged,
             ("runs/x at step 8", "model.use_decay: True (saved) -> False (now)",
              "another model")),
    BadInput("run: resume with model.decoder_layers changed",
             _resume_with(model__decoder_layers=2), resume.RunConfigChanged,
             ("model.decoder_layers: 4 (saved) -> 2 (now)",)),
    BadInput("run: resume with model.vocab_size changed",
             _resume_with(model__vocab_size=512), resume.RunConfigChanged,
             ("model.vocab_size: 384 (saved) -> 512 (now)",)),
    BadInput("run: resume with another tokenizer", _resume_with(tokenizer="tok.model"),
             resume.RunConfigChanged, ("tokenizer: 'bytes' (saved) -> 'tok.model' (now)",)),
    BadInput("run: resume with another tokenizer file at the same path",
             _another_tokenizer_file, resume.RunConfigChanged,
             ("tokenizer=", "is not the tokenizer this run trained with")),
    BadInput("run: resume with seq_len changed", _resume_with(seq_len=512),
             resume.RunConfigChanged, ("seq_len: 256 (saved) -> 512 (now)", "data stream")),
    BadInput("run: resume with other data", _resume_with(data="mqar"), resume.RunConfigChanged,
             ("data: 'stdlib' (saved) -> 'mqar' (now)", "saved data position")),
    BadInput("run: resume turning gradient clipping off", _resume_with(grad_clip=0.0),
             resume.RunConfigChanged, ("grad_clip: 1.0 (saved) -> 0.0 (now)",
                                       "another optimizer state")),
    BadInput("run: resume with several changes names each", _resume_with(
        model__dtype="bfloat16", seed=3, steps=5), resume.RunConfigChanged,
             ("model.dtype, seed:", "'float32' (saved) -> 'bfloat16'", "seed: 0 (saved) -> 3")),
    BadInput("run: a second trainer in a locked run_dir", _second_trainer, RunDirLocked,
             ("is in use by another trainer", f"pid {os.getpid()} on host "
              f"{socket.gethostname()}", LOCK_FILE)),
    BadInput("run: a live holder's record on a filesystem without locks",
             _live_record_without_a_lock, RunDirLocked,
             (f"pid {os.getppid()} on host", "it is running")),
    BadInput("run: non-finite loss", _step(loss=float("nan")), NonFiniteStep,
             ("diverged at step 7", "loss nan", "last finite checkpoint is step 5 in "
              "runs/x/checkpoints")),
    BadInput("run: infinite gradient norm", _step(grad_norm=float("inf")), NonFiniteStep,
             ("grad_norm inf",)),
    BadInput("run: finite loss, non-finite updated parameters", _step(params=1234),
             NonFiniteStep, ("loss 2.5", "1,234 non-finite parameter values")),
    BadInput("run: non-finite optimizer state, before any checkpoint",
             _step(opt_state=2, last_finite=None), NonFiniteStep,
             ("2 non-finite optimizer values", "a rerun starts from step 0")),
    BadInput("run: no checkpoint can be restored", _no_checkpoint_readable,
             UnreadableCheckpoints, ("step 3: cannot be restored", "Nothing was moved")),
    BadInput("run: data files rewritten between runs", _changed_data_files(rewritten),
             resume.RunConfigChanged, ("data (its files)", "1 file(s) rewritten (doc1.txt: "
                                       "51 -> 24 bytes)", "another data stream")),
    BadInput("run: data files deleted between runs", _changed_data_files(deleted),
             resume.RunConfigChanged, ("2 file(s) gone (doc0.txt, doc2.txt)",)),
    BadInput("run: a data file gone while training", _data_read_fails, run_errors.DataReadError,
             ("data='corpus/*.txt'", "step 7", "corpus/a.txt: No such file or directory",
              "a rerun resumes from step 4")),
    BadInput("run: file too large while saving", _disk_full_under_orbax, run_errors.StorageError,
             ("run_dir='runs/x'", "checkpoints/4/state/d/0: File too large (EFBIG)")),
    BadInput("run: model.dtype=float64", _float64("dtype"), run_errors.StartError,
             ("model.dtype='float64'", "float32 logits", "expected float32, bfloat16 or "
                                                         "float16")),
    BadInput("run: model.param_dtype=float64 without 64-bit jax", _float64("param_dtype"),
             run_errors.StartError, ("model.param_dtype='float64'", "JAX_ENABLE_X64=1",
                                     "expected float32, bfloat16 or float16")),
    BadInput("run: run_dir is a file", _start_in({"run": "text"}, "run"), run_errors.StartError,
             ("run_dir=", "/run' is a file: expected a folder",)),
    BadInput("run: run_dir through a file", _start_in({"f": "text"}, "f/run"),
             run_errors.StartError, ("/f/run' passes through", "a file: expected a folder")),
    BadInput("run: run_dir a dangling link", _start_in({"run": "@<tmp>/gone"}, "run"),
             run_errors.StartError, ("is a symbolic link to", "/gone', which does not exist")),
    BadInput("run: run_dir through a dangling link", _start_in({"old": "@<tmp>/gone"}, "old/run"),
             run_errors.StartError, ("/old/run' passes through", "a symbolic link to",
                                     "/gone', which does not exist")),
    BadInput("run: checkpoints a dangling link",
             _start_in({"run/checkpoints": "@<tmp>/moved"}, "run"), run_errors.StartError,
             ("run/checkpoints is a symbolic link to", "/moved', which does not exist")),
    BadInput("run: metrics.jsonl is a folder", _start_in({"run/metrics.jsonl": None}, "run"),
             run_errors.StartError, ("metrics.jsonl is not a file",)),
    BadInput("run: checkpoints is a file", _start_in({"run/checkpoints": "x"}, "run"),
             run_errors.StartError, ("checkpoints is not a folder",)),
    BadInput("run: checkpoints not writable", _start_in({"run/checkpoints": "@/sys/kernel"},
                                                         "run"),
             run_errors.StartError, ("cannot write in", "/run/checkpoints (",
                                     "expected a writable folder")),
    BadInput("run: run_dir in a folder that cannot be written",
             lambda: start.check_run_dir("/sys/kernel/tnl-run"), run_errors.StartError,
             ("run_dir='/sys/kernel/tnl-run': cannot write in /sys/kernel",)),
]
