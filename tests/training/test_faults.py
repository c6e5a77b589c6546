"""Faults, as a user meets them, in real `python train.py` processes: divergence stops
before a non-finite checkpoint exists and names the last finite one, which a rerun
resumes; a changed model on resume is an error that touches nothing; a second trainer
on a run_dir is refused, a stale lock taken over."""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import types

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from tests.training.runs import losses, run_training, tiny_config
from tnl_jax.training import loop
from tnl_jax.training.divergence import NonFiniteStep
from tnl_jax.training.run_lock import LOCK_FILE, RunLock

# The reproduction (`lr=1e6 checkpoint_every=1`) on the tiny model: the loss is
# finite up to step 4, whose gradient and updated parameters are NaN.
DIVERGE = ["lr=1e6", "checkpoint_every=1", "steps=5"]


@pytest.fixture(scope="module")
def diverged(tmp_path_factory):
    """A run that diverged: its directory and its process's result."""
    run_dir = tmp_path_factory.mktemp("diverged") / "run"
    return types.SimpleNamespace(dir=run_dir, result=run_training(run_dir, *DIVERGE))


def _steps_on_disk(run_dir) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def _listing(run_dir) -> dict[str, str]:
    """Every file under ``run_dir`` with its SHA-256."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


# The saved leaves are read as saved, without a target, on the one device that wrote
# them: Orbax's warning that it takes their sharding from the checkpoint is expected.
@pytest.mark.filterwarnings("ignore:Sharding info not provided when restoring")
def test_divergence_stops_before_a_non_finite_checkpoint(diverged):
    result = diverged.result
    assert result.returncode == 1, result.stderr[-2000:]
    assert "NonFiniteStep: training diverged at step 4 (loss " in result.stderr
    assert "Traceback" not in result.stderr  # The message alone, from the command line.
    assert "the last finite checkpoint is step 3 in " in result.stderr
    assert _steps_on_disk(diverged.dir) == [1, 2, 3]
    for step in (1, 2, 3):
        handler = ocp.PyTreeCheckpointHandler()
        try:
            state = handler.restore(epath.Path(diverged.dir / "checkpoints" / str(step) / "state"))
        finally:
            handler.close()
        leaves = [np.asarray(x) for x in jax.tree.leaves(state)]
        assert all(np.isfinite(x).all() for x in leaves if x.dtype.kind == "f"), step
    assert sorted(losses(diverged.dir)) == [1, 2, 3]  # The bad step was not logged.


def test_a_rerun_resumes_from_the_last_finite_checkpoint(diverged, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(diverged.dir, run_dir)
    with pytest.raises(NonFiniteStep, match="diverged at step 4 .* last finite checkpoint "
                                            "is step 3"):
        loop.main(tiny_config(run_dir, *DIVERGE, "log_every=2"))  # A safe change: logged.
    out = capsys.readouterr().out
    assert "resuming with changed settings: log_every: 1 -> 2" in out
    assert "resumed from step 3" in out and _steps_on_disk(run_dir) == [1, 2, 3]


def test_a_changed_model_on_resume_is_an_error_that_touches_nothing(diverged, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(diverged.dir, run_dir)
    before = _listing(run_dir)
    result = run_training(run_dir, *DIVERGE, "model.use_decay=false", "seq_len=32")
    assert result.returncode == 1, result.stderr[-2000:]
    for words in ("RunConfigChanged: cannot resume", "at step 3", "model.use_decay: True "
                  "(saved) -> False (now)", "seq_len: 64 (saved) -> 32 (now)",
                  "Nothing in the run directory was changed"):
        assert words in result.stderr, words
    assert _listing(run_dir) == before


def test_a_second_trainer_is_refused_before_compiling(tmp_path):
    run_dir = tmp_path / "run"
    with RunLock(run_dir):
        result = run_training(run_dir, "steps=2")
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]  # Nothing written.
    assert result.returncode == 1, result.stderr[-2000:]
    assert (f"RunDirLocked: run_dir {run_dir} is in use by another trainer: pid {os.getpid()} "
            f"on host {socket.gethostname()}") in result.stderr
    assert "model:" not in result.stdout  # Refused before describing (and compiling) anything.


def test_a_stale_lock_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert (f"taking over the stale lock of pid {dead.pid} on host {socket.gethostname()}"
            in capsys.readouterr().out)
    assert not (tmp_path / LOCK_FILE).exists()
