"""Stand-ins for the attention ops, to measure the glue around them: both token
mixers' ops (TNL's ``lightning_attention``, softmax's ``jax.nn.dot_product_attention``)
replaced by one ``custom_vjp`` op with a fused kernel's memory signature: it reads
``q, k, v``, writes ``o`` (``v``'s shape and dtype), keeps only its inputs for the
backward, and makes ``dq, dk, dv`` in one elementwise pass. Its values are not
attention's: use it for memory and compile-time studies only, never for losses.

    with standin_ops():
        ...  # trace and compile layers: the op's own working set is left out
"""
from __future__ import annotations

import contextlib
from unittest import mock

import jax
import jax.numpy as jnp


@jax.custom_vjp
def standin_op(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """``o = v · Σ(q ⊙ k)`` per row and head: linear in the sequence, like a fused op."""
    return (v * jnp.sum(q * k, -1, keepdims=True)).astype(v.dtype)


def _standin_fwd(q, k, v):
    return standin_op(q, k, v), (q, k, v)


def _standin_bwd(residuals, do):
    q, k, v = residuals
    scores = jnp.sum(q * k, -1, keepdims=True)
    d_scores = jnp.sum(do * v, -1, keepdims=True)
    return ((d_scores * k).astype(q.dtype), (d_scores * q).astype(k.dtype),
            (do * scores).astype(v.dtype))


standin_op.defvjp(_standin_fwd, _standin_bwd)


def _linear_standin(q, k, v, decay, **_):
    """``lightning_attention``'s call as the token mixer makes it: ``(o, final state)``."""
    batch, _, heads, dk = q.shape
    return standin_op(q, k, v), jnp.zeros((batch, heads, dk, v.shape[-1]), jnp.float32)


def _softmax_standin(q, k, v, **_):
    return standin_op(q, k, v)


@contextlib.contextmanager
def standin_ops(enabled: bool = True):
    """Within: both token mixers call ``standin_op`` instead of their attention op
    (with ``enabled`` false: their own)."""
    if not enabled:
        yield
        return
    with mock.patch("tnl_jax.model.token_mixer.lightning_attention", _linear_standin), \
            mock.patch("tnl_jax.model.softmax_attention.jax.nn.dot_product_attention",
                       _softmax_standin):
        yield


def parse_and_report(parser, report) -> None:
    """The memory tools' common tail: ``--stand-in-ops`` and ``key=value`` overrides
    added to ``parser``, then ``report(args)`` under the stand-ins if asked."""
    parser.add_argument("--stand-in-ops", action="store_true",
                        help="both attention ops replaced by one stand-in (standin_ops.py): "
                             "the glue's memory alone, on any platform")
    parser.add_argument("overrides", nargs="*", help="key=value, as for train.py")
    args = parser.parse_args()
    with standin_ops(args.stand_in_ops):
        report(args)
