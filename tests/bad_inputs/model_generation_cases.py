"""Bad model configs, published config.json files and generation arguments: each is
named (key or argument, value, what is allowed) before anything compiles.

The generation rows use an abstract model (``nnx.eval_shape``: shapes, no weights):
the checks read only its config, so a real one would change nothing but the time.
"""
import functools
import json
import math
import tempfile
from pathlib import Path

import numpy as np
from flax import nnx

from tests.bad_inputs.case import BadInput
from tests.conftest import SMALL_MODEL
from tests.paths import PUBLISHED
from tnl_jax import ModelConfig, create_model, load_hf
from tnl_jax.checkpoints import converted
from tnl_jax.checkpoints.hf import read_hf_tensors
from tnl_jax.checkpoints.hf_config import config_from_hf, load_config
from tnl_jax.generation import generate, sample_token
from tnl_jax.model.config import load_model_config
from tnl_jax.tokenizers import get_tokenizer

VOCAB = SMALL_MODEL["vocab_size"]
PUBLISHED_CONFIG = json.loads((PUBLISHED / "config.json").read_text())


@functools.cache
def abstract_model():
    return nnx.eval_shape(lambda: create_model(ModelConfig(**SMALL_MODEL), nnx.Rngs(0)))


def prompts(*lengths: int) -> list[list[int]]:
    rng = np.random.default_rng(sum(lengths))
    return [rng.integers(0, VOCAB, n).tolist() for n in lengths]


def generating(prompt_ids=None, max_new_tokens=4, **arguments):
    return lambda: generate(abstract_model(), prompts(3, 5) if prompt_ids is None else prompt_ids,
                            max_new_tokens, **arguments)


def in_a_file(name: str, text: str, read):
    """``read(directory)`` of a fresh directory holding ``name`` with ``text``."""
    def call():
        with tempfile.TemporaryDirectory() as directory:
            (Path(directory) / name).write_text(text)
            return read(Path(directory))
    return call


def hf_config(**changes):
    """The published fixture's config.json with ``changes`` (a ``None`` drops the key)."""
    values = {**PUBLISHED_CONFIG, **changes}
    return {k: v for k, v in values.items() if v is not None}


def bad_id_prompt():
    rows = prompts(4, 6)
    rows[1][2] = VOCAB
    return rows


