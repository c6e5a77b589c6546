"""fp8 projections (model/fp8.py): flax's fp8 dot with delayed scaling against the
plain product, its scaling state as the train step's "gradient", and a tiny model that
trains, checkpoints and resumes with it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.tolerances import rel_err
from tests.training.runs import losses, tiny_config
from tnl_jax.model import ModelConfig
from tnl_jax.model.fp8 import fp8_scalings, project
from tnl_jax.training import loop

E4M3_MAX = float(jnp.finfo(jnp.float8_e4m3fn).max)


def fp8_product(x, w, g):
    """``project`` in fp8 with fresh scaling: product, gradients (x, w) and the scaling's
    next state (its gradient), for the output cotangent ``g``."""
    graphdef, scaling = nnx.split(fp8_scalings(1, "fp8"))

    def f(scaling, x, w):
        y = project(x, w, nnx.merge(graphdef, scaling), 0).astype(jnp.float32)
        return jnp.vdot(y, g), y

    (_, y), grads = jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)(scaling, x, w)
    return y, grads[1], grads[2], grads[0][0]


def test_fp8_product_is_the_product_within_fp8_rounding_and_records_amax(rng):
    x = jnp.asarray(rng.normal(size=(2, 6, 32)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(32, 3, 8)) * 0.3, jnp.float32)
    g = jnp.asarray(rng.normal(size=(2, 6, 3, 8)), jnp.float32)
    value, dx, dw, meta = fp8_product(x, w, g)
    x32 = x.astype(jnp.float32)
    ref = jnp.tensordot(x32, w, axes=1)
    ref_dx, ref_dw = jax.grad(lambda x, w: jnp.vdot(jnp.tensordot(x, w, axes=1), g),
                              argnums=(0, 1))(x32, w)
    assert rel_err(value, ref) < 0.05  # e4m3 keeps 3 mantissa bits
    assert rel_err(dx.astype(jnp.float32), ref_dx) < 0.1  # e5m2 gradients: 2 bits
    assert rel_err(dw, ref_dw) < 0.1
    # Delayed scaling: this step used scale 1 (empty history) and recorded its amax.
    np.testing.assert_allclose(meta["input_amax"][...][0], jnp.abs(x32).max(), rtol=1e-6)
    np.testing.assert_allclose(meta["kernel_amax"][...][0], jnp.abs(w.astype(jnp.bfloat16)
                                                                 ).astype(jnp.float32).max(),
                               rtol=1e-6)
    assert meta["grad_amax"][...][0] > 0 and meta["input_scale"][...].tolist() == [1.0]


def test_projection_dtype_is_checked():
    with pytest.raises(ValueError, match="projection_dtype='fp16'"):
        ModelConfig(projection_dtype="fp16")


def test_tiny_model_trains_in_fp8_near_bf16_and_resumes_exactly(tmp_path):
    common = ["model.dtype=bfloat16", "checkpoint_every=2"]
    loop.main(tiny_config(tmp_path / "bf16", "steps=1", *common))
    loop.main(tiny_config(tmp_path / "fp8", "steps=4", "model.projection_dtype=fp8", *common))
    loop.main(tiny_config(tmp_path / "resumed", "steps=2", "model.projection_dtype=fp8", *common))
    loop.main(tiny_config(tmp_path / "resumed", "steps=4", "model.projection_dtype=fp8", *common))
    fp8, bf16 = losses(tmp_path / "fp8"), losses(tmp_path / "bf16")
    assert all(np.isfinite(v) for v in fp8.values()) and fp8[4] < fp8[1]
    assert abs(fp8[1] - bf16[1]) <= 0.01 * bf16[1]
    assert losses(tmp_path / "resumed") == fp8  # the scaling state was saved and restored
