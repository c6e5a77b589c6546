"""The jitted computations of training: per-token losses, one optimizer step (with
gradient accumulation), and held-out evaluation. ``loss_chunk_tokens`` sets how the
loss makes its logits (``losses.cross_entropy``: -1 chunks them when they would be
large, 0 makes them all at once); ``loss_kernel`` whether the fused Pallas kernels make
them instead (``losses.LOSS_KERNELS``)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tnl_jax.model.fp8 import is_fp8_meta
from tnl_jax.training import loss_grads_in_forward
from tnl_jax.training import losses as token_loss
from tnl_jax.training import sharding
from tnl_jax.training.config_checks import grad_reduce_problems
from tnl_jax.training.divergence import count_non_finite


def _reduced_in(dtype: str, params):
    """The parameters the gradient is taken against: with ``bfloat16``, each weight
    matrix (2-D or more) as its bf16 copy, so that its gradient, partial sums over the
    devices' rows included, is bf16 and is reduced in bf16 (half the bytes). The model
    computes with bf16 copies of them anyway (``model.dtype=bfloat16``); vectors
    (norm scales, decays) and the fp8 scaling state (``model/fp8.py``) keep their dtype."""
    if dtype == "float32":
        return params
    return jax.tree_util.tree_map_with_path(
        lambda path, p: p.astype(dtype) if p.ndim >= 2 and not is_fp8_meta(path) else p,
        params)


def token_losses(graphdef: nnx.GraphDef, params: nnx.State, rest: nnx.State,
                 batch: dict[str, jax.Array],
                 loss_chunk_tokens: int = token_loss.AUTO,
                 loss_kernel: str = "chunked") -> tuple[jax.Array, jax.Array]:
    """Per-token cross entropy (B, T) and whether the top prediction was right, the
    logits made ``loss_chunk_tokens`` tokens at a time (see ``losses.cross_entropy``),
    or by the fused kernels (``loss_kernel``: ``losses.fused_token_cross_entropy``).
    ``batch["segment_ids"]`` may be left out when each row is one document
    (``evaluation.scorer.one_document_per_row``): no segment mask is built."""
    loss_kernel = token_loss.resolve_kernel(loss_kernel)  # A bad name: before the model.
    model, hidden = _last_hidden(graphdef, params, rest, batch)
    return _per_token(model, hidden, batch["targets"], loss_chunk_tokens, loss_kernel)


def masked_loss_sum(graphdef: nnx.GraphDef, params: nnx.State, rest: nnx.State,
                    batch: dict[str, jax.Array], loss_chunk_tokens: int = token_loss.AUTO,
                    loss_kernel: str = "chunked") -> jax.Array:
    """``Σ loss_mask · loss``: the number a training step differentiates. With
    ``loss_kernel=grads_in_forward`` its gradient is made in the forward
    (``loss_grads_in_forward``); otherwise it is ``token_losses``'s, summed."""
    loss_kernel = token_loss.resolve_kernel(loss_kernel)
    model, hidden = _last_hidden(graphdef, params, rest, batch)
    if loss_kernel == "grads_in_forward":
        total, _, _ = loss_grads_in_forward.weighted_cross_entropy(
            model.head_input(hidden), model.head_weight(), batch["targets"],
            batch["loss_mask"], loss_chunk_tokens)
        return total
    losses, _ = _per_token(model, hidden, batch["targets"], loss_chunk_tokens, loss_kernel)
    return jnp.sum(losses * batch["loss_mask"])


def _per_token(model, hidden, targets, loss_chunk_tokens, loss_kernel):
    """``token_losses`` from the last hidden states, ``loss_kernel`` resolved."""
    if loss_kernel in ("chunked", "grads_in_forward"):  # The latter's per-token losses.
        return token_loss.cross_entropy(model.head_input(hidden), model.head_weight(),
                                        targets, loss_chunk_tokens)
    return token_loss.fused_token_cross_entropy(model.head_operands, hidden, targets,
                                                loss_kernel)


def _last_hidden(graphdef, params, rest, batch):
    """The model and its last hidden states for ``batch``.

    ``rest`` (the layers' fixed decays) is a constant of the step: its variables are
    copied here, so that they belong to this trace as NNX's transforms require."""
    model = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, rest))
    hidden = model.hidden_states(batch["input_ids"], segment_ids=batch.get("segment_ids"),
                                 positions=batch["positions"])
    return model, hidden


