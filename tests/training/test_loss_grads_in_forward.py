"""The loss whose gradient is made in the forward (``loss_grads_in_forward``) against
the chunked loss differentiated by JAX: the same weighted sum, per-token losses, hits
and gradients (ragged chunks, masks, bf16, a model's own head, a training step), and
under a mesh the same numbers with no more traffic."""
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.paths import ROOT
from tests.tolerances import rel_err
from tests.training.runs import run_env
from tests.training.test_losses import masked_loss, random_problem
from tnl_jax.training import loss_grads_in_forward, losses
from tnl_jax.training.steps import masked_loss_sum, token_losses


def grads_in_forward(h, w, targets, mask, chunk):
    total, token, correct = loss_grads_in_forward.weighted_cross_entropy(h, w, targets, mask,
                                                                         chunk)
    return total, (token, correct)


@pytest.mark.parametrize("batch, seq, chunk", [(1, 37, 8), (3, 23, 10), (2, 16, 0), (5, 3, 2)])
def test_the_sum_losses_hits_and_gradients_are_the_chunked_loss_s(rng, batch, seq, chunk):
    h, w, targets, mask = random_problem(rng, batch, seq)
    grad = jax.jit(jax.value_and_grad(masked_loss, (0, 1), has_aux=True), static_argnums=4)
    new = jax.jit(jax.value_and_grad(grads_in_forward, (0, 1), has_aux=True), static_argnums=4)
    (ref_total, (ref_token, ref_correct)), ref_grads = grad(h, w, targets, mask, chunk)
    (total, (token, correct)), grads = new(h, w, targets, mask, chunk)
    assert rel_err(total, ref_total) <= 1e-5 and rel_err(token, ref_token) <= 1e-5
    np.testing.assert_array_equal(correct, ref_correct)
    for g, ref in zip(grads, ref_grads, strict=True):
        assert rel_err(g, ref) <= 1e-4


def test_bfloat16_operands_and_a_scaled_cotangent(rng):
    """The model's case: bf16 hidden states, a float32 weight cast where it is used
    (its gradient in float32), and the step's division by the token count."""
    h, w, targets, mask = random_problem(rng, 2, 29, width=16, vocab=41)
    h = h.astype(jnp.bfloat16)

    def scaled(loss):
        return lambda h, w: loss(h, w, targets, mask, 8)[0] / 7.0

    ref = jax.grad(scaled(masked_loss), (0, 1))(h, w)
    new = jax.grad(scaled(grads_in_forward), (0, 1))(h, w)
    for g, r in zip(new, ref, strict=True):
        assert g.dtype == r.dtype
        assert rel_err(g.astype(jnp.float32), r.astype(jnp.float32)) <= 1e-2


def test_only_the_sum_carries_a_gradient(rng):
    h, w, targets, mask = random_problem(rng, 2, 9)
    through_losses = jax.grad(lambda h: jnp.sum(grads_in_forward(h, w, targets, mask, 4)[1][0]))
    assert not np.any(through_losses(h))
    with pytest.raises(ValueError, match=r"token_weights has shape \(2, 8\): expected the "
                                         r"targets' \(2, 9\)"):
        loss_grads_in_forward.weighted_cross_entropy(h, w, targets, mask[:, :8], 4)


def test_a_model_s_step_gradient_is_the_chunked_loss_s(small_model, rng):
    """Tied: the head's gradient joins the input embedding's."""
    model = small_model(0, std=0.1, decoder_layers=1, vocab_size=97)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ids, targets = (jnp.asarray(rng.integers(3, 97, (2, 19)), jnp.int32) for _ in range(2))
    batch = {"input_ids": ids, "targets": targets, "positions": None,
             "segment_ids": jnp.asarray(np.repeat([[1] * 11 + [2] * 8], 2, 0), jnp.int32),
             "loss_mask": jnp.asarray(rng.random((2, 19)) < 0.8, jnp.float32)}
    grad = jax.jit(jax.value_and_grad(
        lambda p, kernel: masked_loss_sum(graphdef, p, rest, batch, 5, kernel)),
        static_argnums=1)
    total, grads = grad(params, "grads_in_forward")
    ref_total, ref_grads = grad(params, "chunked")
    assert rel_err(total, ref_total) <= 1e-5
    for g, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        assert rel_err(g, ref) <= 1e-4
    per_token = jax.jit(lambda p, kernel: token_losses(graphdef, p, rest, batch, 5, kernel),
                        static_argnums=1)
    (token, _), (ref_token, _) = (per_token(params, k) for k in ("grads_in_forward", "chunked"))
    np.testing.assert_array_equal(token, ref_token)  # Evaluation: the chunked loss.


SHARDED = textwrap.dedent("""
    import re, jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from tnl_jax.partitioning import constrain
    from tnl_jax.training import losses, loss_grads_in_forward, sharding
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(4, 40, 16)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(64, 16)) * 0.3, jnp.float32)
    t = jnp.asarray(rng.integers(0, 64, (4, 40)), jnp.int32)
    m = jnp.asarray(rng.random((4, 40)) < 0.8, jnp.float32)
    def chunked(h, w):
        return jnp.sum(losses.cross_entropy(h, constrain(w, ("vocab", None)), t, 7)[0] * m)
    def in_forward(h, w):
        return loss_grads_in_forward.weighted_cross_entropy(
            h, constrain(w, ("vocab", None)), t, m, 7)[0]
    reference = jax.jit(jax.value_and_grad(chunked, (0, 1)))(h, w)
    mesh = sharding.make_mesh(2, 1, 2, 2)  # Rows, sequence and vocabulary split.
    with jax.set_mesh(mesh):
        h = jax.device_put(h, NamedSharding(mesh, P("data", "context")))
        for name, loss in (("chunked", chunked), ("in_forward", in_forward)):
            grad = jax.jit(jax.value_and_grad(loss, (0, 1)))
            out = grad(h, w)
            err = max(float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
                      for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(reference)))
            text = grad.lower(h, w).compile().as_text()
            moved = [int(np.prod([int(n) for n in re.findall(r"\\d+", dims)] or [1]))
                     for dims in re.findall(r"= \\w+\\[([\\d,]*)\\][^=]*? "
                                            r"(?:all-gather|all-to-all|collective-permute)\\(",
                                            text)]
            print("LOSS", name, err, max(moved, default=0), text.count("all-reduce("))
""")


def test_under_a_mesh_it_is_exact_and_moves_no_more_than_the_chunked_loss():
    out = subprocess.run([sys.executable, "-c", SHARDED], cwd=ROOT, env=run_env(devices=8),
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line.split()[1]: line.split()[2:] for line in out.stdout.splitlines()
            if line.startswith("LOSS")}
    (chunked_err, chunked_moved, chunked_reduces), (err, moved, reduces) = (
        rows["chunked"], rows["in_forward"])
    assert float(chunked_err) <= 1e-5 and float(err) <= 1e-5
    assert int(moved) <= int(chunked_moved)
    assert int(reduces) <= int(chunked_reduces)  # The weight's gradient: once, not per chunk.


def test_its_chunks_hold_a_fraction_of_the_logits(rng):
    h, w, targets, mask = random_problem(rng, 2, 1024, width=16, vocab=2048)
    step = jax.jit(jax.grad(grads_in_forward, (0, 1), has_aux=True), static_argnums=4)
    temp = step.lower(h, w, targets, mask, 128).compile().memory_analysis().temp_size_in_bytes
    assert temp <= 2 * 1024 * 2048 * 4 / 4  # A quarter of the float32 logits.
