"""The losses of a run are the same on one device and on a mesh of 8 fake CPU devices
that uses all three axes (data, fsdp, tensor) at once."""
import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from tests.training.runs import TINY, losses, run_env, tiny_config
from tnl_jax.training import loop, sharding

MESHES = [(2, 2, 2)]
# 4 heads and 264 vocabulary rows, so that the tensor axis splits them.
RUN = ["steps=3", "batch_size=8", "checkpoint_every=100", "model.decoder_attention_heads=4",
       "model.vocab_size=264"]

SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from tnl_jax.training import config, loop
    from tnl_jax.training.metrics import read_metrics
    meshes, run_root, run = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    losses = {}
    for data, fsdp, tensor in meshes:
        cfg = config.load(None, [*run, f"run_dir={run_root}/{data}-{fsdp}-{tensor}",
                                 f"mesh.data={data}", f"mesh.fsdp={fsdp}", f"mesh.tensor={tensor}"])
        loop.main(cfg)
        records = read_metrics(Path(cfg.run_dir) / "metrics.jsonl")
        losses[f"{data}-{fsdp}-{tensor}"] = [r["loss"] for r in records]
    print("LOSSES", json.dumps(losses))
""")


def test_losses_equal_across_mesh_shapes(tmp_path):
    assert jax.device_count() == 1  # The reference, in this process.
    loop.main(tiny_config(tmp_path / "one-device", *RUN))
    reference = np.array(list(losses(tmp_path / "one-device").values()))
    assert len(reference) == 3 and reference[-1] < reference[0]
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(MESHES), str(tmp_path),
                          json.dumps([*TINY, *RUN])], cwd=tmp_path, env=run_env(devices=8),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("LOSSES"))
    for mesh, values in json.loads(line[len("LOSSES"):]).items():
        np.testing.assert_allclose(values, reference, rtol=2e-5, err_msg=mesh)


def test_mesh_shape_resolves_minus_one():
    assert sharding.mesh_shape(-1, 2, 1, 8) == (4, 2, 1)
    assert sharding.mesh_shape(2, 2, 2, 8) == (2, 2, 2)
    with pytest.raises(ValueError, match="needs 4 devices"):
        sharding.mesh_shape(2, 2, 1, 8)
    with pytest.raises(ValueError, match="at most one axis"):
        sharding.mesh_shape(-1, -1, 1, 8)


def test_rules_map_logical_names_and_replicate_what_does_not_divide():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), sharding.MESH_AXES)
    spec = sharding.spec_for(("layers", "embed", "mlp"), (2, 32, 64), mesh)
    assert tuple(spec) == (None, "fsdp", "tensor")
    assert tuple(sharding.spec_for(("vocab", "embed"), (384, 32), mesh)) == ("tensor", "fsdp")
    assert sharding.batch_sharding(mesh).spec[0] == ("data", "fsdp")
