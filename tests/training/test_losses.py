"""The chunked loss against the loss of all logits at once: the same per-token losses,
top-1 hits and gradients (ragged chunks, loss masks, a model's own head), less memory,
and no gathers under a mesh."""
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tests.paths import ROOT
from tests.tolerances import rel_err
from tests.training.runs import run_env
from tnl_jax.training import losses
from tnl_jax.training.steps import masked_loss_sum, token_losses


def masked_loss(h, w, targets, mask, chunk):
    token, correct = losses.cross_entropy(h, w, targets, chunk)
    return jnp.sum(token * mask), (token, correct)


def random_problem(rng, batch, seq, width=8, vocab=29):
    h = jnp.asarray(rng.normal(size=(batch, seq, width)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(vocab, width)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, vocab, (batch, seq)), jnp.int32)
    mask = jnp.asarray(rng.random((batch, seq)) < 0.7, jnp.float32)
    return h, w, targets, mask


# Ragged and even chunks; more rows than a chunk's tokens (one position per chunk).
@pytest.mark.parametrize("batch, seq, chunk", [(1, 37, 8), (3, 23, 10), (2, 16, 8), (5, 3, 2)])
def test_chunks_give_the_losses_and_gradients_of_all_at_once(rng, batch, seq, chunk):
    h, w, targets, mask = random_problem(rng, batch, seq)
    grad = jax.jit(jax.value_and_grad(masked_loss, (0, 1), has_aux=True), static_argnums=4)
    (total, (token, correct)), grads = grad(h, w, targets, mask, chunk)
    (ref_total, (ref_token, ref_correct)), ref_grads = grad(h, w, targets, mask, 0)
    logits = h @ w.T  # Today's loss, written out (the products' rounding aside).
    assert rel_err(ref_token, optax.softmax_cross_entropy_with_integer_labels(
        logits, targets)) <= 1e-6
    assert rel_err(token, ref_token) <= 1e-5 and rel_err(total, ref_total) <= 1e-5
    np.testing.assert_array_equal(correct, ref_correct)
    for g, ref in zip(grads, ref_grads):
        assert rel_err(g, ref) <= 1e-4


def test_chunk_setting():
    assert losses.chunk_tokens_for(losses.AUTO, 4096, 64000) == losses.UNCHUNKED
    assert losses.chunk_tokens_for(losses.AUTO, 8192, 64000) == losses.DEFAULT_CHUNK_TOKENS
    assert losses.chunk_tokens_for(losses.AUTO, 2**19, 384) == losses.UNCHUNKED
    assert losses.chunk_tokens_for(512, 10, 10) == 512
    with pytest.raises(ValueError, match="loss_chunk_tokens=-2: expected"):
        losses.chunk_tokens_for(-2, 10, 10)
    with pytest.raises(ValueError, match=r"normed \(the head's input\) has shape \(2, 3\)"):
        losses.cross_entropy(jnp.ones((2, 3)), jnp.ones((4, 3)), jnp.ones((2,)))
    with pytest.raises(ValueError, match=r"head's weight has shape \(3, 4\) and its input "
                                         r"\(1, 2, 3\): expected \(V, 3\)"):
        losses.cross_entropy(jnp.ones((1, 2, 3)), jnp.ones((3, 4)), jnp.ones((1, 2)))


@pytest.mark.parametrize("tied", [True, False])
def test_the_model_s_head_chunked(small_model, rng, tied):
    """The model's own head (final norm, the embedding or an untied head): losses and
    gradients, for the hidden states and the head's parameters, chunked as the model's
    logits' cross entropy."""
    model = small_model(0, std=0.1, decoder_layers=1, vocab_size=97, tie_word_embeddings=tied)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    h, _, targets, mask = random_problem(rng, 2, 19, width=32, vocab=97)

    def loss(params, h, chunk):
        model = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, rest))
        if chunk is None:  # The model's logits, all at once.
            logits = model.logits(h)
            token = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
            correct = jnp.argmax(logits, -1) == targets
        else:
            token, correct = losses.cross_entropy(model.head_input(h), model.head_weight(),
                                                  targets, chunk)
        return jnp.sum(token * mask), (token, correct)

    grad = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True), static_argnums=2)
    (_, (token, correct)), grads = grad(params, h, 5)
    (_, (ref_token, ref_correct)), ref_grads = grad(params, h, None)
    assert rel_err(token, ref_token) <= 1e-5
    np.testing.assert_array_equal(correct, ref_correct)
    pairs = [(g, ref) for g, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads))
             if np.any(ref)]  # The layers' parameters do not reach the head.
    assert len(pairs) == 2  # The head's weight and the hidden states.
    for g, ref in pairs:
        assert rel_err(g, ref) <= 1e-4


def test_token_losses_chunked_are_today_s(small_model, rng):
    """The training step's losses, chunked, against the model's logits' cross entropy."""
    model = small_model(0, std=0.1, decoder_layers=1, vocab_size=97)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ids, targets = (jnp.asarray(rng.integers(0, 97, (2, 19)), jnp.int32) for _ in range(2))
    batch = {"input_ids": ids, "targets": targets, "segment_ids": None, "positions": None}
    token, correct = jax.jit(token_losses, static_argnums=(0, 4))(graphdef, params, rest,
                                                                   batch, 5)
    logits = model(ids)
    assert rel_err(token, optax.softmax_cross_entropy_with_integer_labels(logits, targets)) <= 1e-5
    np.testing.assert_array_equal(correct, jnp.argmax(logits, -1) == targets)


