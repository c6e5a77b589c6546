"""The model under a mesh (rows, sequence and heads split: data, context, tensor) gives
the logits and gradients it gives without one, for every layer kind: LRPE, linear
with a learned decay, softmax. Packed documents cross the sequence shards."""
import json
import subprocess
import sys
import textwrap

from tests.paths import ROOT
from tests.tolerances import F32_TOL
from tests.training.runs import run_env

SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from tests.conftest import random_model
    from tests.tolerances import rel_err
    from tnl_jax.model import token_mixer
    from tnl_jax.partitioning import MESH_AXES

    op, used = token_mixer.lightning_attention, []
    def recording_op(*args, **kwargs):
        used.append(kwargs["shard_axes"])
        return op(*args, **kwargs)
    token_mixer.lightning_attention = recording_op

    model = random_model(3, architecture="hybrid", softmax_every=2, decay_learnable=True)
    assert model.cfg.layer_kinds() == ["lrpe", "softmax", "linear"]
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, model.cfg.vocab_size, (4, 32)))
    segments = jnp.asarray(np.repeat([[1] * 5 + [2] * 20 + [3] * 7], 4, 0))
    weights = jnp.asarray(rng.normal(size=(4, 32, model.cfg.vocab_size)), jnp.float32)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        logits = nnx.merge(graphdef, params, rest)(ids, segment_ids=segments)
        return jnp.sum(logits * weights), logits

    step = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (_, alone), grads = step(params)
    mesh = jax.make_mesh(%s, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 4)
    with jax.set_mesh(mesh):
        (_, split), split_grads = step(params)
    print("AXES", json.dumps([[a.batch, a.seq, a.heads] for a in used if a is not None]))
    errors = {"logits": rel_err(split, alone),
              "grads": max(rel_err(a, b) for a, b in zip(jax.tree.leaves(split_grads),
                                                         jax.tree.leaves(grads)))}
    print("ERRORS", json.dumps(errors))
""")


def test_the_model_under_a_mesh_matches_one_device():
    out = subprocess.run([sys.executable, "-c", SCRIPT % "(2, 1, 2, 2)"], cwd=ROOT,
                         env=run_env(devices=8), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = dict(line.split(" ", 1) for line in out.stdout.splitlines()
                   if line.startswith(("AXES", "ERRORS")))
    # Both linear layers split the op over rows, sequence and heads.
    assert json.loads(printed["AXES"]) == [[["data"], ["context"], ["tensor"]]] * 2
    errors = json.loads(printed["ERRORS"])
    assert errors["logits"] < F32_TOL and errors["grads"] < F32_TOL, errors