MODEL_ROWS = [
    BadInput("model: vocab_size=0", lambda: ModelConfig(vocab_size=0), ValueError,
             ("vocab_size=0", "expected an integer in [1, 2147483647]")),
    BadInput("model: vocab_size=2**40", lambda: ModelConfig(vocab_size=2**40), ValueError,
             (f"vocab_size={2**40}", "in [1, 2147483647]", "token ids are int32")),
    BadInput("model: negative decoder_embed_dim", lambda: ModelConfig(decoder_embed_dim=-64),
             ValueError, ("decoder_embed_dim=-64", ">= 1")),
    BadInput("model: decoder_layers=0", lambda: ModelConfig(decoder_layers=0), ValueError,
             "decoder_layers=0"),
    BadInput("model: heads do not divide the width",
             lambda: ModelConfig(decoder_embed_dim=30, decoder_attention_heads=4), ValueError,
             "decoder_embed_dim=30 is not divisible by decoder_attention_heads=4"),
    BadInput("model: heads as a string", lambda: ModelConfig(decoder_attention_heads="4"),
             ValueError, ("decoder_attention_heads='4'", "an integer")),
    BadInput("model: hidden_dim other than the width", lambda: ModelConfig(hidden_dim=128),
             ValueError, ("hidden_dim=128", "decoder_embed_dim=256")),
    BadInput("model: glu_dim=0", lambda: ModelConfig(glu_dim=0), ValueError,
             ("glu_dim=0", "or -1")),
    BadInput("model: LRPE list of the wrong length",
             lambda: ModelConfig(linear_use_lrpe_list=[1, 0]), ValueError, ("linear_use_lrpe_list=[1, 0]", "2 entries for decoder_layers=4")),
    BadInput("model: LRPE list entry 2", lambda: ModelConfig(linear_use_lrpe_list=[1, 2, 0, 0]),
             ValueError, ("linear_use_lrpe_list=[1, 2, 0, 0]", "0/1")),
    BadInput("model: pad id past the vocabulary", lambda: ModelConfig(pad_token_id=400),
             ValueError, ("pad_token_id=400", "[0, vocab_size=384)")),
    BadInput("model: negative eos id", lambda: ModelConfig(eos_token_id=-1), ValueError,
             "eos_token_id=-1"),
    BadInput("model: init_std=0", lambda: ModelConfig(init_std=0), ValueError,
             ("init_std=0", "> 0")),
    BadInput("model: init_std=nan", lambda: ModelConfig(init_std=math.nan), ValueError,
             "init_std=nan"),
    BadInput("model: layernorm", lambda: ModelConfig(norm_type="layernorm"), ValueError,
             ("norm_type='layernorm'", "simplermsnorm")),
    BadInput("model: relu", lambda: ModelConfig(linear_act_fun="relu"), ValueError,
             ("linear_act_fun='relu'", "'silu'")),
    BadInput("model: bias=True", lambda: ModelConfig(bias=True), ValueError,
             ("bias=True", "bias-free")),
    BadInput("model: bias as a string", lambda: ModelConfig(bias="no"), ValueError,
             "bias='no': expected true/false"),
    BadInput("model: unknown architecture", lambda: ModelConfig(architecture="mamba"),
             ValueError, ("architecture='mamba'", "'hybrid'")),
    BadInput("model: softmax_every=0", lambda: ModelConfig(softmax_every=0), ValueError,
             "softmax_every=0"),
    BadInput("model: softmax_offset past the group", lambda: ModelConfig(
        softmax_every=4, softmax_offset=4), ValueError, ("softmax_offset=4", "-4 to 3")),
    BadInput("model: softmax_qk_norm without softmax layers", lambda: ModelConfig(
        softmax_qk_norm=True), ValueError, ("softmax_qk_norm=True", "no softmax layers")),
    BadInput("model: softmax_qk_norm as a string", lambda: ModelConfig(
        architecture="hybrid", softmax_qk_norm="yes"), ValueError,
        "softmax_qk_norm='yes': expected true/false"),
    BadInput("model: softmax_rope off without softmax layers", lambda: ModelConfig(
        softmax_rope=False), ValueError, ("softmax_rope=False", "no softmax layers")),
    BadInput("model: softmax_logn_length below 2", lambda: ModelConfig(
        architecture="hybrid", softmax_logn_length=1), ValueError,
        ("softmax_logn_length=1", ">= 2")),
    BadInput("model: softmax_logn_length without softmax layers", lambda: ModelConfig(
        softmax_logn_length=2048), ValueError, ("softmax_logn_length=2048", "no softmax layers")),
    BadInput("model: softmax_rope as a string", lambda: ModelConfig(
        architecture="hybrid", softmax_rope="no"), ValueError,
        "softmax_rope='no': expected true/false"),
    BadInput("model: negative rope_theta", lambda: ModelConfig(rope_theta=-1.0), ValueError,
             "rope_theta=-1.0"),
    BadInput("model: attention_backend='cuda'", lambda: ModelConfig(attention_backend="cuda"),
             ValueError, ("attention_backend='cuda'", "None, 'pallas'")),
    BadInput("model: chunk_size not a power of two", lambda: ModelConfig(chunk_size=48),
             ValueError, ("chunk_size=48", "power of two >= 16")),
    BadInput("model: projection_dtype not fp8", lambda: ModelConfig(projection_dtype="fp16"),
             ValueError, ("projection_dtype='fp16'", "None, 'fp8'")),
    BadInput("model: integer dtype", lambda: ModelConfig(dtype="int32"), ValueError,
             ("dtype='int32'", "floating-point")),
    BadInput("model: misspelt param_dtype", lambda: ModelConfig(param_dtype="float33"),
             ValueError, "param_dtype='float33'"),
    BadInput("model: scan_unroll of no layers", lambda: ModelConfig(scan_unroll=0),
             ValueError, ("scan_unroll=0", "integer >= 1")),
    BadInput("model: learnable decay without decay",
             lambda: ModelConfig(decay_learnable=True, use_decay=False), ValueError,
             "decay_learnable=True needs use_decay=True"),
    BadInput("model: every problem in one error",
             lambda: ModelConfig(vocab_size=-1, glu_dim=0, remat="ful"), ValueError,
             ("vocab_size=-1", "glu_dim=0", "remat='ful'", "nearest: 'full'")),
    BadInput("model: misspelt key names the nearest",
             lambda: ModelConfig.from_dict({"decoder_layer": 4}), ValueError,
             ("'decoder_layer'", "nearest valid key: 'decoder_layers'")),
    BadInput("model: a config that is no mapping", lambda: ModelConfig.from_dict([4, 64]),
             ValueError, ("must be a mapping", "list")),
    BadInput("model: preset file whose top level is a list",
             in_a_file("m.yaml", "- 1\n- 2\n", lambda d: load_model_config(d / "m.yaml")),
             ValueError, ("m.yaml", "the top level must be a mapping")),
    BadInput("model: preset file that is no YAML",
             in_a_file("m.yaml", "model: [1, 2\n", lambda d: load_model_config(d / "m.yaml")),
             ValueError, ("m.yaml", "not valid YAML")),
    BadInput("model: preset file with a bad value",
             in_a_file("m.yaml", "model:\n  vocab_size: 0\n",
                       lambda d: load_model_config(d / "m.yaml")),
             ValueError, ("m.yaml", "vocab_size=0")),
]

