"""Convert a Hugging Face TNL checkpoint to the converted format (Orbax parameters,
model_config.json, and the tokenizer files): `tnl-convert --hf DIR --out OUT`."""
from __future__ import annotations

import argparse
from typing import Sequence

from tnl_jax.checkpoints.converted import convert


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tnl-convert", description=__doc__)
    parser.add_argument("--hf", required=True, help="Hugging Face TNL directory")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)
    cfg = convert(args.hf, args.out)
    print(f"wrote {args.out}: {cfg.decoder_layers} layers, d {cfg.decoder_embed_dim}, "
          f"vocab {cfg.vocab_size}")


if __name__ == "__main__":
    main()
