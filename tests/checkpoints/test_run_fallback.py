"""A run whose newest checkpoint lost files (its ``state/``, a tensor directory, its
``config/``): ``load_model``, ``init_from`` and ``tnl-generate`` read the newest intact
checkpoint and say so, as resuming does; with none intact, an error names the run."""
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from tests.training.runs import tiny_config
from tnl_jax import create_model
from tnl_jax.checkpoints import loader
from tnl_jax.checkpoints.run_dir import UnreadableCheckpoints
from tnl_jax.cli import generate as generate_cli
from tnl_jax.training import config as train_config
from tnl_jax.training import loop, sharding

LOST = {"state": "state", "tensors": "state/ocdbt.process_0", "config": "config"}
FELL_BACK = r"checkpoint at step 4 in .*checkpoints cannot be restored: .*; using step 2 instead"


def saved_params(run, step):
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(run / "checkpoints" / str(step) / "state")["params"]


def damaged_copy(tiny_run, tmp_path, lost: str, steps=(4,)):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.dir, run)
    for step in steps:
        shutil.rmtree(run / "checkpoints" / str(step) / LOST[lost])
    return run


def assert_params_of_step(params, run, step):
    want = jax.tree.leaves(saved_params(run, step))
    got = jax.tree.leaves(nnx.to_pure_dict(params))
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("lost", sorted(LOST))
def test_load_model_reads_the_newest_intact_checkpoint(tiny_run, tmp_path, lost):
    run = damaged_copy(tiny_run, tmp_path, lost)
    with pytest.warns(UserWarning, match=FELL_BACK):
        model = loader.load_model(run, dtype=np.float32)
    assert_params_of_step(nnx.state(model, nnx.Param), run, 2)
    assert not any(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(saved_params(tiny_run.dir, 4)), jax.tree.leaves(saved_params(run, 2))))


def test_init_from_and_generate_read_the_newest_intact_checkpoint(tiny_run, tmp_path, capsys):
    run = damaged_copy(tiny_run, tmp_path, "tensors")
    cfg = tiny_config(tmp_path / "new", f"init_from={run}")
    with pytest.warns(UserWarning, match=FELL_BACK):
        _, params, _, _ = loop.initial_params(cfg, sharding.make_mesh())
    assert_params_of_step(params, run, 2)
    with pytest.warns(UserWarning, match=FELL_BACK):
        generate_cli.main(["--checkpoint", str(run), "--prompt", "def ", "--max-new-tokens", "3",
                           "--temperature", "0", "--dtype", "float32"])
    assert capsys.readouterr().out.startswith("def ")


@pytest.mark.parametrize("lost", ["state", "config"])
def test_no_intact_checkpoint_is_an_error_naming_the_run(tiny_run, tmp_path, lost, capsys):
    run = damaged_copy(tiny_run, tmp_path, lost, steps=(2, 4))
    if lost == "config":  # init_from= reads the model config first.
        with pytest.raises(UnreadableCheckpoints, match=rf"{run}: no checkpoint in .* can be read"):
            train_config.load(None, [f"init_from={run}"])
    like = nnx.state(nnx.eval_shape(lambda: create_model(tiny_config(tmp_path).model,
                                                         nnx.Rngs(0))), nnx.Param)
    with pytest.raises(UnreadableCheckpoints, match=r"step 4: cannot be restored.*\n.*step 2"
                       ) as caught:
        loader.load_params(run, like)
    assert "do not match the model config" not in str(caught.value)
    with pytest.raises(SystemExit) as exit_:
        generate_cli.main(["--checkpoint", str(run), "--prompt", "x", "--tokenizer", "bytes"])
    assert exit_.value.code == 2 and "can be read" in capsys.readouterr().err
