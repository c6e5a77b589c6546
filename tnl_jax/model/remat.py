"""What each decoder layer keeps for the backward pass: ``ModelConfig.remat``, by name.

Under a policy other than ``none`` every layer (one step of the layer stacks'
``nnx.scan``) is rematerialised: the backward recomputes what the policy did not keep,
from the layer's input. Kept per token per layer (values in the compute dtype; width
``d``, MLP width ``m = glu_dim``; an LRPE layer's ``q, k`` are ``2d`` wide, not ``d``):

- ``none``: no recomputation, everything the backward reads: norms, projections,
  gates, the MLP's products and the attention op's residuals (about ``20d`` measured
  on the CPU's ``xla`` backend at ``d = 256, m = 704``; docs/DESIGN.md).
- ``dots_saveable``: the input ``x`` and every matmul's output: ``q|k|v|u`` (``4d``),
  the output projection (``d``), ``W₁, W₂`` (``2m``), ``W₃`` (``d``), plus the
  attention's own products where XLA computes it (the ``xla`` backend's chunk
  products; a softmax layer's ``T`` scores per head, quadratic, on the ``xla``
  implementation). The Pallas op and cuDNN are not matmuls to XLA: their forward runs
  again in the backward.
- ``dots_with_no_batch_dims_saveable``: ``x`` and the projections' outputs only
  (``7d + 2m``); the attention's internals (products with batch dimensions) are
  recomputed.
- ``op_io``: ``x`` and the attention op's inputs and output ``q, k, v, o`` (``5d``),
  named with ``checkpoint_name`` (``ATTENTION_NAMES``). The backward recomputes
  norms, projections and MLP (the ``q|k|v|u`` matmul too, for ``u``), but not the
  op's output; with the Pallas kernels, whose backward reads only ``q, k, v`` (and
  per-split states, recomputed when a row has several splits), the op's forward does
  not run again. The ``xla`` backend recomputes its scan's intermediates.
- ``projections``: ``x``, the token mixer's ``q|k|v`` projection (``3d``) and the
  MLP's ``x W₁, x W₂`` (``2m``), named with ``checkpoint_name``. Everything else is
  elementwise work or cheap to redo and runs again in the backward: norms, ``silu``,
  LRPE, the gate ``u = x W_u`` (one ``d × d`` product), the MLP's product, and the
  attention op's forward (the Pallas op: about 5% of a step). The fastest policy on
  an H200 and a fifth of ``none``'s memory (tnl-385m at 8K: 151K tokens/s, 24 GiB
  against ``none``'s 144K, 51 GiB; benchmarks/RESULTS.md); the large presets use it.
- ``projections_op_io``: ``projections`` and ``op_io`` together: the op's forward
  is not repeated, for about ``4d`` more per token per layer.
- ``projections_op_out``: ``projections`` and the op's residuals that its inputs do
  not give back cheaply: its output ``o`` (``d``) and the Pallas op's states entering
  its sequence splits (``SPLIT_STATES_NAME``: ``dk·dv`` floats per split and head, not
  per token). ``q, k, v`` are recomputed from the kept ``q|k|v`` product (elementwise),
  so neither the op's forward nor its state-only passes run in the backward: for
  ``d`` more per token per layer than ``projections``.
- ``mlp_projections``: ``x`` and the MLP's ``x W₁, x W₂`` (``2m``) only: the
  ``q|k|v`` product is recomputed too (``3d²`` multiply-adds per token per layer, about
  6% more FLOPs for tnl-385m), for ``3d`` less per token per layer than
  ``projections`` (tnl-385m at 128K tokens: about 18 GiB less, what lets a 1 x 128K
  step fit an 80 GB GPU with room to spare). Not the presets' policy: it costs matmuls.
- ``full``: only ``x`` (``d``): the whole layer runs again in the backward (about a
  third more compute for the layers).

A layer stack that is one iteration of its scan (TNL's LRPE layer 0 is a stack of its
own; ``scan_unroll`` as deep as a stack) is no loop to XLA, which would merge the
recomputation into the forward and keep all the layer makes until its backward (CPU,
tnl-385m width, 8 layers, bf16, ops stood in: 443 KiB per token against 372 once
fixed; softmax 381). There each layer runs under ``remat_after_cotangent``.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from pallas_kernels.lightning.kernel_vjp import SPLIT_STATES_NAME

# Names of the attention op's inputs and output (linear and softmax layers alike).
ATTENTION_Q, ATTENTION_K, ATTENTION_V, ATTENTION_OUT = (
    "attention_q", "attention_k", "attention_v", "attention_out")
ATTENTION_NAMES = (ATTENTION_Q, ATTENTION_K, ATTENTION_V, ATTENTION_OUT)
# Names of the products of the input projections: the token mixer's q|k|v and the
# channel mixer's x W₁ and x W₂ (what the ``projections`` policy keeps besides the op's).
PROJECTION, MLP_PROJECTION = "input_projection", "mlp_projection"


def name_op_inputs(q: jax.Array, k: jax.Array, v: jax.Array) -> tuple[jax.Array, ...]:
    """The attention op's inputs, named for ``op_io`` (identities outside a remat)."""
    return tuple(checkpoint_name(x, name) for x, name in zip((q, k, v), ATTENTION_NAMES))