HF_ROWS = [
    BadInput("hf: linear_use_lrpe disagrees with the list",
             lambda: config_from_hf(hf_config(linear_use_lrpe=1)), ValueError,
             ("linear_use_lrpe=1 disagrees with linear_use_lrpe_list=[1, 0, 0]",
              "last layer's entry (0)")),
    BadInput("hf: empty LRPE list and no linear_use_lrpe",
             lambda: config_from_hf(hf_config(linear_use_lrpe_list=[])), ValueError,
             ("linear_use_lrpe_list is empty and linear_use_lrpe is missing",)),
    BadInput("hf: linear_use_lrpe not a flag",
             lambda: config_from_hf(hf_config(linear_use_lrpe="yes")), ValueError,
             "linear_use_lrpe='yes': expected 0/1"),
    BadInput("hf: another model_type", lambda: config_from_hf(hf_config(model_type="llama")),
             ValueError, ("model_type='llama'", "'transnormer'")),
    BadInput("hf: pruned heads", lambda: config_from_hf(hf_config(pruned_heads={"0": [1]})),
             ValueError, ("pruned_heads={'0': [1]}", "expected {}")),
    BadInput("hf: a key that would change the model",
             lambda: config_from_hf(hf_config(quantization_config={"bits": 4})), ValueError,
             "unknown model config key 'quantization_config'"),
    BadInput("hf: missing LRPE list takes the published default []",
             lambda: config_from_hf(hf_config(linear_use_lrpe_list=None)), ValueError,
             "linear_use_lrpe_list is empty"),
    *[BadInput(f"hf: config.json {key}={value!r}",
               in_a_file("config.json", json.dumps(hf_config(**{key: value})), load_hf),
               ValueError, ("config.json", says))
      for key, value, says in [("norm_type", "layernorm", "norm_type='layernorm'"),
                               ("linear_act_fun", "relu", "linear_act_fun='relu'"),
                               ("bias", True, "bias=True"),
                               ("decoder_layerz", 3, "nearest valid key: 'decoder_layers'")]],
    BadInput("hf: config.json whose top level is a list",
             in_a_file("config.json", "[1, 2]", load_config), ValueError,
             ("config.json", "top level must be a JSON object", "list")),
    BadInput("hf: config.json that is no JSON",
             in_a_file("config.json", '{"vocab_size": 96,', load_config), ValueError,
             ("config.json", "not valid JSON")),
    BadInput("hf: no config.json", lambda: load_config(PUBLISHED / "missing"), FileNotFoundError,
             ("missing/config.json", "no such file")),
    BadInput("hf: index without weight_map",
             in_a_file("model.safetensors.index.json", '{"metadata": {}}', read_hf_tensors),
             ValueError, ("model.safetensors.index.json", "no 'weight_map'")),
    BadInput("hf: converted model_config.json that is no mapping",
             in_a_file(converted.CONFIG_FILE, '"tnl"', converted.load_config), ValueError,
             (converted.CONFIG_FILE, "top level must be a JSON object")),
]

