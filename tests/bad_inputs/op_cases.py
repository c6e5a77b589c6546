"""The op's bad inputs (area "op"): ``lightning_attention``, ``lightning_attention_step``
and their launch and sharding arguments. Every row fails in validation, before anything
is traced or compiled (numpy inputs: no jax computation at all). Values the tracer
cannot see are checked on request (``checks=True``: tests/kernels/test_nonfinite.py)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels import (KernelConfig, Launch, ShardAxes, lightning_attention,
                            lightning_attention_step)
from pallas_kernels.lightning import tuning
from pallas_kernels.lightning.launch import WALKS
from tests.bad_inputs.case import BadInput

B, T, H, DK, DV = 2, 10, 3, 8, 4
CONFIG = KernelConfig(forward=Launch(chunk=16), dq=Launch(chunk=16), dk=Launch(chunk=16),
                      dv=Launch(chunk=16))


def rand(*shape, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng().standard_normal(shape).astype(dtype)


def op(**changes):
    """A call of ``lightning_attention`` on fresh random inputs (backend ``"xla"``) with
    ``changes`` to its arguments; a callable change is called for its value."""
    def call():
        args = dict(q=rand(B, T, H, DK), k=rand(B, T, H, DK), v=rand(B, T, H, DV),
                    decay=np.random.default_rng().uniform(0.05, 1.0, H).astype(np.float32),
                    backend="xla")
        args.update({key: value() if callable(value) else value
                     for key, value in changes.items()})
        return lightning_attention(args.pop("q"), args.pop("k"), args.pop("v"),
                                   args.pop("decay"), **args)
    return call


def step(**changes):
    """A call of ``lightning_attention_step`` on fresh random inputs with ``changes``."""
    def call():
        args = dict(q=rand(B, H, DK), k=rand(B, H, DK), v=rand(B, H, DV),
                    decay=np.full((H,), 0.1, np.float32), state=rand(B, H, DK, DV))
        args.update({key: value() if callable(value) else value
                     for key, value in changes.items()})
        return lightning_attention_step(**args)
    return call


def mosaic_config(chunk: int = 64, block: int = 128, **splits) -> KernelConfig:
    launches = {walk: Launch(block, chunk=chunk, lowering="mosaic") for walk in WALKS}
    return KernelConfig(**launches, **splits)


def row(name: str, call, error: type[BaseException], *says: str) -> BadInput:
    return BadInput(f"op: {name}", call, error, says)


ARRAYS = [
    row("q of wrong rank", op(q=lambda: rand(B, T, H)), ValueError,
        "q must have rank 4", "(2, 10, 3)"),
    row("k shape differs", op(k=lambda: rand(B, T, H, DK + 1)), ValueError,
        "k must have the shape of q", "(2, 10, 3, 9)"),
    row("v batch differs", op(v=lambda: rand(B + 1, T, H, DV)), ValueError, "v must match q"),
    row("v seq differs", op(v=lambda: rand(B, T + 1, H, DV)), ValueError, "v must match q"),
    row("v heads differ", op(v=lambda: rand(B, T, H + 1, DV)), ValueError, "v must match q"),
    row("integer q", op(q=lambda: rand(B, T, H, DK, dtype=np.int32)), TypeError,
        "q must be a floating", "int32"),
    row("v a list", op(v=[[1.0]]), TypeError, "v must be an array", "list"),
    row("k bfloat16 beside float32 q and v", op(k=lambda: rand(B, T, H, DK, dtype=jnp.bfloat16)),
        TypeError, "q, k and v must share one dtype", "k bfloat16"),
    row("v float16 beside float32 q and k", op(v=lambda: rand(B, T, H, DV, dtype=np.float16)),
        TypeError, "q, k and v must share one dtype", "v float16"),
    row("q, k, v float8", op(**{name: (lambda n=n: rand(B, T, H, n).astype(jnp.float8_e4m3fn))
                                for name, n in (("q", DK), ("k", DK), ("v", DV))}),
        TypeError, "q has dtype float8_e4m3fn", "supported: float16, bfloat16, float32, float64"),
    row("decay float8", op(decay=lambda: np.full((H,), 0.5, jnp.float8_e5m2)), TypeError,
        "decay has dtype float8_e5m2", "supported: float16"),
    row("decay of shape (H, 1)", op(decay=lambda: rand(H, 1)), ValueError,
        "decay must have shape (heads,) = (3,)", "(3, 1)"),
    row("decay a scalar", op(decay=np.float32(0.1)), ValueError, "decay must have shape"),
    row("decay a list", op(decay=[0.1, 0.2, 0.3]), TypeError, "decay must be an array", "list"),
    row("decay integer", op(decay=np.ones(H, np.int32)), TypeError,
        "decay must be a floating", "int32"),
    row("decay negative", op(decay=np.array([0.1, -0.2, 0.0], np.float32)), ValueError,
        "decay must be non-negative", "-0.2", "head 1"),
    row("decay -inf", op(decay=np.array([0.1, -np.inf, 0.0], np.float32)), ValueError,
        "decay must be non-negative", "-inf"),
    row("decay NaN", op(decay=np.array([0.1, np.nan, 0.0], np.float32)), ValueError,
        "decay must not contain NaN", "heads [1]"),
    row("segment_ids float", op(segment_ids=lambda: rand(B, T)), TypeError,
        "segment_ids must be an integer", "float32"),
    row("segment_ids bool", op(segment_ids=np.ones((B, T), bool)), TypeError,
        "segment_ids must be an integer", "bool"),
    row("segment_ids shape", op(segment_ids=np.ones((B, T + 1), np.int32)), ValueError,
        "segment_ids must have shape (batch, seq) = (2, 10)", "(2, 11)"),
    row("initial_state transposed", op(initial_state=lambda: rand(B, H, DV, DK)), ValueError,
        "initial_state must have shape (batch, heads, dk, dv) = (2, 3, 8, 4)"),
    row("initial_state integer", op(initial_state=np.ones((B, H, DK, DV), np.int32)),
        TypeError, "initial_state must be a floating", "int32"),
    row("initial_state a list", op(initial_state=[0.0]), TypeError,
        "initial_state must be an array", "list"),
]

FLAGS_AND_OPTIONS = [
    row("return_final_state='no'", op(return_final_state="no"), TypeError,
        "return_final_state must be a bool", "'no'"),
    row("return_final_state=1", op(return_final_state=1), TypeError,
        "return_final_state must be a bool", "got 1 of type int"),
    row("return_final_state=None", op(return_final_state=None), TypeError,
        "return_final_state must be a bool", "None"),
    row("checks='yes'", op(checks="yes"), TypeError, "checks must be a bool", "'yes'"),
    row("unknown backend", op(backend="cuda"), ValueError, "backend must be one of", "'cuda'"),
    row("backend misspelt", op(backend="interpet"), ValueError,
        "got 'interpet' (did you mean 'interpret'?)"),
    row("backend upper case", op(backend="XLA"), ValueError, "did you mean 'xla'?"),
    row("backend not a string", op(backend=1), TypeError, "backend must be one of",
        "got 1 of type int"),
    row("chunk_size not a power of two", op(chunk_size=48), ValueError,
        "chunk_size must be a power of two >= 16, got 48"),
    row("chunk_size too small", op(chunk_size=8), ValueError, "chunk_size must be a power",
        "got 8"),
    row("chunk_size negative", op(chunk_size=-16), ValueError, "got -16"),
    row("chunk_size a float", op(chunk_size=16.0), TypeError, "chunk_size must be an int",
        "16.0"),
    row("chunk_size a bool", op(chunk_size=True), TypeError, "chunk_size must be an int",
        "True"),
]

LAUNCHES = [
    row("kernel_config a dict", op(kernel_config={"forward": Launch()}, backend="interpret"),
        TypeError, "kernel_config must be a KernelConfig or None, got dict"),
    row("kernel_config with xla", op(kernel_config=CONFIG), ValueError,
        "kernel_config applies to the 'pallas' and 'interpret' backends"),
    row("kernel_config and chunk_size",
        op(kernel_config=CONFIG, chunk_size=16, backend="interpret"), ValueError,
        "give chunk_size or kernel_config, not both"),
    row("Launch.chunk not a power of two", lambda: Launch(chunk=48), ValueError,
        "Launch.chunk must be a power of two >= 16, got 48"),
    row("Launch.chunk a float", lambda: Launch(chunk=64.0), TypeError,
        "Launch.chunk must be an int", "64.0"),
    row("Launch.block negative", lambda: Launch(block=-64), ValueError,
        "Launch.block must be an int >= 0, got -64"),
    row("Launch.num_warps three", lambda: Launch(num_warps=3), ValueError,
        "Launch.num_warps must be a power of two >= 1, got 3"),
    row("Launch.num_stages zero", lambda: Launch(num_stages=0), ValueError,
        "Launch.num_stages must be an int >= 1, got 0"),
    row("Launch.lowering unknown", lambda: dataclasses.replace(Launch(), lowering="cuda"),
        ValueError, "Launch.lowering must be one of", "'cuda'"),
    row("KernelConfig.forward a dict",
        lambda: KernelConfig(forward={}, dq=Launch(), dk=Launch(), dv=Launch()), TypeError,
        "KernelConfig.forward must be a Launch, got {}"),
    row("KernelConfig.states a string",
        lambda: KernelConfig(forward=Launch(), dq=Launch(), dk=Launch(), dv=Launch(),
                             states="mosaic"),
        TypeError, "KernelConfig.states must be a Launch or None", "'mosaic'"),
    row("dQ and dK chunks differ",
        lambda: KernelConfig(forward=Launch(), dq=Launch(chunk=32), dk=Launch(chunk=64),
                             dv=Launch()),
        ValueError, "dQ and dK walks need one chunk length, got 32 and 64"),
    row("fused dK/dV in Mosaic GPU",
        lambda: KernelConfig(forward=Launch(), dq=Launch(), dk=Launch(), dv=Launch(),
                             fused_dkdv=Launch(lowering="mosaic")),
        ValueError, "fused dK/dV walk has no Mosaic GPU lowering"),
    row("chunks_per_split zero", lambda: mosaic_config(chunks_per_split=0), ValueError,
        "KernelConfig.chunks_per_split must be an int >= 1, got 0"),
    row("state_split_factor a bool", lambda: mosaic_config(state_split_factor=True),
        TypeError, "KernelConfig.state_split_factor must be an int", "True"),
    row("block that does not divide the head",
        lambda: tuning.resolve(KernelConfig(forward=Launch(), dq=Launch(48), dk=Launch(),
                                            dv=Launch()), 64, 64),
        ValueError, "kernel_config.dq.block must divide the padded width 64, got 48"),
    row("Mosaic GPU launch of chunk 32", lambda: tuning.resolve(mosaic_config(chunk=32), 32, 32),
        ValueError, "kernel_config.forward", "does not fit the Mosaic GPU walk"),
    row("Mosaic GPU launch on float32", lambda: tuning.resolve(mosaic_config(), 128, 128,
                                                               itemsize=4),
        ValueError, "does not fit the Mosaic GPU walk"),
]

SHARDING = [
    row("context_axis and shard_axes", op(context_axis="c", shard_axes=ShardAxes(seq="c")),
        ValueError, "give context_axis", "not both"),
    row("context_axis outside shard_map", op(context_axis="c"), ValueError,
        "context_axis='c'", "not an axis of an enclosing shard_map"),
    row("context_axis an int", op(context_axis=3), TypeError,
        "context_axis must be a mesh axis name", "got 3"),
    row("shard_axes a tuple", op(shard_axes=("data",)), TypeError,
        "shard_axes must be a ShardAxes or None", "('data',)"),
    row("ShardAxes.seq an int", lambda: ShardAxes(seq=3), TypeError, "ShardAxes.seq must be",
        "got 3"),
    row("shard_axes naming an axis the mesh lacks", op(shard_axes=ShardAxes(seq="context")),
        ValueError, "shard_axes names mesh axes ['context']", "lacks"),
]

STEP = [
    row("step: q of rank 4", step(q=lambda: rand(B, 1, H, DK)), ValueError,
        "q must have rank 3", "(batch, heads, dim)"),
    row("step: state transposed", step(state=lambda: rand(B, H, DV, DK)), ValueError,
        "state must have shape (batch, heads, dk, dv) = (2, 3, 8, 4)"),
    row("step: state integer", step(state=np.ones((B, H, DK, DV), np.int32)), TypeError,
        "state must be a floating", "int32"),
    row("step: decay of H + 1", step(decay=np.ones(H + 1, np.float32)), ValueError,
        "decay must have shape (heads,) = (3,)"),
    row("step: decay NaN", step(decay=np.array([np.nan, 0.1, 0.1], np.float32)), ValueError,
        "decay must not contain NaN"),
    row("step: v bfloat16 beside float32", step(v=lambda: rand(B, H, DV, dtype=jnp.bfloat16)),
        TypeError, "q, k and v must share one dtype"),
    row("step: state float8", step(state=lambda: rand(B, H, DK, DV).astype(jnp.float8_e4m3fn)),
        TypeError, "state has dtype float8_e4m3fn", "supported:"),
    row("step: checks=1", step(checks=1), TypeError, "checks must be a bool"),
    row("step: backend misspelt", step(backend="palas"), ValueError, "backend must be one of",
        "did you mean 'pallas'?"),
    row("step: backend pallas without a GPU", step(backend="pallas"), ValueError,
        "backend='pallas' needs a GPU", "use backend='interpret'"),
]


def forward_mode(function, **changes):
    """``jax.jvp`` of ``function`` (``op`` or ``step``'s call, ``q`` the variable) on the
    ``interpret`` backend."""
    def call():
        q = rand(B, T, H, DK) if function is op else rand(B, H, DK)
        return jax.jvp(lambda x: function(q=x, backend="interpret", **changes)(), (q,),
                       (rand(*q.shape),))
    return call


AUTODIFF = [
    row("jax.jvp on the interpret backend", forward_mode(op), NotImplementedError,
        "forward-mode autodiff", "backend='interpret'", "use backend='xla'"),
    row("jax.jvp of the step on the interpret backend", forward_mode(step),
        NotImplementedError, "lightning_attention_step: forward-mode", "backend='xla'"),
    row("jax.hessian on the interpret backend",
        lambda: jax.hessian(lambda d: op(decay=d, backend="interpret")().sum())(
            np.full((H,), 0.3, np.float32)),
        NotImplementedError, "of decay reached backend='interpret'", "use backend='xla'"),
    row("jax.hessian of a jitted function on the interpret backend",
        lambda: jax.hessian(jax.jit(lambda d: op(decay=d, backend="interpret")().sum()))(
            np.full((H,), 0.3, np.float32)),
        NotImplementedError, "of the kernels' inputs reached backend='interpret'",
        "use backend='xla'"),
    row("jax.hessian of a jitted decode step on the interpret backend",
        lambda: jax.hessian(jax.jit(lambda d: step(decay=d, backend="interpret")()[0].sum()))(
            np.full((H,), 0.3, np.float32)),
        NotImplementedError, "reached backend='interpret'", "use backend='xla'"),
]

CASES = ARRAYS + FLAGS_AND_OPTIONS + LAUNCHES + SHARDING + STEP + AUTODIFF
