"""Checkpoint formats and the one loader for them.

    hf.py         the published Hugging Face layout (config.json + safetensors), in and out
    hf_config.py  the published config.json, key by key, to and from ModelConfig
    json_files.py reading a JSON file of a checkpoint, every problem naming the file
    converted.py  our Orbax parameter format
    run_dir.py    the layout a training run writes, read back (newest intact checkpoint)
    kinds.py      which of these a directory is, and errors naming a wrong kind
    loader.py     any of the three directories -> model, parameters, config, tokenizer
    export.py     any of the three -> a converted or Hugging Face directory (tnl-convert)
"""
from tnl_jax.checkpoints.loader import (directory_kind, load_model, load_model_config,
                                        load_params, tokenizer_spec)

__all__ = ["directory_kind", "load_model", "load_model_config", "load_params", "tokenizer_spec"]
