"""The fused SRMSNorm's bad inputs (area "norms"): ``srms_norm``, ``srms_norm_gate``
and ``NormConfig``. Every row fails in validation, before anything is traced (numpy
inputs)."""
from __future__ import annotations

import numpy as np

from pallas_kernels.norms import NormConfig, srms_norm, srms_norm_gate
from tests.bad_inputs.case import BadInput


def rand(*shape, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng().standard_normal(shape).astype(dtype)


def norm(**changes):
    """``srms_norm`` on fresh random inputs (backend ``"interpret"``) with ``changes``."""
    def call():
        args = dict(x=rand(5, 64), eps=1e-6, backend="interpret")
        args.update(changes)
        return srms_norm(args.pop("x"), **args)
    return call


def gate(**changes):
    def call():
        args = dict(o=rand(5, 64), u=rand(5, 64), eps=1e-6, backend="interpret")
        args.update(changes)
        return srms_norm_gate(args.pop("o"), args.pop("u"), **args)
    return call


CASES = [
    BadInput("norms: unknown backend", norm(backend="xla"), ValueError,
             ("backend='xla'", "'pallas', 'interpret'")),
    BadInput("norms: width not a power of two", norm(x=rand(5, 96)), ValueError,
             ("x has shape (5, 96)", "power of two <= 8192")),
    BadInput("norms: width past one block", norm(x=rand(1, 16384)), ValueError,
             ("x has shape (1, 16384)", "power of two <= 8192")),
    BadInput("norms: a scalar", norm(x=np.float32(2.0)), ValueError,
             ("x has shape ()", "(..., width)")),
    BadInput("norms: integer input", norm(x=np.ones((5, 64), np.int32)), ValueError,
             ("x has dtype int32", "'float16', 'bfloat16', 'float32'")),
    BadInput("norms: float64 input", norm(x=rand(5, 64, dtype=np.float64)), ValueError,
             ("x has dtype float64", "'float32'")),
    BadInput("norms: not an array", norm(x=[[1.0] * 64]), ValueError,
             ("x is a list", "an array")),
    BadInput("norms: negative eps", norm(eps=-1e-6), ValueError,
             ("eps=-1e-06", "finite number >= 0")),
    BadInput("norms: eps an array", norm(eps=np.ones(2)), ValueError,
             ("eps=array", "Python number")),
    BadInput("norms: config not a NormConfig", norm(config={"block_rows": 8}), ValueError,
             ("config={'block_rows': 8}", "NormConfig")),
    BadInput("norms: block of rows not a power of two", lambda: NormConfig(block_rows=12),
             ValueError, ("NormConfig.block_rows=12", "power of two >= 1")),
    BadInput("norms: gate of another shape", gate(u=rand(5, 32)), ValueError,
             ("o is float32[5, 64] and u float32[5, 32]", "one shape and dtype")),
    BadInput("norms: gate of another dtype", gate(u=rand(5, 64, dtype=np.float16)), ValueError,
             ("o is float32[5, 64] and u float16[5, 64]", "one shape and dtype")),
    BadInput("norms: gate's u an integer array", gate(u=np.ones((5, 64), np.int8)), ValueError,
             ("u has dtype int8", "'float32'")),
]
