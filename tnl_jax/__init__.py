"""TransNormerLLM (TNL) in JAX: Flax NNX modules on top of the Lightning Attention op."""
from tnl_jax.config import ModelConfig
from tnl_jax.generate import generate
from tnl_jax.hf import load_hf
from tnl_jax.model import create_model

__all__ = ["ModelConfig", "create_model", "generate", "load_hf"]
