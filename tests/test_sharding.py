"""One training step's loss is the same on every mesh shape (8 fake CPU devices)."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tnl_jax import sharding
from train_helpers import ROOT, run_env

MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 2, 4), (4, 1, 2)]

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    from tnl_jax import train, train_config
    from train_helpers import TINY
    losses = {}
    for data, fsdp, tensor in json.loads(sys.argv[1]):
        cfg = train_config.load(None, [*TINY, "steps=3", "batch_size=8", "checkpoint_every=100",
                                       "model.decoder_attention_heads=4", "model.vocab_size=264",
                                       f"run_dir={sys.argv[2]}/{data}-{fsdp}-{tensor}",
                                       f"mesh.data={data}", f"mesh.fsdp={fsdp}", f"mesh.tensor={tensor}"])
        train.main(cfg)
        from tnl_jax.metrics import read_metrics
        from pathlib import Path
        losses[f"{data}-{fsdp}-{tensor}"] = [r["loss"] for r in read_metrics(Path(cfg.run_dir) / "metrics.jsonl")]
    print("LOSSES", json.dumps(losses))
""")


def test_losses_equal_across_mesh_shapes(tmp_path):
    import json
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(MESHES), str(tmp_path)],
                         cwd=ROOT / "tests", env=run_env(devices=8), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("LOSSES"))
    losses = json.loads(line[len("LOSSES"):])
    reference = np.array(losses["8-1-1"])
    assert len(reference) == 3 and reference[-1] < reference[0]
    for mesh, values in losses.items():
        np.testing.assert_allclose(values, reference, rtol=2e-5, err_msg=mesh)


def test_mesh_shape_resolves_minus_one():
    assert sharding.mesh_shape(-1, 2, 1, 8) == (4, 2, 1)
    assert sharding.mesh_shape(2, 2, 2, 8) == (2, 2, 2)
    with pytest.raises(ValueError, match="needs 4 devices"):
        sharding.mesh_shape(2, 2, 1, 8)
    with pytest.raises(ValueError, match="at most one axis"):
        sharding.mesh_shape(-1, -1, 1, 8)


def test_rules_map_logical_names_and_replicate_what_does_not_divide():
    import jax
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), sharding.MESH_AXES)
    spec = sharding.spec_for(("layers", "embed", "mlp"), (2, 32, 64), mesh)
    assert tuple(spec) == (None, "fsdp", "tensor")
    assert tuple(sharding.spec_for(("vocab", "embed"), (384, 32), mesh)) == ("tensor", "fsdp")
    assert sharding.batch_sharding(mesh).spec[0] == ("data", "fsdp")
