"""SRMSNorm and its gated form (TNL's token mixer output) as fused Pallas kernels: one
pass over the rows forward, one backward (ops, kernels), and the plain ``jnp``
reference (reference)."""
from pallas_kernels.norms.kernels import MAX_WIDTH, NormConfig
from pallas_kernels.norms.ops import BACKENDS, srms_norm, srms_norm_gate

__all__ = ["BACKENDS", "MAX_WIDTH", "NormConfig", "srms_norm", "srms_norm_gate"]
