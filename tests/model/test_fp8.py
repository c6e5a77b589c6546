"""fp8 projections (model/fp8.py): flax's fp8 dot with delayed scaling against the
plain product, its scaling state as the train step's "gradient", and a tiny model that
trains, checkpoints and resumes with it."""
import grain
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tests.tolerances import rel_err
from tests.conftest import SMALL_MODEL
from tests.training.runs import tiny_config
from tnl_jax.model import ModelConfig, create_model
from tnl_jax.model.fp8 import fp8_scalings, is_fp8_meta, project
from tnl_jax.training import config as train_config
from tnl_jax.training import sharding
from tnl_jax.training.loop import Trainer
from tnl_jax.training.run_checkpoints import RunCheckpoints
from tnl_jax.training.steps import _reduced_in, token_losses

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


def random_batch(rng, rows: int, seq: int, vocab: int) -> dict[str, np.ndarray]:
    tokens = rng.integers(3, vocab, (rows, seq + 1), dtype=np.int32)
    return {"input_ids": tokens[:, :-1], "targets": tokens[:, 1:],
            "segment_ids": np.ones((rows, seq), np.int32),
            "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (rows, seq)).copy(),
            "loss_mask": np.ones((rows, seq), np.float32)}


def test_tiny_model_trains_in_fp8_near_bf16_and_resumes_exactly(tmp_path, rng):
    cfg = tiny_config(tmp_path, "model.dtype=bfloat16", "model.projection_dtype=fp8",
                      "model.remat=projections")
    mesh = sharding.make_mesh(1, 1, 1, 1)
    trainer = Trainer(cfg, mesh)
    local = random_batch(rng, cfg.batch_size, cfg.seq_len, cfg.model.vocab_size)
    batch = sharding.global_batch(local, mesh)
    state, first = trainer.train_step(trainer.initial_state, batch)
    # Step 1 against the same weights with bf16 projections (the fp8 scaling variables
    # draw no random numbers: the other parameters are the same).
    bf16 = create_model(cfg.model.replace(projection_dtype=None), nnx.Rngs(cfg.seed))
    graphdef, params, rest = nnx.split(bf16, nnx.Param, ...)
    bf16_loss = jnp.mean(jax.jit(token_losses, static_argnums=0)(graphdef, params, rest,
                                                                 local)[0])
    assert abs(float(first["loss"]) - float(bf16_loss)) <= 0.01 * float(bf16_loss)
    state, _ = trainer.train_step(state, batch)
    meta = {jax.tree_util.keystr(path): leaf for path, leaf
            in jax.tree_util.tree_leaves_with_path(state["params"]) if is_fp8_meta(path)}
    # Two layer stacks (LRPE, linear), each with 3 + 3 products of 6 scaling variables.
    assert len(meta) == 2 * 6 * 6
    assert all(float(jnp.min(v[..., 0])) > 0 for k, v in meta.items() if "amax" in k)
    assert all(float(jnp.min(v)) != 1.0 for k, v in meta.items() if "input_scale" in k)
    # Saved at step 2 and restored: the next step's loss and state are the same.
    checkpoints = RunCheckpoints(tmp_path, keep=1)
    iterator = iter(grain.MapDataset.range(8).to_iter_dataset())
    checkpoints.save(2, state, iterator, train_config.to_dict(cfg))
    checkpoints.wait()
    _, restored = checkpoints.restore_latest(state, iterator)
    checkpoints.close()
    continued, stats = trainer.train_step(state, batch)
    resumed, resumed_stats = trainer.train_step(restored, batch)
    assert np.isfinite(float(stats["loss"])) and float(stats["loss"]) < float(first["loss"])
    assert float(resumed_stats["loss"]) == float(stats["loss"])
    for a, b in zip(jax.tree.leaves(continued["params"]), jax.tree.leaves(resumed["params"])):
        np.testing.assert_array_equal(a, b)


def test_bf16_gradient_reduction_keeps_the_fp8_state_in_float32():
    """grad_reduce_dtype=bfloat16 takes the gradient against bf16 copies of the weight
    matrices; the scaling state's "gradient" is its next value and stays float32."""
    cfg = ModelConfig(**{**SMALL_MODEL, "projection_dtype": "fp8"})
    params = nnx.state(create_model(cfg, nnx.Rngs(0)), nnx.Param)
    leaves = jax.tree_util.tree_leaves_with_path(_reduced_in("bfloat16", params))
    assert sum(is_fp8_meta(path) for path, _ in leaves) > 0
    for path, leaf in leaves:
        matrix = leaf.ndim >= 2 and not is_fp8_meta(path)
        assert leaf.dtype == (jnp.bfloat16 if matrix else jnp.float32), path
