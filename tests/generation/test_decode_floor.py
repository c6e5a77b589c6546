"""The decode floor's byte count (benchmarks/generation/decode_floor.py) against a hand count and
the model's own parameters: a wrong floor would make every ratio of the benchmark wrong."""
import math

import jax
import pytest
from flax import nnx

from benchmarks.generation.decode_floor import (decode_bytes, floor_ms, spec_tbps, state_bytes,
                                                 weight_bytes)
from benchmarks.generation.generate_report import add_floors
from tests.conftest import SMALL_MODEL
from tnl_jax import ModelConfig, create_model

# d 32, 3 layers, 4 heads: head size e = 8.
CFG = ModelConfig(**{**SMALL_MODEL, "dtype": "bfloat16", "param_dtype": "bfloat16"})


def test_weights_are_every_parameter_once_in_its_dtype():
    model = nnx.eval_shape(lambda: create_model(CFG, nnx.Rngs(0)))
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert weight_bytes(CFG) == sum(math.prod(p.shape) * p.dtype.itemsize for p in params)
    assert weight_bytes(CFG.replace(param_dtype="float32")) == 2 * weight_bytes(CFG)


def test_tnl_state_is_read_and_written_in_float32():
    # Layer 0 has LRPE (dk = 2e = 16), layers 1, 2 not (dk = e = 8); read + write, 4 bytes.
    per_row = 2 * 4 * 4 * (16 * 8 + 8 * 8 + 8 * 8)
    assert state_bytes(CFG, batch=3, context=1000) == 3 * per_row
    assert state_bytes(CFG, batch=3, context=10) == 3 * per_row  # context-free


@pytest.mark.parametrize("architecture", ["softmax", "hybrid"])
def test_softmax_layers_read_their_cache_at_context(architecture):
    cfg = CFG.replace(architecture=architecture, softmax_every=3)
    kv_per_layer = 5 * 100 * 4 * 2 * 8 * 2  # B · context · H · (k, v) · e · bf16
    linear = {"softmax": 0, "hybrid": 5 * 2 * 4 * 4 * (16 * 8 + 8 * 8)}[architecture]
    layers = {"softmax": 3, "hybrid": 1}[architecture]
    assert state_bytes(cfg, batch=5, context=100) == layers * kv_per_layer + linear
    assert decode_bytes(cfg, 5, 100) == weight_bytes(cfg) + layers * kv_per_layer + linear


def test_floor_ms():
    assert floor_ms(4_800_000_000, 4.8) == pytest.approx(1.0)


@pytest.mark.parametrize("kind,tbps", [("NVIDIA H100 80GB HBM3", 3.35), ("NVIDIA H200", 4.8),
                                       ("NVIDIA H100 PCIe", 2.0), ("cpu", None)])
def test_the_spec_floor_is_the_devices_own(kind, tbps):
    """The spec floor reads the bandwidth of the device the rows ran on, from the one
    table of device peaks (tnl_jax.training.metrics), not the H200's on every device."""
    assert spec_tbps(kind) == tbps
    rows = add_floors([{"bytes_per_step": 3 * 10**9, "ms_per_token": 2.0}], 2.5, spec_tbps(kind))
    assert rows[0]["floor_ms"] == pytest.approx(1.2)
    if tbps is None:
        assert "floor_spec_ms" not in rows[0]
    else:
        assert rows[0]["floor_spec_ms"] == pytest.approx(3.0 / tbps)
