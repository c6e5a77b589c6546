"""The fused SRMSNorm kernels (pallas_kernels.norms), interpreted, against the plain
``jnp`` reference: outputs and gradients (``jax.vjp`` of both, a random cotangent) in
float32 and bfloat16 at widths 64 to 256, with row counts that the blocks do not divide
and leading dims; rows of very large and very small magnitude; one block of rows set
by ``NormConfig``; and the Triton lowering itself (to the GPU's IR, on this machine)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from pallas_kernels.norms import NormConfig, reference, srms_norm, srms_norm_gate
from tests.tolerances import BF16_TOL, F32_TOL, rel_err

TOL = {jnp.float32: F32_TOL, jnp.bfloat16: BF16_TOL}
EPS = 1e-6


def fused_norm(x, **kwargs):
    return srms_norm(x, EPS, backend="interpret", **kwargs)


def fused_gate(o, u, **kwargs):
    return srms_norm_gate(o, u, EPS, backend="interpret", **kwargs)


def outputs_and_grads(fn, operands, cotangent):
    """``(fn(*operands), grads of every operand)`` by ``jax.vjp``, jitted."""
    def run(operands, cotangent):
        out, vjp = jax.vjp(fn, *operands)
        return out, vjp(cotangent)
    return jax.jit(run)(operands, cotangent)


def assert_close(fn, ref, operands, cotangent, tol):
    out, grads = outputs_and_grads(fn, operands, cotangent)
    ref_out, ref_grads = outputs_and_grads(ref, operands, cotangent)
    assert out.shape == ref_out.shape and out.dtype == operands[0].dtype
    assert rel_err(out, ref_out) <= tol, rel_err(out, ref_out)
    for grad, ref_grad, operand in zip(grads, ref_grads, operands, strict=True):
        assert grad.shape == operand.shape and grad.dtype == operand.dtype
        assert rel_err(grad, ref_grad) <= tol, rel_err(grad, ref_grad)


def normal(rng, shape, dtype, scale=1.0):
    return jnp.asarray(rng.normal(size=shape) * scale, dtype)


# 37 rows (the blocks of 32 to 128 rows leave a ragged last block, masked), and
# 2 x 19 rows in leading dims.
CASES = [((37, 64), jnp.float32), ((37, 64), jnp.bfloat16),
         ((2, 19, 128), jnp.float32), ((2, 19, 128), jnp.bfloat16),
         ((37, 256), jnp.float32), ((37, 256), jnp.bfloat16)]


@pytest.mark.parametrize("shape, dtype", CASES)
def test_norm_matches_the_reference(rng, shape, dtype):
    x, dy = normal(rng, shape, dtype, 3.0), normal(rng, shape, dtype)
    assert_close(fused_norm, lambda x: reference.srms_norm(x, EPS), (x,), dy, TOL[dtype])


@pytest.mark.parametrize("shape, dtype", CASES)
def test_gate_matches_the_reference(rng, shape, dtype):
    o, u, dz = (normal(rng, shape, dtype) for _ in range(3))
    assert_close(fused_gate, lambda o, u: reference.srms_norm_gate(o, u, EPS), (o, u), dz,
                 TOL[dtype])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_rows_of_large_and_tiny_magnitude(rng, dtype):
    """Rows at 1e4 (squares near 1e8, far past bfloat16's precision, fine in float32)
    and at 1e-4 (mean square 1e-8, below eps: the norm scales them up ~1000x), each
    kind checked on its own rows (their gradients differ by 1e8 in size)."""
    scales = np.where(np.arange(37) % 2 == 0, 1e4, 1e-4)[:, None]
    x, u = normal(rng, (37, 128), dtype) * scales.astype(np.float32), normal(rng, (37, 128), dtype)
    x = x.astype(dtype)
    dy = normal(rng, (37, 128), dtype)
    tol = TOL[dtype]
    for fn, ref, operands in ((fused_norm, lambda x: reference.srms_norm(x, EPS), (x,)),
                              (fused_gate, lambda o, u: reference.srms_norm_gate(o, u, EPS),
                               (x, u))):
        out, grads = outputs_and_grads(fn, operands, dy)
        ref_out, ref_grads = outputs_and_grads(ref, operands, dy)
        for rows in (slice(0, None, 2), slice(1, None, 2)):
            assert np.all(np.isfinite(np.asarray(out, np.float32)))
            assert rel_err(out[rows], ref_out[rows]) <= tol
            for grad, ref_grad in zip(grads, ref_grads, strict=True):
                assert rel_err(grad[rows], ref_grad[rows]) <= tol


@pytest.mark.parametrize("config", [NormConfig(block_rows=4, num_warps=2),
                                    NormConfig(block_rows=64)])
def test_a_launch_of_given_blocks(rng, config):
    """10 blocks of 4 rows (the last ragged), or one of 64 for 37 rows."""
    o, u, dz = (normal(rng, (37, 64), jnp.float32) for _ in range(3))
    assert_close(lambda o, u: fused_gate(o, u, config=config),
                 lambda o, u: reference.srms_norm_gate(o, u, EPS), (o, u), dz, F32_TOL)


def test_no_rows_give_no_rows():
    x = jnp.zeros((0, 3, 64), jnp.bfloat16)
    assert fused_norm(x).shape == x.shape and fused_gate(x, x).shape == x.shape


def triton_calls(fn, *shapes) -> int:
    """The Triton kernel calls of ``fn``'s forward and backward, lowered for a GPU (on
    any machine: the Pallas Triton lowering runs here; compiling its IR needs a GPU)."""
    def run(*args):
        out, vjp = jax.vjp(fn, *args[:-1])
        return out, vjp(args[-1])
    structs = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in shapes]
    lowered = jax.jit(run).trace(*structs).lower(lowering_platforms=("cuda",))
    return lowered.as_text().count("xla.gpu.triton")


@pytest.mark.parametrize("rows, width, dtype", [(32768, 1024, jnp.bfloat16),
                                                (37, 64, jnp.float32),
                                                (3, 8192, jnp.float16)])
def test_the_kernels_lower_through_triton(rows, width, dtype):
    operand = ((rows, width), dtype)
    assert triton_calls(srms_norm, operand, operand) == 2
    assert triton_calls(srms_norm_gate, operand, operand, operand) == 2