def calling(input_ids=None, **arguments):
    """The model's call (abstract weights: the checks come first) on fresh random ids."""
    def call():
        ids = prompts(5, 5) if input_ids is None else input_ids
        return abstract_model()(np.asarray(ids, np.int32) if isinstance(ids, list) else ids,
                                **arguments)
    return call


def ids_with(index, value):
    ids = np.asarray(prompts(5, 5), np.int32)
    ids[index] = value
    return ids


CALL_ROWS = [
    BadInput("model call: input id = vocab_size", calling(ids_with((1, 2), VOCAB)), ValueError,
             (f"input_ids[1][2]={VOCAB}", f"[0, vocab_size={VOCAB})")),
    BadInput("model call: negative input id", calling(ids_with((0, 4), -1)), ValueError,
             ("input_ids[0][4]=-1", "token ids must be in")),
    BadInput("model call: float input_ids",
             calling(np.random.default_rng(0).uniform(0, VOCAB, (2, 5)).astype(np.float32)),
             TypeError, ("input_ids has dtype float32", "integer")),
    BadInput("model call: 1-D input_ids", calling(np.arange(5, dtype=np.int32)), ValueError,
             ("input_ids has shape (5,)", "(batch, tokens)")),
    BadInput("model call: no tokens", calling(np.zeros((2, 0), np.int32)), ValueError,
             ("input_ids has shape (2, 0)", "at least one row and one token")),
    BadInput("model call: no rows", calling(np.zeros((0, 5), np.int32)), ValueError,
             "input_ids has shape (0, 5)"),
    BadInput("model call: input_ids a list", lambda: abstract_model()([[1, 2, 3]]), TypeError,
             ("input_ids is a list", "integer array")),
    BadInput("model call: segment_ids of another length",
             calling(segment_ids=np.zeros((2, 6), np.int32)), ValueError,
             ("segment_ids has shape (2, 6)", "input_ids' shape (2, 5)")),
    BadInput("model call: positions of another batch",
             calling(positions=np.zeros((1, 5), np.int32)), ValueError,
             ("positions has shape (1, 5)", "(2, 5)")),
    BadInput("model call: float segment_ids", calling(segment_ids=np.zeros((2, 5), np.float32)),
             TypeError, "segment_ids has dtype float32"),
    BadInput("model call: hidden_states with an id past the vocabulary",
             lambda: abstract_model().hidden_states(ids_with((1, 0), VOCAB + 7)), ValueError,
             f"input_ids[1][0]={VOCAB + 7}"),
]

