"""A published ``config.json`` loads as ``TransnormerConfig.save_pretrained`` writes it:
bookkeeping ignored, the derived ``linear_use_lrpe`` checked, the published defaults."""
import json
import shutil

import jax.numpy as jnp
import numpy as np

from tests.paths import PUBLISHED
from tests.tolerances import rel_err
from tnl_jax.checkpoints.hf import load_hf
from tnl_jax.checkpoints.hf_config import HF_BOOKKEEPING, config_from_hf, config_to_hf

# What save_pretrained writes besides the model's keys, for the fixture's model: the keys
# and values of TransnormerConfig(**fixture).to_dict() under transformers 4.31.0 (the
# published checkpoints' era; to_dict is the superset of the to_diff_dict that
# save_pretrained writes), after TransnormerModel.__init__ has set linear_use_lrpe and
# save_pretrained architectures, torch_dtype and auto_map; plus "dtype" (4.57.1, 5.24.0)
# and "_attn_implementation_autoset" (4.46.3), the only keys other versions add.
SAVE_PRETRAINED_EXTRA = {
    "_name_or_path": "", "add_bos_token": False, "add_cross_attention": False,
    "auto_map": {"AutoConfig": "configuration_transnormer.TransnormerConfig",
                 "AutoModelForCausalLM": "modeling_transnormer.TransnormerForCausalLM"},
    "bad_words_ids": None, "begin_suppress_tokens": None, "chunk_size_feed_forward": 0,
    "cross_attention_hidden_size": None, "decoder_start_token_id": None,
    "diversity_penalty": 0.0, "do_sample": False, "early_stopping": False,
    "encoder_no_repeat_ngram_size": 0, "exponential_decay_length_penalty": None,
    "finetuning_task": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
    "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "is_decoder": False,
    "is_encoder_decoder": False, "label2id": {"LABEL_0": 0, "LABEL_1": 1},
    "length_penalty": 1.0, "linear_use_lrpe": 0, "max_length": 20, "min_length": 0,
    "no_repeat_ngram_size": 0, "num_beam_groups": 1, "num_beams": 1,
    "num_return_sequences": 1, "output_attentions": False, "output_hidden_states": False,
    "output_scores": False, "prefix": None, "problem_type": None, "pruned_heads": {},
    "remove_invalid_values": False, "repetition_penalty": 1.0, "return_dict": True,
    "return_dict_in_generate": False, "sep_token_id": None, "suppress_tokens": None,
    "task_specific_params": None, "temperature": 1.0, "tf_legacy_loss": False,
    "tie_encoder_decoder": False, "tie_word_embeddings": True, "tokenizer_class": None,
    "top_k": 50, "top_p": 1.0, "torch_dtype": "float32", "torchscript": False,
    "transformers_version": "4.31.0", "typical_p": 1.0, "use_bfloat16": False,
    "use_cache": True, "dtype": "float32", "_attn_implementation_autoset": False}


def fixture_config() -> dict:
    return json.loads((PUBLISHED / "config.json").read_text())


def test_save_pretrained_config_gives_the_published_logits(tmp_path):
    saved = {**fixture_config(), **SAVE_PRETRAINED_EXTRA}
    (tmp_path / "config.json").write_text(json.dumps(saved, indent=2))
    shutil.copyfile(PUBLISHED / "model.safetensors", tmp_path / "model.safetensors")
    model = load_hf(tmp_path, dtype=jnp.float32, attention_backend="xla")
    assert model.cfg == config_from_hf(fixture_config(), dtype="float32", param_dtype="float32",
                                       attention_backend="xla")
    ids = np.load(PUBLISHED / "input_ids.npy")
    expected = np.load(PUBLISHED / "expected_logits.npy")
    assert rel_err(model(jnp.asarray(ids)), expected) < 1e-4


def test_every_extra_key_is_bookkeeping_or_a_model_key():
    extra = set(SAVE_PRETRAINED_EXTRA) - {"linear_use_lrpe", "tie_word_embeddings"}
    assert extra <= HF_BOOKKEEPING and HF_BOOKKEEPING - extra == {"architectures", "model_type"}


def test_derived_linear_use_lrpe_and_swish():
    layers = fixture_config()["decoder_layers"]
    # An empty list: the published model gives every layer linear_use_lrpe.
    every = config_from_hf({**fixture_config(), "linear_use_lrpe_list": [], "linear_use_lrpe": 1})
    assert every.layer_kinds() == ["lrpe"] * layers
    none = config_from_hf({**fixture_config(), "linear_use_lrpe_list": [],
                           "linear_use_lrpe": False})
    assert none.layer_kinds() == ["linear"] * layers
    swish = config_from_hf({**fixture_config(), "linear_act_fun": "swish"})
    assert swish.linear_act_fun == "silu" and swish == config_from_hf(fixture_config())


def test_missing_keys_take_the_published_defaults():
    cfg = config_from_hf({"linear_use_lrpe_list": [1] + [0] * 23})
    assert (cfg.vocab_size, cfg.decoder_embed_dim, cfg.decoder_layers,
            cfg.decoder_attention_heads, cfg.glu_dim) == (64000, 1024, 24, 8, 2816)
    assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == (0, 1, 2)


def test_config_round_trip_writes_the_derived_key():
    cfg = config_from_hf(fixture_config())
    written = config_to_hf(cfg)
    assert written["linear_use_lrpe"] == written["linear_use_lrpe_list"][-1] == 0
    assert config_from_hf(written) == cfg
