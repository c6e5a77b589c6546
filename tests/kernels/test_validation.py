"""Every bad argument raises an error that names it and says what was expected."""
import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import KernelConfig, Launch, lightning_attention, lightning_attention_step

B, T, H, DK, DV = 2, 10, 3, 8, 4
CONFIG = KernelConfig(forward=Launch(chunk=16), dq=Launch(chunk=16), dk=Launch(chunk=16),
                      dv=Launch(chunk=16))


@pytest.fixture
def args(rng):
    q = jnp.asarray(rng.standard_normal((B, T, H, DK)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((B, T, H, DK)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((B, T, H, DV)), jnp.float32)
    return q, k, v, jnp.full((H,), 0.1)


def call(args, **changes):
    q, k, v, decay = args
    named = dict(q=q, k=k, v=v, decay=decay)
    kwargs = {key: changes.pop(key) for key in list(changes) if key not in named}
    named.update(changes)
    return lightning_attention(named["q"], named["k"], named["v"], named["decay"],
                               backend=kwargs.pop("backend", "xla"), **kwargs)


CASES = [
    ("q of wrong rank", dict(q=jnp.ones((B, T, H))), ValueError, "q must have rank 4"),
    ("k shape differs", dict(k=jnp.ones((B, T, H, DK + 1))), ValueError, "k must have the shape"),
    ("v batch differs", dict(v=jnp.ones((B + 1, T, H, DV))), ValueError, "v must match q"),
    ("v seq differs", dict(v=jnp.ones((B, T + 1, H, DV))), ValueError, "v must match q"),
    ("v heads differ", dict(v=jnp.ones((B, T, H + 1, DV))), ValueError, "v must match q"),
    ("integer q", dict(q=jnp.ones((B, T, H, DK), jnp.int32)), TypeError, "q must be a floating"),
    ("not an array", dict(v=[[1.0]]), TypeError, "v must be an array"),
    ("decay wrong shape", dict(decay=jnp.ones((H, 1))), ValueError, "decay must have shape"),
    ("decay scalar", dict(decay=jnp.float32(0.1)), ValueError, "decay must have shape"),
    ("decay negative", dict(decay=jnp.array([0.1, -0.2, 0.0])), ValueError, "non-negative"),
    ("decay NaN", dict(decay=jnp.array([0.1, jnp.nan, 0.0])), ValueError, "NaN"),
    ("segment_ids float", dict(segment_ids=jnp.ones((B, T))), TypeError, "segment_ids must be an integer"),
    ("segment_ids shape", dict(segment_ids=jnp.ones((B, T + 1), jnp.int32)), ValueError,
     "segment_ids must have shape"),
    ("initial_state shape", dict(initial_state=jnp.ones((B, H, DV, DK))), ValueError,
     "initial_state must have shape"),
    ("initial_state int", dict(initial_state=jnp.ones((B, H, DK, DV), jnp.int32)), TypeError,
     "initial_state must be a floating"),
    ("unknown backend", dict(backend="cuda"), ValueError, "backend must be one of"),
    ("chunk_size not power of two", dict(chunk_size=48), ValueError, "chunk_size must be a power"),
    ("chunk_size too small", dict(chunk_size=8), ValueError, "chunk_size must be a power"),
    ("kernel_config not a config",
     dict(kernel_config={"forward": Launch()}, backend="interpret"), TypeError,
     "kernel_config must be a KernelConfig or None, got dict"),
    ("kernel_config with xla", dict(kernel_config=CONFIG), ValueError,
     "kernel_config applies to the 'pallas' and 'interpret' backends"),
    ("kernel_config and chunk_size", dict(kernel_config=CONFIG, chunk_size=16, backend="interpret"),
     ValueError, "give chunk_size or kernel_config, not both"),
]


@pytest.mark.parametrize("name,changes,error,message", CASES, ids=[c[0] for c in CASES])
def test_bad_argument(args, name, changes, error, message):
    with pytest.raises(error, match=message):
        call(args, **changes)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the no-GPU error")
def test_pallas_without_gpu_is_an_error(args):
    with pytest.raises(ValueError, match="backend='pallas' needs a GPU"):
        call(args, backend="pallas")


def test_decay_shape_is_checked_under_jit(args):
    """Traced decay values cannot be checked; shapes still are."""
    q, k, v, _ = args
    with pytest.raises(ValueError, match="decay must have shape"):
        jax.jit(lambda d: lightning_attention(q, k, v, d, backend="xla"))(jnp.ones(H + 1))


STEP_CASES = [
    ("q rank", dict(q=jnp.ones((B, 1, H, DK))), ValueError, "q must have rank 3"),
    ("state shape", dict(state=jnp.ones((B, H, DK, DK))), ValueError, "state must have shape"),
    ("decay shape", dict(decay=jnp.ones((H + 1,))), ValueError, "decay must have shape"),
]


@pytest.mark.parametrize("name,changes,error,message", STEP_CASES, ids=[c[0] for c in STEP_CASES])
def test_bad_step_argument(name, changes, error, message):
    named = dict(q=jnp.ones((B, H, DK)), k=jnp.ones((B, H, DK)), v=jnp.ones((B, H, DV)),
                 decay=jnp.full((H,), 0.1), state=jnp.zeros((B, H, DK, DV)))
    named.update(changes)
    with pytest.raises(error, match=message):
        lightning_attention_step(**named)