GENERATE_ROWS = [
    BadInput("generate: prompt id = vocab_size", generating(bad_id_prompt()), ValueError,
             ("prompt_ids[1][2]=61", f"[0, vocab_size={VOCAB})")),
    BadInput("generate: negative prompt id", generating([[3, -1, 4]]), ValueError,
             "prompt_ids[0][1]=-1"),
    BadInput("generate: float prompt array",
             generating(np.random.default_rng(0).uniform(0, VOCAB, (2, 4)).astype(np.float32)),
             TypeError, ("prompt_ids has dtype float32", "integer")),
    BadInput("generate: one prompt not in a batch", generating([5, 7, 9]), TypeError,
             ("prompt_ids[0]=5", "expected a list of token ids")),
    BadInput("generate: float inside a prompt", generating([[5, 7.5]]), TypeError,
             "prompt_ids[0][1]=7.5"),
    BadInput("generate: an empty prompt", generating([[4, 5], []]), ValueError,
             "prompt_ids[1] is empty"),
    BadInput("generate: no prompt", generating([]), ValueError, "holds no prompt"),
    BadInput("generate: 3-D prompt array", generating(np.ones((2, 3, 4), np.int32)), ValueError,
             "prompt_ids has shape (2, 3, 4)"),
    BadInput("generate: max_new_tokens=-1", generating(max_new_tokens=-1), ValueError,
             "max_new_tokens=-1: expected an integer in [0, "),
    BadInput("generate: max_new_tokens=2**31", generating(max_new_tokens=2**31), ValueError,
             ("max_new_tokens=2147483648", "expected an integer in [0, 2147483642]",
              "int32")),
    BadInput("generate: max_new_tokens as a 1-element array",
             generating(max_new_tokens=np.array([4])), TypeError, "max_new_tokens=array([4])"),
    BadInput("generate: temperature as a 2-element array",
             generating(temperature=np.array([0.5, 1.0])), TypeError, "temperature=array("),
    BadInput("generate: max_new_tokens=2.5", generating(max_new_tokens=2.5), TypeError,
             "max_new_tokens=2.5"),
    BadInput("generate: negative temperature", generating(temperature=-0.5), ValueError,
             ("temperature=-0.5", ">= 0")),
    BadInput("generate: temperature=nan", generating(temperature=math.nan), ValueError,
             ("temperature=nan", "finite")),
    BadInput("generate: temperature=inf", generating(temperature=math.inf), ValueError,
             "temperature=inf"),
    BadInput("generate: temperature as a string", generating(temperature="hot"), TypeError,
             "temperature='hot'"),
    BadInput("generate: top_k=0", generating(top_k=0), ValueError,
             ("top_k=0", f"[1, vocab_size={VOCAB}]")),
    BadInput("generate: top_k past the vocabulary", generating(top_k=VOCAB + 1), ValueError,
             f"top_k={VOCAB + 1}"),
    BadInput("generate: top_k as a float", generating(top_k=2.0), TypeError, "top_k=2.0"),
    BadInput("generate: top_p=0", generating(top_p=0.0), ValueError, ("top_p=0.0", "(0, 1]")),
    BadInput("generate: top_p=1.5", generating(top_p=1.5), ValueError, "top_p=1.5"),
    BadInput("generate: top_p=nan", generating(top_p=math.nan), ValueError, "top_p=nan"),
    BadInput("generate: eos_id = vocab_size", generating(eos_id=VOCAB), ValueError,
             (f"eos_id={VOCAB}", f"[0, vocab_size={VOCAB})")),
    BadInput("generate: negative eos_id", generating(eos_id=-1), ValueError, "eos_id=-1"),
    BadInput("generate: seed as a string", generating(seed="0"), TypeError, "seed='0'"),
    BadInput("generate: seed too large for a key", generating(seed=2**64), ValueError,
             (f"seed={2**64}", "[-2**63, 2**63)")),
    BadInput("generate: return_logits as a string", generating(return_logits="yes"), TypeError,
             "return_logits='yes'"),
    BadInput("generate: sample_token top_k=0",
             lambda: sample_token(np.random.default_rng(1).normal(size=(2, VOCAB)), None, 1.0, 0,
                                  None), ValueError, "top_k=0"),
    BadInput("generate: bytes tokenizer with the 96-token published model",
             lambda: get_tokenizer("bytes", load_config(PUBLISHED)), ValueError,
             ("tokenizer 'bytes' has 259 ids", "the model's vocab_size is 96")),
]

CASES = MODEL_ROWS + HF_ROWS + CALL_ROWS + GENERATE_ROWS
