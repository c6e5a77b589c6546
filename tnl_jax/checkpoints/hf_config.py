"""A published TransNormerLLM ``config.json`` <-> ``ModelConfig``, key by key as
``TransnormerConfig.save_pretrained`` writes it.

OpenNLPLab's ``configuration_transnormer.py`` (a transformers ``PretrainedConfig``)
and ``modeling_transnormer.py`` put three kinds of keys in the file:

* the model's own (``vocab_size``, ``decoder_embed_dim``, ...): ``ModelConfig``'s
  fields of the same names. A key the file lacks takes ``TransnormerConfig``'s
  default, as the published code reads it (not ``ModelConfig``'s);
* one derived from them: ``TransnormerModel.__init__`` sets ``linear_use_lrpe`` to
  each layer's entry of ``linear_use_lrpe_list`` in turn, so a saved file holds the
  last layer's entry; with an empty list, every layer reads ``linear_use_lrpe``
  itself. It is checked against the list, never silently preferred;
* bookkeeping that changes neither the weights nor the math: everything
  ``PretrainedConfig.to_dict`` writes (``HF_BOOKKEEPING``: versions, dtypes,
  generation defaults, output flags, labels, tokenizer hints) and
  ``TransnormerConfig``'s ``use_cache`` and ``add_bos_token``. Accepted and ignored,
  but ``model_type`` must be ``transnormer`` and ``pruned_heads`` empty (both would
  change the model).

Any other key is an error naming the nearest valid one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tnl_jax.checkpoints.json_files import read_mapping
from tnl_jax.model.config import ModelConfig

MODEL_TYPE = "transnormer"
DERIVED_LRPE = "linear_use_lrpe"

# TransnormerConfig.__init__'s defaults (configuration_transnormer.py, OpenNLPLab).
TRANSNORMER_DEFAULTS: dict[str, Any] = {
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "vocab_size": 64000,
    "init_std": 0.02, "decoder_embed_dim": 1024, "decoder_layers": 24,
    "decoder_attention_heads": 8, "no_scale_embedding": False, "norm_type": "simplermsnorm",
    "linear_use_lrpe_list": [], "hidden_dim": 1024, "linear_act_fun": "silu", "glu_dim": 2816,
    "bias": False}

# The keys of PretrainedConfig.to_dict() (transformers 4.31.0, 4.46.3, 4.57.1 and 5.24.0,
# each run on TransnormerConfig) that are not the model's, plus TransnormerConfig's
# use_cache and add_bos_token. "dtype" / "torch_dtype" is the stored weights' dtype: the
# caller picks the compute dtype.
HF_BOOKKEEPING = frozenset({
    "_attn_implementation_autoset", "_name_or_path", "add_bos_token", "add_cross_attention",
    "architectures", "auto_map", "bad_words_ids", "begin_suppress_tokens",
    "chunk_size_feed_forward", "cross_attention_hidden_size", "decoder_start_token_id",
    "diversity_penalty", "do_sample", "dtype", "early_stopping", "encoder_no_repeat_ngram_size",
    "exponential_decay_length_penalty", "finetuning_task", "forced_bos_token_id",
    "forced_eos_token_id", "id2label", "is_decoder", "is_encoder_decoder", "label2id",
    "length_penalty", "max_length", "min_length", "model_type", "no_repeat_ngram_size",
    "num_beam_groups", "num_beams", "num_return_sequences", "output_attentions",
    "output_hidden_states", "output_scores", "prefix", "problem_type", "pruned_heads",
    "remove_invalid_values", "repetition_penalty", "return_dict", "return_dict_in_generate",
    "sep_token_id", "suppress_tokens", "task_specific_params", "temperature", "tf_legacy_loss",
    "tie_encoder_decoder", "tokenizer_class", "top_k", "top_p", "torch_dtype", "torchscript",
    "transformers_version", "typical_p", "use_bfloat16", "use_cache"})


def _check_bookkeeping(hf_config: dict[str, Any]) -> None:
    """The two bookkeeping keys that would describe another model."""
    model_type = hf_config.get("model_type", MODEL_TYPE)
    if model_type != MODEL_TYPE:
        raise ValueError(f"model_type={model_type!r}: expected {MODEL_TYPE!r} (this loader reads "
                         "TransNormerLLM checkpoints only)")
    if hf_config.get("pruned_heads"):
        raise ValueError(f"pruned_heads={hf_config['pruned_heads']!r}: expected {{}} (a model "
                         "with pruned heads is not the published architecture)")


def _layer_lrpe(hf_config: dict[str, Any]) -> Any:
    """``linear_use_lrpe_list`` as the published ``TransnormerModel`` applies it, with
    the derived ``linear_use_lrpe`` checked against it."""
    listed, derived = hf_config["linear_use_lrpe_list"], hf_config.get(DERIVED_LRPE)
    if not isinstance(listed, list):
        return listed  # ModelConfig names the bad value.
    if derived is not None and derived not in (0, 1):
        raise ValueError(f"{DERIVED_LRPE}={derived!r}: expected 0/1 or false/true")
    if listed:
        if derived is not None and listed[-1] in (0, 1) and derived != listed[-1]:
            raise ValueError(
                f"{DERIVED_LRPE}={derived!r} disagrees with linear_use_lrpe_list={listed!r}: "
                f"the published TransnormerModel leaves the last layer's entry "
                f"({listed[-1]!r}) there, so one of the two was edited")
        return listed
    if derived is None:
        raise ValueError("linear_use_lrpe_list is empty and linear_use_lrpe is missing: the "
                         "published TransnormerModel cannot build this config (an empty list "
                         "makes every layer read linear_use_lrpe); give one 0/1 per layer")
    layers = hf_config["decoder_layers"]
    return [int(derived)] * layers if isinstance(layers, int) and layers > 0 else listed


def config_from_hf(hf_config: dict[str, Any], **overrides: Any) -> ModelConfig:
    """A ``ModelConfig`` from a published ``config.json`` mapping (see the module
    docstring); ``overrides`` set our own fields (``dtype``, ``attention_backend``...).
    Unknown keys and unsupported values (another norm, activation, bias) raise
    ``ValueError``."""
    if not isinstance(hf_config, dict):
        raise ValueError(f"a Hugging Face config must be a mapping of keys, got a "
                         f"{type(hf_config).__name__}")
    _check_bookkeeping(hf_config)
    full = {**TRANSNORMER_DEFAULTS, **hf_config}
    values = {k: v for k, v in full.items() if k not in HF_BOOKKEEPING and k != DERIVED_LRPE}
    values["linear_use_lrpe_list"] = _layer_lrpe(full)
    return ModelConfig.from_dict({**values, **overrides})


def load_config(directory: str | Path, **overrides: Any) -> ModelConfig:
    """``config_from_hf`` of ``directory/config.json``; every error names the file."""
    path = Path(directory) / "config.json"
    hf_config = read_mapping(path)
    try:
        return config_from_hf(hf_config, **overrides)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """The ``config.json`` of a TNL model: the published field names, with
    ``linear_use_lrpe`` as the published model leaves it."""
    if cfg.architecture != "tnl":
        raise ValueError(f"only TNL has a Hugging Face layout, not {cfg.architecture!r}")
    fixed = {"use_decay": True, "decay_learnable": False}  # The published model's, always.
    for key, published in fixed.items():
        if getattr(cfg, key) != published:
            raise ValueError(f"model.{key}={getattr(cfg, key)!r}: the published TransNormerLLM "
                             f"has {key}={published!r}, so the Hugging Face layout cannot hold "
                             "this model; keep it in a training run or a converted directory")
    keys = ("vocab_size", "decoder_embed_dim", "decoder_layers", "decoder_attention_heads",
            "glu_dim", "linear_act_fun", "norm_type", "no_scale_embedding", "bias", "init_std",
            "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings")
    out = {k: getattr(cfg, k) for k in keys}
    out["hidden_dim"] = cfg.decoder_embed_dim
    out["linear_use_lrpe_list"] = [int(kind == "lrpe") for kind in cfg.layer_kinds()]
    out[DERIVED_LRPE] = out["linear_use_lrpe_list"][-1]
    out["model_type"] = MODEL_TYPE
    out["architectures"] = ["TransnormerForCausalLM"]
    return out
