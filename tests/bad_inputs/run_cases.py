"""Bad inputs and faults of a training run's directory: a resume under a changed config,
a second trainer, a non-finite step, checkpoints none of which can be resumed. Each
row runs in milliseconds: nothing is compiled."""
import copy
import json
import os
import socket
import tempfile
from pathlib import Path

import grain
import jax.numpy as jnp

from tests.bad_inputs.case import BadInput
from tnl_jax.training import config as train_config
from tnl_jax.training import loop, resume
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
        cfg = train_config.load(None, [f"tokenizer={tmp}/tokenizer.json"])
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
]
