"""The model: TNL's blocks, usable alone with plain keyword constructors, and the
language model that ``ModelConfig`` builds from them.

    SRMSNorm(eps=1e-6)
    Lrpe(num_heads, head_dim, *, param_dtype, rngs)
    NormLinearAttention(num_heads, in_features, *, use_lrpe, decay, learn_decay, ..., rngs)
    SoftmaxAttention(num_heads, in_features, *, rope_theta, ..., rngs)
    SGLU(in_features, hidden_features, *, ..., rngs)
    DecoderLayer(num_heads, in_features, mlp_features, *, attention, ..., rngs)
    LanguageModel(cfg, rngs) == create_model(cfg, rngs)
"""
from tnl_jax.model.channel_mixer import SGLU
from tnl_jax.model.config import ModelConfig, load_model_config
from tnl_jax.model.counting import count_flops_per_token, count_params
from tnl_jax.model.decay import alibi_slopes, layer_decays
from tnl_jax.model.decoder_layer import DecoderLayer
from tnl_jax.model.language_model import LanguageModel, create_model
from tnl_jax.model.lrpe import Lrpe
from tnl_jax.model.norms import RMSNorm, SRMSNorm
from tnl_jax.model.softmax_attention import SoftmaxAttention
from tnl_jax.model.token_mixer import FixedDecay, NormLinearAttention

__all__ = ["DecoderLayer", "FixedDecay", "LanguageModel", "Lrpe", "ModelConfig",
           "NormLinearAttention", "RMSNorm", "SGLU", "SRMSNorm", "SoftmaxAttention", "alibi_slopes",
           "count_flops_per_token", "count_params", "create_model", "layer_decays",
           "load_model_config"]
