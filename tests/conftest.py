"""Shared fixtures: float64 on demand, and a fresh random generator per test."""
import zlib

import jax
import numpy as np
import pytest


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
