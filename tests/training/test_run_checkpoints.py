"""Exact resume after kill -9 (its lock taken over, its metrics kept), SIGTERM saves,
corrupt or non-finite checkpoints are passed over (not moved), none usable is an error.

The interrupted runs are real processes (`python train.py`), killed mid-run; the
reference run and the reruns are in-process (the same computation on the same CPU)."""
import shutil
import signal
import subprocess
import time
import types

import grain
import jax.numpy as jnp
import pytest

from tests.training.runs import losses, run_env, tiny_config, train_command
from tnl_jax.training import config as train_config
from tnl_jax.training import loop, resume
from tnl_jax.training.run_checkpoints import ProcessCountChanged, RunCheckpoints

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
    logged_before = (tmp_path / "metrics.jsonl").read_text()
    loop.main(tiny_config(tmp_path, *RUN))
    out = capsys.readouterr().out
    assert f"taking over the stale lock of pid {proc.pid}" in out and "resumed from step" in out
    assert losses(tmp_path) == uninterrupted.losses  # Exactly equal, every step.
    assert (tmp_path / "metrics.jsonl").read_text().startswith(logged_before)  # Appended.
    assert not (tmp_path / "trainer.lock").exists()


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


def test_corrupt_latest_checkpoint_falls_back(tmp_path, uninterrupted, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted.dir, run_dir)
    for f in (run_dir / "checkpoints" / str(STEPS) / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match=f"checkpoint at step {STEPS} .* cannot be restored.*"
                                         f"left as it is until this run saves step {STEPS}"):
        loop.main(tiny_config(run_dir, *RUN))
    assert losses(run_dir) == uninterrupted.losses  # Recomputed from step 9, identically.
    assert f"replacing the checkpoint of step {STEPS}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # Nothing set aside.


def _saved(run_dir, states):
    """A run directory holding one checkpoint per ``{step: params}`` (tiny states)."""
    iterator = iter(grain.MapDataset.range(8).to_iter_dataset())
    checkpoints = RunCheckpoints(run_dir, keep=5)
    for step, params in states.items():
        checkpoints.save(step, {"params": params, "step": jnp.int32(step)}, iterator,
                         train_config.to_dict(train_config.TrainConfig()))
    checkpoints.wait()
    return checkpoints, iterator


def test_a_non_finite_checkpoint_is_passed_over_not_resumed(tmp_path):
    """Checkpoints written before the train step checked its state may hold NaN."""
    checkpoints, iterator = _saved(tmp_path, {2: jnp.array([1.0, 2.0]),
                                              4: jnp.array([1.0, jnp.nan])})
    with pytest.warns(UserWarning, match="step 4 .* holds 1 non-finite values; resuming from "
                                         "step 2"):
        step, state = resume.restore(checkpoints, str(tmp_path), {
            "params": jnp.zeros(2), "step": jnp.int32(0)}, iterator,
            train_config.to_dict(train_config.TrainConfig()), announced_step=4)
    checkpoints.close()
    assert step == 2 and state["params"].tolist() == [1.0, 2.0]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "4"]


def test_a_checkpoint_of_another_process_count_names_it(tmp_path):
    """Two processes' data positions (one file each) cannot be resumed by one: the
    error says so and how to go on, and nothing is moved."""
    checkpoints, iterator = _saved(tmp_path, {2: jnp.array([1.0, 2.0])})
    data = tmp_path / "checkpoints" / "2" / "data"
    (one,) = data.glob("process_*.json")
    shutil.copy(one, data / "process_1-of-2.json")
    one.rename(data / "process_0-of-2.json")
    with pytest.raises(ProcessCountChanged, match=r"step 2: .*saved by 2 processes .* this "
                                                   r"run has 1.*JAX_NUM_PROCESSES=2.*init_from="):
        checkpoints.restore_latest({"params": jnp.zeros(2), "step": jnp.int32(0)}, iterator)
    checkpoints.close()
    assert sorted(p.name for p in data.glob("process_*")) == ["process_0-of-2.json",
                                                              "process_1-of-2.json"]


def test_partial_checkpoint_directory_is_ignored(tmp_path, uninterrupted):
    """A save that was cut short (Orbax's temporary name) is never restored."""
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted.dir, run_dir)
    checkpoints = run_dir / "checkpoints"
    (checkpoints / str(STEPS)).rename(checkpoints / f"{STEPS}.orbax-checkpoint-tmp-123")
    record = loop.main(tiny_config(run_dir, *RUN))
    assert record["step"] == STEPS and losses(run_dir) == uninterrupted.losses
    assert not (checkpoints / f"{STEPS}.orbax-checkpoint-tmp-123").exists()


def test_safe_changes_on_resume_are_listed_and_name_real_keys():
    saved = train_config.TrainConfig()
    current = train_config.apply(saved, {"steps": 9, "lr": 1e-4, "model.remat": "full",
                                         "mesh.fsdp": 2, "grad_clip": 0.5,
                                         "model.norm_kernel": "pallas"})
    assert resume.check(train_config.to_dict(saved), train_config.to_dict(current), "x") == [
        "grad_clip: 1.0 -> 0.5", "lr: 0.003 -> 0.0001", "mesh.fsdp: 1 -> 2",
        "model.norm_kernel: 'xla' -> 'pallas'", "model.remat: 'none' -> 'full'",
        "steps: 1000 -> 9"]
    assert resume.SAFE_TO_CHANGE <= set(train_config.all_keys_of(train_config.TrainConfig))
