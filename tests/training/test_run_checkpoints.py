"""Exact resume after kill -9, SIGTERM saves, corrupt checkpoints fall back, NaN stops.

The interrupted runs are real processes (`python train.py`), killed mid-run; the
reference run and the reruns are in-process (the same computation on the same CPU)."""
import shutil
import signal
import subprocess
import time
import types

import pytest

from tests.training.runs import losses, run_env, tiny_config, train_command
from tnl_jax.training import loop
from tnl_jax.training.metrics import read_metrics

STEPS = 12
RUN = [f"steps={STEPS}", "checkpoint_every=3", "keep_checkpoints=2"]


def _start(run_dir):
    return subprocess.Popen(train_command(run_dir, *RUN), cwd=run_dir.parent, env=run_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_step(run_dir, step, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if max(losses(run_dir), default=0) >= step:
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    raise TimeoutError(f"step {step} not reached")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same run, never stopped (its directory and losses)."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    loop.main(tiny_config(run_dir, *RUN))
    result = losses(run_dir)
    assert sorted(result) == list(range(1, STEPS + 1))
    return types.SimpleNamespace(dir=run_dir, losses=result)


def test_kill_9_then_rerun_reproduces_every_loss(tmp_path, uninterrupted, capsys):
    proc = _start(tmp_path)
    _wait_for_step(tmp_path, 8, proc)  # After the checkpoint of step 3 (and maybe 6), before 9.
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(losses(tmp_path)) < STEPS
    loop.main(tiny_config(tmp_path, *RUN))
    assert "resumed from step" in capsys.readouterr().out
    assert losses(tmp_path) == uninterrupted.losses  # Exactly equal, every step.


def test_sigterm_saves_then_exits(tmp_path, uninterrupted, capsys):
    proc = _start(tmp_path)
    _wait_for_step(tmp_path, 3, proc)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    stopped_at = max(losses(tmp_path))
    assert f"SIGTERM: saved step {stopped_at}" in output
    assert (tmp_path / "checkpoints" / str(stopped_at)).is_dir()
    loop.main(tiny_config(tmp_path, *RUN))
    assert f"resumed from step {stopped_at}" in capsys.readouterr().out
    assert losses(tmp_path) == uninterrupted.losses


def test_corrupt_latest_checkpoint_falls_back(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted.dir, run_dir)
    for f in (run_dir / "checkpoints" / str(STEPS) / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match=f"checkpoint at step {STEPS} .* cannot be restored"):
        loop.main(tiny_config(run_dir, *RUN))
    assert losses(run_dir) == uninterrupted.losses  # Recomputed from step 9, identically.
    assert len(list((run_dir / "checkpoints.unreadable").iterdir())) == 1


def test_partial_checkpoint_directory_is_ignored(tmp_path, uninterrupted):
    """A save that was cut short (Orbax's temporary name) is never restored."""
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted.dir, run_dir)
    checkpoints = run_dir / "checkpoints"
    (checkpoints / str(STEPS)).rename(checkpoints / f"{STEPS}.orbax-checkpoint-tmp-123")
    record = loop.main(tiny_config(run_dir, *RUN))
    assert record["step"] == STEPS and losses(run_dir) == uninterrupted.losses
    assert not (checkpoints / f"{STEPS}.orbax-checkpoint-tmp-123").exists()


def test_non_finite_loss_stops_naming_the_step(tmp_path):
    cfg = tiny_config(tmp_path, "steps=20", "checkpoint_every=2", "lr=1e30", "warmup=1",
                      "grad_clip=0")
    with pytest.raises(loop.NonFiniteLoss, match=r"non-finite (loss|grad_norm) .* at step (\d+)") as error:
        loop.main(cfg)
    records = read_metrics(tmp_path / "metrics.jsonl")
    last_good = max(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert f"step {last_good}" in str(error.value)
    assert all(r["loss"] == r["loss"] for r in records)  # No NaN was logged or saved.
    assert last_good < 20
