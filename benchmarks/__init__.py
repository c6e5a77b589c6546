"""Benchmarks of tnl-jax, by topic; run each as ``python -m benchmarks.<topic>.<script>``
from the repository root (benchmarks/README.md)."""
