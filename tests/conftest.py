"""Shared fixtures: float64 on demand, a fresh random generator per test, the one
small model with random weights, a finished tiny training run."""
import contextlib
import dataclasses
import io
import os
import pathlib
import shutil
import tempfile
import zlib

# Compiling is most of the suite's time and its programs are small: LLVM's -O0 cuts a
# third of it (same results). Set before jax starts its CPU backend; the processes tests
# start inherit it (tests/training/runs.py's run_env).
CPU_OPT_LEVEL = "--xla_backend_optimization_level=0"
if CPU_OPT_LEVEL.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {CPU_OPT_LEVEL}".strip()

import jax  # noqa: E402 (after XLA_FLAGS)
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnl_jax import ModelConfig, create_model

CACHE_KEY = pytest.StashKey[str]()


def pytest_configure(config):
    """A compilation cache for this test session (and the processes it starts): the
    same tiny training step is compiled by many tests, and compiling is most of their
    time. Fresh per session, so nothing carries over between runs."""
    cache = tempfile.mkdtemp(prefix="tnl-jax-test-compilation-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
    jax.config.update("jax_compilation_cache_dir", cache)
    config.stash[CACHE_KEY] = cache


def pytest_unconfigure(config):
    if CACHE_KEY in config.stash:
        shutil.rmtree(config.stash[CACHE_KEY], ignore_errors=True)


# The small model of the model, generation and checkpoint tests.
SMALL_MODEL = dict(vocab_size=61, decoder_embed_dim=32, decoder_layers=3,
                   decoder_attention_heads=4, glu_dim=48, pad_token_id=0, bos_token_id=1,
                   eos_token_id=2, attention_backend="xla", chunk_size=16)


@pytest.fixture
def x64():
    """Float64 for references; restored afterwards so other tests keep float32."""
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: fresh inputs per test, the same every run
    (crc32, not the per-process salted ``hash``)."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def random_model(seed: int = 0, std: float = 0.3, **changes) -> nnx.Module:
    """``SMALL_MODEL`` with ``changes``, every parameter drawn from ``N(0, std²)``:
    larger than the 0.02 init, so that every path visibly matters."""
    model = create_model(ModelConfig(**{**SMALL_MODEL, **changes}), nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
    nnx.update(model, jax.tree.unflatten(
        treedef, [jnp.asarray(rng.normal(0, std, x.shape), x.dtype) for x in leaves]))
    return model


@pytest.fixture(scope="session")
def small_model():
    """``small_model(seed=0, std=0.3, **config_changes)``: a new small random model."""
    return random_model


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished 4-step training run of a tiny model (``tests.training.runs.TINY``),
    evaluated every 2 steps, checkpointed every 2, ending with a sample. The loop,
    generation and ``init_from`` tests read its directory."""
    from tests.training.runs import TINY_RUN, tiny_config
    from tnl_jax.training.loop import main as train
    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        record = train(tiny_config(run_dir, *TINY_RUN))
    return TinyRun(run_dir, printed.getvalue(), record)


@dataclasses.dataclass(frozen=True)
class TinyRun:
    dir: pathlib.Path  # The run directory.
    output: str  # What the run printed.
    record: dict  # Its last metrics record.