def name_op_output(o: jax.Array) -> jax.Array:
    """The attention op's output, named for ``op_io``."""
    return checkpoint_name(o, ATTENTION_OUT)


def name_projection(x: jax.Array, name: str = PROJECTION) -> jax.Array:
    """An input projection's product, named for ``projections``."""
    return checkpoint_name(x, name)


def _after(cotangent: jax.Array, tree):
    """``tree``'s per-token arrays (leading axes those of ``cotangent``, ``(B, T)``;
    the weights are left alone) made to depend on ``cotangent``: plus ``0 · min |c|``,
    which XLA cannot fold (it is NaN for a NaN ``c``) and, a reduction, needs no
    gather under a mesh."""
    zero = jnp.min(jnp.abs(cotangent)).astype(jnp.float32) * 0
    rows = cotangent.shape[:2]

    def tie(x):
        numeric = jnp.issubdtype(x.dtype, jnp.number)
        return x + zero.astype(x.dtype) if numeric and x.shape[:2] == rows else x
    return jax.tree.map(tie, tree)


def _zero_cotangent(x: jax.Array) -> jax.Array:
    return (jnp.zeros_like(x) if jnp.issubdtype(x.dtype, jnp.inexact)
            else jnp.zeros(x.shape, jax.dtypes.float0))


def remat_after_cotangent(f: Callable, policy: Any) -> Callable:
    """``f(x, params, constants)`` under ``jax.checkpoint(policy=policy)``,
    differentiated in ``x`` and ``params`` only (``constants``, such as fixed decays
    and integer ids, get zero cotangents), whose backward recomputes only once the
    cotangent of its output has arrived (its saved values are made to depend on it).

    For remat outside a loop: a scan of one iteration is no loop to XLA, which then
    runs the recomputation with the forward, reusing its values, and keeps everything
    the layer makes until its backward (``none``'s memory; an optimization barrier
    does not stop it on the CPU)."""
    checkpointed = jax.checkpoint(f, policy=policy)

    @jax.custom_vjp
    def remat(x, params, constants):
        return checkpointed(x, params, constants)

    def forward(x, params, constants):
        y, vjp_fn = jax.vjp(lambda x, p: checkpointed(x, p, constants), x, params)
        return y, (vjp_fn, constants)  # vjp_fn: a pytree of the saved values

    def backward(saved, cotangent):
        vjp_fn, constants = saved
        return (*_after(cotangent, vjp_fn)(cotangent), jax.tree.map(_zero_cotangent, constants))

    remat.defvjp(forward, backward)
    return remat


def call_after_cotangent(module: nnx.Module, policy: Any, x: jax.Array, *args) -> jax.Array:
    """``module(x, *args)`` under ``remat_after_cotangent``, differentiated in ``x`` and
    the module's ``nnx.Param``s: the remat of a decoder layer outside a loop."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    param_leaves, param_def = jax.tree.flatten(params)
    rest_leaves, rest_def = jax.tree.flatten(rest)

    def call(x, param_leaves, constants):
        rest_leaves, args = constants
        return nnx.merge(graphdef, jax.tree.unflatten(param_def, param_leaves),
                         jax.tree.unflatten(rest_def, rest_leaves))(x, *args)

    return remat_after_cotangent(call, policy)(x, param_leaves, (rest_leaves, args))


_policy = jax.checkpoint_policies
REMAT_POLICIES: dict[str, Any] = {
    "none": None,
    "dots_saveable": _policy.dots_saveable,
    "dots_with_no_batch_dims_saveable": _policy.dots_with_no_batch_dims_saveable,
    "op_io": _policy.save_only_these_names(*ATTENTION_NAMES),
    "projections": _policy.save_only_these_names(PROJECTION, MLP_PROJECTION),
    "projections_op_io": _policy.save_only_these_names(*ATTENTION_NAMES, PROJECTION,
                                                       MLP_PROJECTION),
    "projections_op_out": _policy.save_only_these_names(PROJECTION, MLP_PROJECTION,
                                                        ATTENTION_OUT, SPLIT_STATES_NAME),
    "mlp_projections": _policy.save_only_these_names(MLP_PROJECTION),
    "full": _policy.nothing_saveable,
}