def _microbatches(batch: dict[str, jax.Array], count: int) -> dict[str, jax.Array]:
    """(B, T) -> (count, B / count, T), row r of microbatch j being row r * count + j,
    so that each device's rows stay on it."""
    return {k: v.reshape(v.shape[0] // count, count, *v.shape[1:]).swapaxes(0, 1)
            for k, v in batch.items()}


def _add_gradients(path, total, part):
    """Sums a parameter's gradients over microbatches; an fp8 scaling's "gradient" is
    its next value (``model/fp8.py``): the largest over microbatches."""
    part = part.astype(total.dtype)
    return jnp.maximum(total, part) if is_fp8_meta(path) else total + part


def without_fp8_meta(grads):
    """``grads`` with the fp8 scaling variables' zeroed: what the optimizer and the
    gradient norm see (unchanged without fp8 projections)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, g: jnp.zeros_like(g) if is_fp8_meta(path) else g, grads)


def take_fp8_meta(params, grads):
    """``params`` with each fp8 scaling variable set to its next value, its gradient
    (``model/fp8.py``), rather than moved by the optimizer."""
    return jax.tree_util.tree_map_with_path(
        lambda path, p, g: g.astype(p.dtype) if is_fp8_meta(path) else p, params, grads)


def make_train_step(graphdef, rest, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, grad_accum: int,
                    loss_chunk_tokens: int = token_loss.AUTO, loss_kernel: str = "chunked",
                    grad_reduce_dtype: str = "float32"):
    """One optimizer step on a global batch, its gradient summed over `grad_accum` parts
    (in float32; each part's gradient is reduced over the devices in
    ``grad_reduce_dtype``: see ``_reduced_in``).

    Its metrics count the non-finite values of the state it returns (see
    ``divergence``): the loss and gradient norm describe the parameters before the
    update, so they alone cannot tell that the updated state is finite."""

    def loss_sum(params, batch):
        return (masked_loss_sum(graphdef, params, rest, batch, loss_chunk_tokens, loss_kernel),
                jnp.sum(batch["loss_mask"]))

    problems = grad_reduce_problems(grad_reduce_dtype)
    if problems:
        raise ValueError(problems[0])

    def step(state, batch):
        params = state["params"]

        def accumulate(carry, micro):
            grads, total, count = carry
            (micro_total, micro_count), micro_grads = jax.value_and_grad(
                loss_sum, has_aux=True)(_reduced_in(grad_reduce_dtype, params), micro)
            grads = jax.tree_util.tree_map_with_path(_add_gradients, grads, micro_grads)
            return (grads, total + micro_total, count + micro_count), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        (grads, total, count), _ = jax.lax.scan(
            accumulate, (zeros, 0.0, 0.0), _microbatches(batch, grad_accum))
        count = jnp.maximum(count, 1.0)
        grads = jax.tree_util.tree_map_with_path(
            lambda path, g: g if is_fp8_meta(path) else g / count, grads)
        next_meta, grads = grads, without_fp8_meta(grads)
        new_params, opt_state = apply_optimizer(tx, grads, state["opt_state"], params)
        new_state = {"params": take_fp8_meta(new_params, next_meta),
                     "opt_state": opt_state, "step": state["step"] + 1}
        stats = {"loss": total / count, "grad_norm": optax.tree.norm(grads),
                 "lr": schedule(state["step"]),
                 "non_finite_params": count_non_finite(new_state["params"]),
                 "non_finite_opt_state": count_non_finite(opt_state)}
        return new_state, stats

    return step


def apply_optimizer(tx: optax.GradientTransformation, grads: Any, opt_state: Any,
                    params: Any) -> tuple[Any, Any]:
    """``(new params, new optimizer state)``: its own function so that a profile names
    the optimizer's passes over the weights apart from the rest of the step
    (``benchmarks/common/hlo_sources.py`` names kernels by our innermost frames)."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def make_eval_step(graphdef, rest, loss_chunk_tokens: int = token_loss.AUTO,
                   loss_kernel: str = "chunked"):
    def evaluate(params, batch):
        losses, correct = token_losses(graphdef, params, rest, batch, loss_chunk_tokens,
                                       loss_kernel)
        mask = batch["loss_mask"]
        return {"loss_sum": jnp.sum(losses * mask), "correct": jnp.sum(correct * mask),
                "count": jnp.sum(mask)}
    return evaluate


def evaluate(eval_fn, params, batches: list[dict], mesh) -> dict[str, float]:
    """Mean held-out loss per target token (and top-1 accuracy) over fixed batches."""
    totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    for batch in batches:
        out = eval_fn(params, sharding.global_batch(batch, mesh))
        for k in totals:
            totals[k] += float(out[k])
    if totals["count"] == 0:  # Never report a held-out loss of 0 over no tokens.
        raise ValueError(f"held-out evaluation: the {len(batches)} held-out batch(es) have no "
                         "target tokens (loss_mask is 0 everywhere)")
    count = totals["count"]
    return {"eval_loss": totals["loss_sum"] / count, "eval_accuracy": totals["correct"] / count}
