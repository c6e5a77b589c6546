"""The compiled gradient's temporaries of a model's hidden states, its linear op stood
in (``benchmarks.training.standin_ops``): what a remat policy makes a layer keep."""
import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks.training.standin_ops import standin_ops


def gradient_temp_bytes(model: nnx.Module, tokens: int) -> int:
    """Temporary bytes of ``grad(sum(hidden_states))`` for one row of ``tokens``."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, ids):
        merged = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, rest))
        return merged.hidden_states(ids).sum()
    with standin_ops():
        compiled = jax.jit(jax.grad(loss)).lower(
            params, jax.ShapeDtypeStruct((1, tokens), jnp.int32)).compile()
    return compiled.memory_analysis().temp_size_in_bytes
