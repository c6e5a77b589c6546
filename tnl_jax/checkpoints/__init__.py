"""Checkpoint formats and the one loader for them.

    hf.py         the published Hugging Face layout (config.json + safetensors), in and out
    hf_config.py  the published config.json, key by key, to and from ModelConfig
    json_files.py reading a JSON file of a checkpoint, every problem naming the file
    converted.py  our Orbax parameter format, written by ``tnl-convert``
    run_dir.py    the layout a training run writes, read back
    loader.py     any of the three directories -> model, parameters, config, tokenizer
"""
from tnl_jax.checkpoints.loader import (directory_kind, load_model, load_model_config,
                                        load_params, tokenizer_spec)

__all__ = ["directory_kind", "load_model", "load_model_config", "load_params", "tokenizer_spec"]
