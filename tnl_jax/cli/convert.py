"""Convert a checkpoint directory: `tnl-convert --from DIR --to hf|converted --out OUT`.

DIR is a training run (its newest intact checkpoint), a converted directory or a
Hugging Face TNL directory; its kind is read from what it holds. --to hf writes
config.json and model.safetensors (float32) for the published PyTorch code, --to
converted writes the Orbax format that init_from= and tnl-generate read; the default
is hf for a run or converted directory and converted for a Hugging Face one. The
tokenizer file goes along. --hf/--run/--converted DIR name the source's kind and
check it. OUT must be new or empty (--overwrite replaces a converted or Hugging Face
directory); it appears only once complete.

  tnl-convert --from runs/tnl-tiny --out tnl-tiny-hf          # run -> Hugging Face
  tnl-convert --hf TransNormerLLM-385M --out tnl-385m         # Hugging Face -> converted
  tnl-convert --from tnl-385m --to hf --out tnl-385m-hf       # converted -> Hugging Face
"""
from __future__ import annotations

import argparse
from typing import Sequence

from tnl_jax.checkpoints.export import WRITERS, export
from tnl_jax.checkpoints.kinds import EXPECTED, FOUND, directory_kind

SOURCES = {"from": ("run", "converted", "hf"), "run": ("run",), "converted": ("converted",),
           "hf": ("hf",)}


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="tnl-convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="from_", metavar="DIR",
                        help="any checkpoint directory (its kind is detected)")
    source.add_argument("--run", metavar="DIR", help="a training run directory")
    source.add_argument("--converted", metavar="DIR", help="a converted directory")
    source.add_argument("--hf", metavar="DIR", help="a Hugging Face TNL directory")
    parser.add_argument("--to", choices=sorted(WRITERS), default=None,
                        help="what to write (default: hf; converted from a Hugging Face "
                             "directory)")
    parser.add_argument("--out", required=True, help="the new directory")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing converted or Hugging Face --out")
    return parser, parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    parser, args = parse_args(argv)
    flag = next(name for name in SOURCES if getattr(args, "from_" if name == "from" else name))
    source = getattr(args, "from_" if flag == "from" else flag)
    found = directory_kind(source)
    if found in SOURCES and found not in SOURCES[flag]:  # Another kind of checkpoint.
        parser.exit(2, f"tnl-convert: error: --{flag} {source}: found {FOUND[found]}, expected "
                       f"{EXPECTED[flag]}; use --{found} {source} (or --from {source})\n")
    try:
        kind, to, cfg, tokenizers = export(source, args.out, args.to, args.overwrite,
                                           SOURCES[flag], f"--{flag}")
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, ImportError) as error:
        parser.exit(2, f"tnl-convert: error: {error}\n")
    missing = (f"none: the run trained on bytes (tnl-generate --tokenizer bytes)" if kind == "run"
               else f"none: {source} has no tokenizer file (tnl-generate --tokenizer PATH)")
    print(f"wrote {args.out}: {FOUND[to]} from {FOUND[kind]} {source}; {cfg.decoder_layers} "
          f"layers, d {cfg.decoder_embed_dim}, vocab {cfg.vocab_size}; tokenizer: "
          f"{', '.join(tokenizers) or missing}")


if __name__ == "__main__":
    main()
