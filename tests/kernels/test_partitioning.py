"""The op over a mesh: every mode (Auto axes by custom_partitioning, Explicit axes,
the caller's shard_map, shard_axes) and every split (batch, heads, sequence, all three)
equals the unsharded op in o, final state and every gradient, and the compiled step
moves nothing larger than the context gather (tests/kernels/sharded_cases.py, on 8
fake CPU devices in a subprocess)."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import ShardAxes, lightning_attention
from pallas_kernels.lightning import context_parallel
from tests.kernels.sharded_cases import cases
from tests.paths import ROOT
from tests.tolerances import BF16_TOL, F32_TOL
from tests.training.runs import run_env


@pytest.fixture(scope="module", params=["xla", "interpret"])
def sharded_cases(request):
    """``(backend, the cases' results)``."""
    out = subprocess.run([sys.executable, "-m", "tests.kernels.sharded_cases", request.param],
                         cwd=ROOT, env=run_env(devices=8), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return request.param, [json.loads(line[len("CASE "):])
                           for line in out.stdout.splitlines() if line.startswith("CASE ")]


def test_sharded_op_equals_unsharded_and_moves_only_states(sharded_cases):
    backend, results = sharded_cases
    assert [case["name"] for case in results] == [name for name, *_ in cases(backend)]
    for case in results:
        tol = BF16_TOL if case["dtype"] == "bfloat16" else F32_TOL
        bad = {k: e for k, e in case["errors"].items() if not e <= tol}
        assert not bad, (case["name"], bad)
        assert {"o", "final", "dq", "dk", "dv"} <= set(case["errors"]), case
        # State-sized collectives only: the gather of the shards' states (and scalars).
        assert case["largest_collective"] <= case["state_bound"], case
        assert case["state_bound"] * 2 <= case["activation"], case


def test_first_run_mask_and_boundary_states():
    segments = jnp.array([[3, 3, 5, 3], [1, 1, 1, 1]])
    mask = context_parallel.first_run_mask(segments, 2, 4)
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    # Three shards of one row, one head: the run goes on through shard 0, is cut
    # inside shard 1 and restarts exactly at the start of shard 2.
    own = jnp.arange(1.0, 4.0).reshape(3, 1, 1, 1, 1)
    first, last = jnp.array([[7], [7], [9]]), jnp.array([[7], [8], [9]])
    one_run = jnp.array([[1], [0], [1]]).astype(bool)
    decay = jnp.array([0.5])
    states, carries = context_parallel.boundary_states(own, first, last, one_run, decay, 2,
                                                       jnp.full((1, 1, 1, 1), 10.0))
    lam2 = float(jnp.exp(-1.0))
    assert jnp.allclose(states[:, 0, 0, 0, 0],
                        jnp.array([10.0, 1.0 + lam2 * 10.0, 2.0, 3.0])), states
    assert carries[:, 0].tolist() == [True, True, False]


def test_shard_axes_on_one_device_mesh_equals_plain():
    """A mesh of one device: shard_axes and context_axis are the plain op."""
    key = jax.random.split(jax.random.key(3), 3)
    q, k, v = (jax.random.normal(x, (2, 40, 2, 16)) * 0.3 for x in key)
    decay = jnp.array([0.1, 0.7])
    plain = lightning_attention(q, k, v, decay, backend="xla")
    mesh = jax.make_mesh((1,), ("context",), axis_types=(jax.sharding.AxisType.Auto,))
    with jax.set_mesh(mesh):
        sharded = jax.jit(lambda *a: lightning_attention(
            *a, backend="xla", shard_axes=ShardAxes(seq="context")))(q, k, v, decay)
    assert jnp.allclose(sharded, plain, atol=1e-6)
