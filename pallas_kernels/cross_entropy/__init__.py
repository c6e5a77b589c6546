"""Fused linear + cross-entropy: per-token losses of ``h wᵀ`` without the ``(tokens,
vocab)`` logits ever written (ops, kernels), and the naive reference (reference)."""
from pallas_kernels.cross_entropy.kernels import CrossEntropyConfig
from pallas_kernels.cross_entropy.ops import fused_cross_entropy
from pallas_kernels.cross_entropy.reference import reference_cross_entropy

__all__ = ["CrossEntropyConfig", "fused_cross_entropy", "reference_cross_entropy"]
