"""Timing and process helpers shared by the benchmarks: the median timer, the copy
bandwidth that floors are computed from, the op's VJP, out-of-memory detection, and the
PyTorch anchors run in their own process (``python -m`` of a module of this package)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

GiB = 2**30
REPO_ROOT = Path(__file__).resolve().parents[2]


def module_command(module: str, *args: str) -> list[str]:
    """The command that runs ``module`` (say ``benchmarks.common.torch_anchors``) with this
    interpreter, as ``python -m`` from the repository root would."""
    return [sys.executable, "-m", module, *args]


def _with_repo_on_path() -> dict[str, str]:
    """This process's environment with the repository first on ``PYTHONPATH``, so that a
    child started by :func:`module_command` imports ``benchmarks`` from any directory."""
    paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def timed_ms(fn, *args, rounds: int = 20, calls: int = 5) -> float:
    """Median over rounds of the mean of back-to-back calls (dispatch overlaps)."""
    for _ in range(3):
        jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(samples)


def copy_bandwidth_tbps(size_bytes: int = GiB) -> float:
    """Read + write rate of one large elementwise pass (``x * 2``), in TB/s."""
    x = jnp.ones((size_bytes // 2,), jnp.bfloat16)
    ms = timed_ms(jax.jit(lambda x: x * 2), x)
    return 2 * x.nbytes / (ms * 1e-3) / 1e12


def fwd_bwd(op, learned=()):
    """The VJP of ``op(q, k, v, *learned)`` for q, k, v and the learned parameters."""
    def run(q, k, v, do):
        _, vjp = jax.vjp(op, q, k, v, *learned)
        return vjp(do)
    return run


def is_out_of_memory(text: str) -> bool:
    """Whether an error's text (or a child process's stderr) says the device ran out of
    memory: such a setting becomes an "out of memory" row, not a crash."""
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def json_lines_of(cmd: list[str], what: str) -> list[dict]:
    """Runs ``cmd`` (a PyTorch anchor, in its own process so that the two frameworks do
    not share the GPU's memory) and returns the JSON objects it printed, one a line."""
    done = subprocess.run(cmd, capture_output=True, text=True, env=_with_repo_on_path())
    if done.returncode:
        print(f"{what} failed:", done.stderr[-2000:], flush=True)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for row in rows:  # in the log now, should the JAX side not finish
        print(json.dumps(row), flush=True)
    return rows