def test_token_losses_fused_are_the_chunked_ones(small_model, rng):
    """The fused kernels (interpreted) in the training step's losses: the losses, hits
    and parameter gradients of the chunked loss."""
    model = small_model(0, std=0.1, decoder_layers=1, vocab_size=97)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ids, targets = (jnp.asarray(rng.integers(0, 97, (2, 19)), jnp.int32) for _ in range(2))
    batch = {"input_ids": ids, "targets": targets, "segment_ids": None, "positions": None}
    weights = jnp.asarray(rng.normal(size=(2, 19)), jnp.float32)

    def loss(params, kernel):
        token, correct = token_losses(graphdef, params, rest, batch, 5, kernel)
        return jnp.sum(token * weights), (token, correct)

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (_, (token, correct)), grads = grad(params, "fused_interpret")
    (_, (ref_token, ref_correct)), ref_grads = grad(params, "chunked")
    assert rel_err(token, ref_token) <= 1e-5
    np.testing.assert_array_equal(correct, ref_correct)
    for g, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        assert rel_err(g, ref) <= 1e-4


def test_fused_loss_refuses_what_it_cannot_run():
    head = lambda x: (x, jnp.ones((5, 4)))
    h, targets = jnp.ones((1, 3, 4)), jnp.zeros((1, 3), jnp.int32)
    with pytest.raises(ValueError, match="loss_kernel='fuse': expected one of"):
        losses.check_kernel("fuse")
    with pytest.raises(ValueError, match="loss_kernel='fused' runs Triton kernels on a GPU, "
                                         "and this platform is 'cpu'"):
        losses.fused_token_cross_entropy(head, h, targets, "fused")
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((2,), ("data",))):
        with pytest.raises(ValueError, match=r"runs on one device, and the mesh \{'data': 2\}"):
            losses.fused_token_cross_entropy(head, h, targets, "fused_interpret")


def test_auto_is_grads_in_forward_and_its_token_losses_are_the_chunked_losses(small_model, rng):
    assert losses.resolve_kernel("auto") == "grads_in_forward"
    assert losses.resolve_kernel("fused") == "fused"  # Named: its own checks.
    with pytest.raises(ValueError, match="loss_kernel='fuse': expected one of"):
        losses.resolve_kernel("fuse")
    model = small_model(0, std=0.1, decoder_layers=1, vocab_size=97)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ids, targets = (jnp.asarray(rng.integers(0, 97, (2, 19)), jnp.int32) for _ in range(2))
    mask = jnp.asarray(rng.random((2, 19)) < 0.8, jnp.float32)
    batch = {"input_ids": ids, "targets": targets, "positions": None, "loss_mask": mask}
    # What evaluation reads: the per-token losses, exactly the chunked loss's.
    auto = token_losses(graphdef, params, rest, batch, 5, "auto")
    chunked = token_losses(graphdef, params, rest, batch, 5, "chunked")
    for a, c in zip(auto, chunked, strict=True):
        np.testing.assert_array_equal(a, c)
    # What the step differentiates: grads_in_forward's sum and gradient.
    def grad(kernel):
        return jax.value_and_grad(
            lambda p: masked_loss_sum(graphdef, p, rest, batch, 5, kernel))(params)
    for a, g in zip(jax.tree.leaves(grad("auto")), jax.tree.leaves(grad("grads_in_forward")),
                    strict=True):
        np.testing.assert_array_equal(a, g)


def test_chunks_hold_a_fraction_of_the_logits(rng):
    h, w, targets, mask = random_problem(rng, 2, 1024, width=16, vocab=2048)
    logits_bytes = 2 * 1024 * 2048 * 4

    def temp_bytes(chunk):
        step = jax.jit(jax.grad(masked_loss, (0, 1), has_aux=True), static_argnums=4)
        return step.lower(h, w, targets, mask, chunk).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(0) >= logits_bytes
    assert temp_bytes(128) <= logits_bytes / 4


SHARDED = textwrap.dedent("""
    import re, jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from tnl_jax.partitioning import constrain
    from tnl_jax.training import losses, sharding
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(4, 40, 16)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(64, 16)) * 0.3, jnp.float32)
    t = jnp.asarray(rng.integers(0, 64, (4, 40)), jnp.int32)
    def loss(h, w, chunk):
        return jnp.sum(losses.cross_entropy(h, constrain(w, ("vocab", None)), t, chunk)[0])
    grad = jax.jit(jax.value_and_grad(loss, (0, 1)), static_argnums=2)
    reference = grad(h, w, 0)
    mesh = sharding.make_mesh(2, 1, 2, 2)  # Rows, sequence and vocabulary split.
    with jax.set_mesh(mesh):
        h = jax.device_put(h, NamedSharding(mesh, P("data", "context")))
        for chunk in (0, 7):
            out = grad(h, w, chunk)
            err = max(float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
                      for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(reference)))
            text = grad.lower(h, w, chunk).compile().as_text()
            moved = [int(np.prod([int(n) for n in re.findall(r"\\d+", dims)] or [1]))
                     for dims in re.findall(r"= \\w+\\[([\\d,]*)\\][^=]*? "
                                            r"(?:all-gather|all-to-all|collective-permute)\\(",
                                            text)]
            print("CHUNK", chunk, err, max(moved, default=0))
""")


def test_chunks_stay_on_their_devices():
    """Under a mesh (rows, sequence and vocabulary split) the chunked loss is exact and
    moves no larger array between devices than the unchunked one (the argmax's partial
    results over the vocabulary split: the chunks cut no device's tokens apart)."""
    out = subprocess.run([sys.executable, "-c", SHARDED], cwd=ROOT, env=run_env(devices=8),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("CHUNK")]
    (_, plain_err, plain_moved), (_, err, moved) = rows
    assert float(plain_err) <= 1e-5 and float(err) <= 1e-5
    assert int(moved) <= int(plain_moved)
