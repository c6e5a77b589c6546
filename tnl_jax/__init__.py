"""TransNormerLLM (TNL) in JAX: Flax NNX blocks and models on top of the Lightning
Attention op, training, checkpoints and generation.

    tnl_jax.model        the blocks (SRMSNorm, NormLinearAttention, SGLU, DecoderLayer,
                         SoftmaxAttention, Lrpe) and the language model
    tnl_jax.partitioning mesh axes and logical-axis rules, for weights and activations
    tnl_jax.data         documents in, packed batches out (Grain)
    tnl_jax.training     the training loop and what it needs
    tnl_jax.checkpoints  Hugging Face and converted formats; one loader for any directory
    tnl_jax.generation   prefill + decode sampling
"""
from tnl_jax.checkpoints.hf import load_hf
from tnl_jax.checkpoints.loader import load_model
from tnl_jax.generation import generate
from tnl_jax.model import (SGLU, DecoderLayer, LanguageModel, Lrpe, ModelConfig,
                           NormLinearAttention, SoftmaxAttention, SRMSNorm, create_model,
                           load_model_config)

__all__ = ["DecoderLayer", "LanguageModel", "Lrpe", "ModelConfig", "NormLinearAttention",
           "SGLU", "SRMSNorm", "SoftmaxAttention", "create_model", "generate", "load_hf",
           "load_model", "load_model_config"]
