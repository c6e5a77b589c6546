"""Bad arguments that need more than one call to show (the table of single bad
arguments is tests/bad_inputs/op_cases.py): the no-GPU error and checks under jit."""
import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import lightning_attention

B, T, H, DK, DV = 2, 10, 3, 8, 4


@pytest.fixture
def args(rng):
    q = jnp.asarray(rng.standard_normal((B, T, H, DK)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((B, T, H, DK)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((B, T, H, DV)), jnp.float32)
    return q, k, v, jnp.full((H,), 0.1)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the no-GPU error")
def test_pallas_without_gpu_is_an_error(args):
    with pytest.raises(ValueError, match="backend='pallas' needs a GPU"):
        lightning_attention(*args, backend="pallas")


def test_decay_shape_is_checked_under_jit(args):
    """Traced decay values cannot be checked; shapes still are."""
    q, k, v, _ = args
    with pytest.raises(ValueError, match="decay must have shape"):
        jax.jit(lambda d: lightning_attention(q, k, v, d, backend="xla"))(jnp.ones(H + 1))


def test_flags_are_checked_under_jit(args):
    """A traced flag is not a bool: the op cannot branch on it."""
    with pytest.raises(TypeError, match="return_final_state must be a bool"):
        jax.jit(lambda flag: lightning_attention(*args, backend="xla",
                                                 return_final_state=flag))(True)
