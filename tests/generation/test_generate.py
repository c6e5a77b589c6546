"""Generation: prefill + O(1) decode reproduce the full forward's logits, ragged
prompts, EOS, sampling filters."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import SMALL_MODEL
from tnl_jax.generation import generate, sample_token, weights_in_compute_dtype

VOCAB = SMALL_MODEL["vocab_size"]


@pytest.fixture(scope="module")
def tnl_model(small_model):
    return small_model(0)


def assert_decode_matches_forward(model, prompts, new_tokens):
    tokens, logits = generate(model, prompts, new_tokens, temperature=0, return_logits=True)
    assert tokens.shape == (len(prompts), new_tokens)
    assert logits.shape == (len(prompts), new_tokens, model.cfg.vocab_size)
    # One forward over the rows, right-padded: padding after a row cannot change it.
    rows = [p + [int(t) for t in tokens[b]] for b, p in enumerate(prompts)]
    width = max(map(len, rows))
    batch = jnp.asarray([r + [0] * (width - len(r)) for r in rows])
    full = np.asarray(nnx.jit(lambda m, ids: m(ids))(model, batch))
    for b, prompt in enumerate(prompts):
        want = full[b, len(prompt) - 1:len(rows[b]) - 1]
        np.testing.assert_allclose(logits[b], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        np.testing.assert_array_equal(tokens[b], want.argmax(-1))


def test_ragged_prompts_decode_like_full_forward(tnl_model, rng):
    # Rows of different lengths (left-padded inside); LRPE positions continue per row.
    prompts = [list(rng.integers(1, VOCAB, n)) for n in (5, 19, 1)]
    assert_decode_matches_forward(tnl_model, prompts, 7)


@pytest.mark.parametrize("architecture, rope, logn", [
    ("softmax", True, None), ("hybrid", True, None), ("hybrid", False, None),
    ("hybrid", False, 4), ("llama", True, None)])
def test_baselines_decode_like_full_forward(architecture, rope, logn, rng, small_model):
    model = small_model(1, architecture=architecture, softmax_every=2, softmax_rope=rope,
                        softmax_logn_length=logn)
    prompts = [list(rng.integers(1, VOCAB, n)) for n in (4, 11)]
    assert_decode_matches_forward(model, prompts, 5)


def test_eos_stops_a_row(tnl_model, rng):
    prompts = [list(rng.integers(1, VOCAB, 6)), list(rng.integers(1, VOCAB, 6))]
    free = np.asarray(generate(tnl_model, prompts, 6, temperature=0))
    eos = int(free[0, 1])
    stopped = np.asarray(generate(tnl_model, prompts, 6, temperature=0, eos_id=eos))
    first = list(free[0]).index(eos)
    np.testing.assert_array_equal(stopped[0, :first + 1], free[0, :first + 1])
    assert np.all(stopped[0, first:] == eos)


def test_sampling_is_seeded_and_filters_apply(tnl_model, rng):
    prompts = [list(rng.integers(1, VOCAB, 8))]
    greedy = np.asarray(generate(tnl_model, prompts, 8, temperature=0))
    a = np.asarray(generate(tnl_model, prompts, 8, temperature=1.5, seed=3))
    b = np.asarray(generate(tnl_model, prompts, 8, temperature=1.5, seed=3))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(generate(tnl_model, prompts, 8, top_k=1, seed=5), greedy)
    np.testing.assert_array_equal(generate(tnl_model, prompts, 8, top_p=1e-6, seed=5), greedy)


def test_sample_token_filters(rng):
    logits = jnp.asarray(rng.normal(size=(2, 50)), jnp.float32)
    order = np.argsort(-np.asarray(logits), axis=-1)
    keys = jax.random.split(jax.random.key(0), 200)
    drawn = np.asarray(jax.vmap(lambda k: sample_token(logits, k, 1.0, 3, None))(keys)).T
    for b in range(2):
        assert set(drawn[b]) <= set(order[b, :3]) and len(set(drawn[b])) > 1
    probs = np.asarray(jax.nn.softmax(logits, -1))
    top_p = 0.5
    drawn = np.asarray(jax.vmap(lambda k: sample_token(logits, k, 1.0, None, top_p))(keys)).T
    for b in range(2):
        mass_before = np.cumsum(probs[b, order[b]]) - probs[b, order[b]]
        allowed = set(order[b][mass_before < top_p])
        assert set(drawn[b]) <= allowed


def test_zero_new_tokens_is_empty(tnl_model, rng):
    # Nothing to sample: empty results of the right shapes, nothing compiled.
    prompts = [list(rng.integers(1, VOCAB, n)) for n in (3, 5)]
    tokens, logits = generate(tnl_model, prompts, 0, return_logits=True)
    assert tokens.shape == (2, 0) and tokens.dtype == jnp.int32
    assert logits.shape == (2, 0, VOCAB) and logits.dtype == jnp.float32


def test_decoding_reads_weights_in_the_compute_dtype(small_model, rng):
    """generate() casts the weights each use casts anyway (those with an `embed` axis)
    once, so a decode step reads bf16, not float32; LRPE's angles and the decays keep
    their dtype, and the model computes exactly what it did."""
    model = small_model(0, dtype="bfloat16", param_dtype="float32")
    graphdef, state = nnx.split(model)
    cast = weights_in_compute_dtype(state, jnp.bfloat16)
    dtypes = {jax.tree_util.keystr(path): x.dtype
              for path, x in jax.tree_util.tree_leaves_with_path(cast)}
    assert dtypes["['embed_tokens'].value"] == jnp.bfloat16
    assert all(d == jnp.bfloat16 for k, d in dtypes.items() if "proj" in k or "channel_mixer" in k)
    assert all(d == jnp.float32 for k, d in dtypes.items() if "theta" in k or "decay" in k)
    ids = jnp.asarray(rng.integers(0, model.cfg.vocab_size, (2, 9)))
    np.testing.assert_array_equal(nnx.merge(graphdef, cast)(ids), model(ids))


def test_one_new_token_skips_the_decode_loop_and_matches_forward(tnl_model, rng):
    prompts = [list(rng.integers(1, VOCAB, n)) for n in (6, 2)]
    assert_decode_matches_forward(tnl_model, prompts, 1)


def test_compiler_options_choose_cublas_from_8_rows_on_a_gpu(monkeypatch):
    from tnl_jax import generation
    assert generation.compiler_options(64) == {}  # Not a GPU: XLA's defaults.
    monkeypatch.setattr(generation.jax, "default_backend", lambda: "gpu")
    assert generation.compiler_options(generation.CUBLAS_FROM_BATCH - 1) == {}
    options = generation.compiler_options(generation.CUBLAS_FROM_BATCH)
    assert options == {"xla_gpu_enable_triton_gemm": False}
    # XLA knows the option on every platform: it compiles here too.
    assert float(jax.jit(lambda x: x @ x, compiler_options=options)(jnp.eye(2)).sum()) == 2.0


def test_tiny_temperatures_are_greedy_and_scalars_of_any_type(tnl_model, rng):
    """Temperatures too small for float32 (1e-40, 5e-324) or whose scaled logits would
    overflow (1e-30) sample the greedy tokens; NumPy and JAX scalars are taken as the
    Python numbers they hold (the same tokens)."""
    prompts = [list(rng.integers(1, VOCAB, 8))]
    greedy = np.asarray(generate(tnl_model, prompts, 8, temperature=0))
    for temperature in (1e-40, 5e-324, 1e-30, np.float64(1e-45), jnp.float32(0)):
        np.testing.assert_array_equal(
            generate(tnl_model, prompts, 8, temperature=temperature), greedy)
    sampled = np.asarray(generate(tnl_model, prompts, 8, temperature=1.5, seed=3))
    np.testing.assert_array_equal(
        generate(tnl_model, prompts, np.int64(8), temperature=np.float32(1.5),
                 seed=jnp.int32(3), top_p=jnp.float32(1.0)), sampled)
    np.testing.assert_array_equal(
        generate(tnl_model, prompts, jnp.int32(8), top_k=jnp.int32(1), seed=np.uint8(5)),
        greedy)


def test_nan_weights_are_named_not_sampled(small_model, rng):
    """A model whose weights are NaN gives NaN logits after the prompts: an error
    naming it, not token 0 forever."""
    model = small_model(0)
    nnx.update(model, jax.tree.map(lambda x: jnp.full_like(x, jnp.nan),
                                   nnx.state(model, nnx.Param)))
    prompts = [list(rng.integers(1, VOCAB, n)) for n in (6, 2)]
    with pytest.raises(ValueError, match=r"logits after prompt 0 \(2 of 2 prompts\) are not "
                                         r"finite .* weights hold NaN"):
        generate(model, prompts, 1, temperature=0)
