"""Exact resume after kill -9, SIGTERM saves, corrupt checkpoints fall back, NaN stops."""
import shutil
import signal
import subprocess
import time

import pytest

from tnl_jax import train
from tnl_jax.metrics import read_metrics

from train_helpers import ROOT, losses, run_env, run_training, tiny_config, train_command

STEPS = 30
RUN = [f"steps={STEPS}", "checkpoint_every=4", "keep_checkpoints=2"]


def _start(run_dir):
    return subprocess.Popen(train_command(run_dir, *RUN), cwd=ROOT, env=run_env(),
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
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    out = run_training(run_dir, *RUN)
    assert out.returncode == 0, out.stderr[-3000:]
    result = losses(run_dir)
    assert sorted(result) == list(range(1, STEPS + 1))
    return result


def test_kill_9_then_rerun_reproduces_every_loss(tmp_path, uninterrupted):
    proc = _start(tmp_path)
    _wait_for_step(tmp_path, 11, proc)  # Between the checkpoints of steps 8 and 12.
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(losses(tmp_path)) < STEPS
    out = run_training(tmp_path, *RUN)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from step" in out.stdout
    assert losses(tmp_path) == uninterrupted  # Exactly equal, every step.


def test_sigterm_saves_then_exits(tmp_path, uninterrupted):
    proc = _start(tmp_path)
    _wait_for_step(tmp_path, 6, proc)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    stopped_at = max(losses(tmp_path))
    assert f"SIGTERM: saved step {stopped_at}" in output
    assert (tmp_path / "checkpoints" / str(stopped_at)).is_dir()
    out = run_training(tmp_path, *RUN)
    assert out.returncode == 0 and f"resumed from step {stopped_at}" in out.stdout
    assert losses(tmp_path) == uninterrupted


def test_corrupt_latest_checkpoint_falls_back(tmp_path):
    train.main(tiny_config(tmp_path, "steps=8", "checkpoint_every=4"))
    first = losses(tmp_path)
    state_dir = tmp_path / "checkpoints" / "8" / "state"
    for f in state_dir.rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="checkpoint at step 8 .* cannot be restored"):
        train.main(tiny_config(tmp_path, "steps=8", "checkpoint_every=4"))
    assert losses(tmp_path) == first  # Steps 5-8 recomputed from step 4, identically.
    assert len(list((tmp_path / "checkpoints.unreadable").iterdir())) == 1


def test_partial_checkpoint_directory_is_ignored(tmp_path):
    train.main(tiny_config(tmp_path, "steps=4", "checkpoint_every=4"))
    shutil.copytree(tmp_path / "checkpoints" / "4",
                    tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp-123")
    record = train.main(tiny_config(tmp_path, "steps=6", "checkpoint_every=4"))
    assert record["step"] == 6 and sorted(losses(tmp_path)) == list(range(1, 7))


def test_non_finite_loss_stops_naming_the_step(tmp_path):
    cfg = tiny_config(tmp_path, "steps=20", "checkpoint_every=2", "lr=1e30", "warmup=1",
                      "grad_clip=0")
    with pytest.raises(train.NonFiniteLoss, match=r"non-finite loss .* at step (\d+)") as error:
        train.main(cfg)
    records = read_metrics(tmp_path / "metrics.jsonl")
    last_good = max(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert f"step {last_good}" in str(error.value)
    assert all(r["loss"] == r["loss"] for r in records)  # No NaN was logged or saved.
    assert last_good < 20
