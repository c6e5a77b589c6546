"""Overlapping the gradient reduction with the backward: XLA's flags for GPU.

The compiled step already reduces each layer's gradient inside the backward's layer
loop (read from its HLO by ``training.collectives``: an all-reduce over the batch axes
run once per layer, not one after the loop). Run in order, each blocks its layer; with
XLA's latency-hiding scheduler and pipelined collectives, layer ``i``'s reduction runs
while layer ``i - 1``'s backward computes. ``apply_gpu_overlap_flags()`` sets them
where a training process starts (``tnl_jax.cli.train``, before any backend starts);
``TNL_JAX_OVERLAP_FLAGS=0`` opts out, and a flag already in ``XLA_FLAGS`` is kept as
given. The CPU ignores them. The gradient's bytes halve with
``grad_reduce_dtype=bfloat16`` (``training.steps``).
"""
from __future__ import annotations

import os

# The latency-hiding scheduler, and collectives moved across loop iterations
# (pipelined) so that a layer's reduction overlaps the next layer's work (the set
# MaxText's GPU configurations use).
GPU_OVERLAP_FLAGS = (
    "--xla_gpu_enable_latency_hiding_scheduler=true",
    "--xla_gpu_enable_pipelined_all_reduce=true",
    "--xla_gpu_enable_pipelined_all_gather=true",
    "--xla_gpu_enable_pipelined_reduce_scatter=true",
    "--xla_gpu_enable_while_loop_double_buffering=true",
)
OPT_OUT = "TNL_JAX_OVERLAP_FLAGS"


def apply_gpu_overlap_flags(environ: dict[str, str] | None = None) -> list[str]:
    """Adds ``GPU_OVERLAP_FLAGS`` to ``XLA_FLAGS`` (those not given already, by name);
    nothing when ``TNL_JAX_OVERLAP_FLAGS=0``. Returns the flags added. Call before jax
    initialises a backend."""
    environ = os.environ if environ is None else environ
    setting = environ.get(OPT_OUT, "1")
    if setting not in ("0", "1"):
        raise ValueError(f"{OPT_OUT}={setting!r}: expected 0 (no overlap flags) or 1")
    if setting == "0":
        return []
    given = environ.get("XLA_FLAGS", "").split()
    names = {flag.split("=")[0] for flag in given}
    added = [flag for flag in GPU_OVERLAP_FLAGS if flag.split("=")[0] not in names]
    environ["XLA_FLAGS"] = " ".join(given + added)
    return added
