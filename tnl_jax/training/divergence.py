"""Divergence: no non-finite number reaches a checkpoint.

The loss and gradient norm of a step are computed from the parameters *before* its
update, so both can be finite while the update has already made parameters (or
Adam's moments) infinite; a checkpoint saved then would hold them. The train step
therefore also counts the non-finite values of the state it returns
(``count_non_finite``, inside the jitted step), and the loop checks all of it
(``check_step``) before it saves that state: the step's metrics are read a step
late, except at save steps, where they are read at once.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

# The counts the train step reports beside its metrics (not logged: zero unless it stops).
NON_FINITE_KEYS = ("non_finite_params", "non_finite_opt_state")


class NonFiniteStep(RuntimeError):
    """A step gave a non-finite loss, gradient norm, parameter or optimizer value; the
    run stops without saving it and names the last finite checkpoint."""


def count_non_finite(tree: Any) -> jax.Array:
    """The number of NaN or infinite values in ``tree``'s floating-point leaves, as a
    float32 scalar (it cannot wrap around as an int32 count of billions could; any
    non-finite value makes it >= 1)."""
    counts = [jnp.sum(~jnp.isfinite(leaf), dtype=jnp.float32)
              for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return sum(counts, jnp.float32(0))


def check_step(record: dict[str, Any], step: int, last_finite: int | None,
               checkpoints_dir: str) -> dict[str, Any]:
    """``record`` (a step's metrics, read on the host) without its non-finite counts;
    ``NonFiniteStep`` naming the step, its values and the last finite checkpoint when
    anything in it is not finite."""
    counts = {key: int(record.pop(key, 0)) for key in NON_FINITE_KEYS}
    bad_metrics = [key for key in ("loss", "grad_norm") if not math.isfinite(record[key])]
    if not bad_metrics and not any(counts.values()):
        return record
    values = ", ".join([f"loss {record['loss']}", f"grad_norm {record['grad_norm']}",
                        f"{counts['non_finite_params']:,} non-finite parameter values",
                        f"{counts['non_finite_opt_state']:,} non-finite optimizer values"])
    if last_finite is None:
        resume = ("no checkpoint was saved before it, so a rerun starts from step 0")
    else:
        resume = (f"the last finite checkpoint is step {last_finite} in {checkpoints_dir}, "
                  f"which a rerun resumes from")
    raise NonFiniteStep(
        f"training diverged at step {step} ({values}); stopping. Nothing from step {step} "
        f"on was saved: {resume} (lower lr, raise warmup or set grad_clip first).")
