"""Sample text from a model: `tnl-generate --checkpoint DIR --prompt "..."`.

DIR is a training run directory (its newest checkpoint, saved config and tokenizer),
a converted directory (tnl-convert) or a Hugging Face TNL directory. Every argument,
and the tokenizer against the model's vocabulary, is checked before the weights are
read: a problem exits with status 2 and names it.
"""
from __future__ import annotations

import argparse
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from tnl_jax.checkpoints import loader
from tnl_jax.cli.help_format import DefaultsHelpFormatter
from tnl_jax.generation import generate
from tnl_jax.generation_checks import check_sampling, prompt_rows
from tnl_jax.model.config_checks import float_dtype
from tnl_jax.tokenizers import get_tokenizer


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="tnl-generate", description=__doc__,
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="training run, converted or Hugging Face directory")
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument("--tokenizer", default=None,
                        help="'bytes', a tokenizer.model or tokenizer.json path; default: the "
                             "checkpoint's tokenizer (its tokenizer file, or the run's), else "
                             "bytes; its ids must fit the model's vocabulary")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to sample; >= 0")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="softmax temperature; >= 0, 0: greedy")
    parser.add_argument("--top-k", type=int, default=None,
                        help="sample among the k likeliest tokens; in [1, vocabulary]; "
                             "default: all")
    parser.add_argument("--top-p", type=float, default=None,
                        help="sample among the likeliest tokens of total probability p; in "
                             "(0, 1]; default: all")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling")
    parser.add_argument("--dtype", default="bfloat16",
                        help="compute dtype: float32, bfloat16 or float16")
    return parser, parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Prints the prompt followed by the sampled text."""
    parser, args = parse_args(argv)
    try:
        dtype_problems = float_dtype("--dtype", args.dtype)
        if dtype_problems:
            raise ValueError(dtype_problems[0])
        cfg = loader.load_model_config(args.checkpoint)
        tokenizer = get_tokenizer(args.tokenizer or loader.tokenizer_spec(args.checkpoint), cfg)
        prompt = tokenizer.encode(args.prompt)
        if tokenizer.bos_id is not None:
            prompt = [tokenizer.bos_id, *prompt]
        if not prompt:
            raise ValueError("--prompt is empty and the tokenizer adds no bos token: give at "
                             "least one character")
        prompt_rows([prompt], cfg.vocab_size)  # Raises for an id the model cannot embed.
        check_sampling(cfg.vocab_size, max_new_tokens=args.max_new_tokens,
                       temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                       seed=args.seed, eos_id=tokenizer.eos_id, return_logits=False,
                       longest_prompt=len(prompt))
        model = loader.load_model(args.checkpoint, dtype=jnp.dtype(args.dtype))
    except (ValueError, TypeError, FileNotFoundError) as error:
        parser.exit(2, f"tnl-generate: error: {error}\n")
    try:  # The model's weights are seen only when it runs: NaN logits are named here.
        tokens = generate(model, [prompt], args.max_new_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                          eos_id=tokenizer.eos_id)
    except ValueError as error:
        parser.exit(2, f"tnl-generate: error: {error}\n")
    print(args.prompt + tokenizer.decode([int(t) for t in np.asarray(tokens)[0]]))


if __name__ == "__main__":
    main()
