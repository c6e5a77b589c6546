"""The losses of a run are the same on one device and on a mesh of 16 fake CPU devices
that uses all four axes (data, fsdp, context, tensor) at once (documents cross the
sequence shards; the op alone is split 8 ways along the sequence in
tests/kernels/test_partitioning.py)."""
import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from tests.training.runs import TINY, losses, run_env, tiny_config
from tnl_jax.training import config, loop, sharding

MESHES = [(2, 2, 2, 2)]
# 4 heads and 264 vocabulary rows, so that the tensor axis splits them.
RUN = ["steps=3", "batch_size=8", "checkpoint_every=100", "model.decoder_attention_heads=4",
       "model.vocab_size=264"]

SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from tnl_jax.training import config, loop
    from tnl_jax.training.sharding import MESH_AXES
    from tnl_jax.training.metrics import read_metrics
    meshes, run_root, run = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    losses = {}
    for sizes in meshes:
        name = "-".join(map(str, sizes))
        axes = [f"mesh.{axis}={size}" for axis, size in zip(MESH_AXES, sizes)]
        cfg = config.load(None, [*run, f"run_dir={run_root}/{name}", *axes])
        loop.main(cfg)
        records = read_metrics(Path(cfg.run_dir) / "metrics.jsonl")
        losses[name] = [r["loss"] for r in records]
    print("LOSSES", json.dumps(losses))
""")


def test_losses_equal_across_mesh_shapes(tmp_path):
    assert jax.device_count() == 1  # The reference, in this process.
    loop.main(tiny_config(tmp_path / "one-device", *RUN))
    reference = np.array(list(losses(tmp_path / "one-device").values()))
    assert len(reference) == 3 and reference[-1] < reference[0]
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(MESHES), str(tmp_path),
                          json.dumps([*TINY, *RUN])], cwd=tmp_path, env=run_env(devices=16),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("LOSSES"))
    for mesh, values in json.loads(line[len("LOSSES"):]).items():
        np.testing.assert_allclose(values, reference, rtol=2e-5, err_msg=mesh)


def test_mesh_shape_resolves_minus_one():
    assert sharding.MESH_AXES == ("data", "fsdp", "context", "tensor")
    assert sharding.mesh_shape(-1, 2, 1, 1, 8) == (4, 2, 1, 1)
    assert sharding.mesh_shape(2, 1, -1, 2, 8) == (2, 1, 2, 2)
    with pytest.raises(ValueError, match="needs 4 devices"):
        sharding.mesh_shape(2, 2, 1, 1, 8)
    with pytest.raises(ValueError, match="at most one axis"):
        sharding.mesh_shape(-1, 1, -1, 1, 8)
    with pytest.raises(ValueError, match="positive or -1"):
        sharding.mesh_shape(8, 1, 0, 1, 8)


def one_device_mesh():
    return sharding.make_mesh(1, 1, 1, 1)


def test_rules_map_logical_names_and_replicate_what_does_not_divide():
    mesh = one_device_mesh()
    spec = sharding.spec_for(("layers", "embed", "mlp"), (2, 32, 64), mesh)
    assert tuple(spec) == (None, "fsdp", "tensor")
    assert tuple(sharding.spec_for(("vocab", "embed"), (384, 32), mesh)) == ("tensor", "fsdp")
    assert tuple(sharding.batch_sharding(mesh).spec) == (("data", "fsdp"), "context")


def test_one_process_loads_every_row_whole():
    mesh = one_device_mesh()
    assert sharding.process_rows(mesh) == (0, 1)
    local = {"input_ids": np.arange(4 * 6, dtype=np.int32).reshape(4, 6)}
    batch = sharding.global_batch(local, mesh)
    assert batch["input_ids"].shape == (4, 6)
    np.testing.assert_array_equal(batch["input_ids"], local["input_ids"])


def test_the_batch_must_split_evenly():
    mesh = one_device_mesh()
    sharding.check_batch(batch_size=3, seq_len=7, grad_accum=3, mesh=mesh)
    with pytest.raises(ValueError, match=r"batch_size=4 must divide by grad_accum \(3\)"):
        sharding.check_batch(batch_size=4, seq_len=8, grad_accum=3, mesh=mesh)


def test_the_mesh_is_configured_with_a_context_axis():
    cfg = config.load(None, ["mesh.context=4"])
    assert (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.context, cfg.mesh.tensor) == (-1, 1, 4, 1)
    with pytest.raises(ValueError, match="nearest valid key: 'mesh.context'"):
        config.load(None, ["mesh.contxt=4"])
