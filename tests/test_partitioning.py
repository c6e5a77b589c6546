"""The logical-axis rules: specs of parameters and activations, and the model's
constraints, which do nothing without a mesh."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, PartitionSpec as P

from pallas_kernels import ShardAxes
from tnl_jax.model import DecoderLayer
from tnl_jax.model.token_mixer import op_shard_axes
from tnl_jax.partitioning import ACTIVATION, MESH_AXES, constrain, spec_for, split_axes

MESH = AbstractMesh((2, 1, 2, 2), MESH_AXES)  # data, fsdp, context, tensor


def test_activations_split_rows_over_data_axes_and_sequence_over_context():
    assert spec_for(ACTIVATION, (8, 64, 32), MESH) == P(("data", "fsdp"), "context", None)
    assert spec_for(("batch", "seq", "heads", None), (8, 64, 4, 8), MESH) == P(
        ("data", "fsdp"), "context", "tensor", None)
    assert spec_for(("layers", "embed", "mlp"), (2, 32, 64), MESH) == P(None, "fsdp", "tensor")


def test_what_does_not_divide_is_replicated():
    with pytest.warns(UserWarning, match="'seq' of size 63"):
        assert spec_for(ACTIVATION, (8, 63, 32), MESH) == P(("data", "fsdp"), None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert spec_for(("batch", "seq"), (3, 64), MESH, warn=False) == P(None, "context")


def test_an_axis_serves_one_dimension_and_missing_axes_are_left_out():
    assert spec_for(("batch", "embed"), (8, 32), MESH) == P(("data", "fsdp"), None)
    data_only = AbstractMesh((4,), ("data",))
    assert spec_for(("batch", "seq", "heads"), (8, 64, 4), data_only) == P("data", None, None)
    with pytest.raises(ValueError, match="logical axis 'sequence' has no rule"):
        spec_for(("sequence",), (64,), MESH)


def test_without_a_mesh_the_model_constrains_nothing():
    x = jnp.ones((2, 8, 32))
    assert constrain(x, ACTIVATION) is x
    assert split_axes(ACTIVATION, x.shape) is None and op_shard_axes((2, 8, 4, 8)) is None
    layer = DecoderLayer(4, 32, 64, decay=jnp.full((4,), 0.1), rngs=nnx.Rngs(0))
    jaxpr = str(jax.make_jaxpr(lambda x: layer(x))(x))
    assert "sharding_constraint" not in jaxpr and "shard_map" not in jaxpr


def test_under_a_mesh_the_op_is_split_as_the_rules_say():
    with jax.sharding.use_abstract_mesh(MESH):
        assert op_shard_axes((8, 64, 4, 16)) == ShardAxes(("data",), ("context",), ("tensor",))
        assert op_shard_axes((8, 63, 3, 16)) == ShardAxes(("data",), (), ())


def test_a_one_device_mesh_changes_nothing():
    """Created and called under a mesh, a layer holds and computes what it does without."""
    make = lambda: DecoderLayer(4, 32, 64, use_lrpe=True, decay=jnp.full((4,), 0.1),
                                rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 32)), jnp.float32)
    mesh = jax.make_mesh((1, 1, 1, 1), MESH_AXES,
                         axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))
    with jax.set_mesh(mesh):
        layer = make()
        assert op_shard_axes((2, 8, 4, 16)) == ShardAxes()
        under_mesh = nnx.jit(lambda layer, x: layer(x))(layer, x)
    np.testing.assert_allclose(under_mesh, make()(x), rtol=1e-6, atol=1e-6)
