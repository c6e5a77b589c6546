"""AdamW with linear warmup, cosine decay, global-norm clipping and a decay mask."""
from __future__ import annotations

from typing import Any

import jax
import optax

from tnl_jax.training.config_checks import optimizer_problems, raise_problems


def learning_rate(lr: float, warmup: int, steps: int, min_lr_ratio: float) -> optax.Schedule:
    """Linear warmup from 0 to `lr`, then cosine down to `lr * min_lr_ratio` at `steps`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=max(warmup, 1),
        decay_steps=max(steps, warmup + 1), end_value=lr * min_lr_ratio)


def decays(path: tuple[Any, ...], leaf: Any, axes: tuple[str | None, ...] | None) -> bool:
    """Weight decay applies to the weight matrices of the projections only.

    Not to 1-D parameters (decays, scales), the LRPE frequencies, or the token
    embedding, which is tied to the output head here: decay would pull the rows
    of rare tokens toward zero for reasons that have nothing to do with them.
    `axes` are the logical axis names when annotated (the stacked 'layers' axis does
    not count as a dimension of the weight).
    """
    names = "/".join(str(getattr(p, "key", p)) for p in path).lower()
    if "embed_tokens" in names or "embedding" in names or "lrpe" in names or "theta" in names:
        return False
    if axes:
        if "vocab" in axes:
            return False
        return sum(1 for a in axes if a != "layers") >= 2
    return leaf.ndim >= 2


def adamw(params: Any, logical_axes: Any, *, lr: float, warmup: int, steps: int,
          min_lr_ratio: float, weight_decay: float, beta1: float, beta2: float,
          grad_clip: float) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer for `params` and its learning-rate schedule (for logging).

    `logical_axes` is a tree like `params` holding each leaf's logical axis names
    (or None), used to decide which leaves decay. Every number is checked finite and
    in range first (a NaN learning rate would train NaNs without a word).
    """
    raise_problems(optimizer_problems(
        lr=lr, warmup=warmup, steps=steps, min_lr_ratio=min_lr_ratio, weight_decay=weight_decay,
        beta1=beta1, beta2=beta2, grad_clip=grad_clip), "adamw")
    schedule = learning_rate(lr, warmup, steps, min_lr_ratio)
    mask = jax.tree_util.tree_map_with_path(
        lambda path, leaf, axes: decays(path, leaf, axes), params, logical_axes)
    chain = []
    if grad_clip > 0:
        chain.append(optax.clip_by_global_norm(grad_clip))
    chain.append(optax.adamw(schedule, b1=beta1, b2=beta2, weight_decay=weight_decay, mask=mask))
    return optax.chain(*chain), schedule
