"""Train a TNL model: `tnl-train [--config NAME|FILE] [key=value ...]`.

With no arguments, trains tnl-tiny on the bytes of your Python standard library.
`--config` takes a preset name (tnl-tiny, tnl-385m, tnl-1b, tnl-3b, tnl-7b, tnl-15b)
or a YAML file. `--help` lists every key with its value in the chosen config, what it
does and what it allows.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from tnl_jax import presets
from tnl_jax.training import config as train_config


def parse(argv: Sequence[str], prog: str = "tnl-train") -> train_config.TrainConfig:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False)
    parser.add_argument("--config", default=None,
                        help=f"preset name or YAML file (default {presets.DEFAULT}; presets: "
                             f"{', '.join(presets.names())})")
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    try:
        if args.help:
            parser.print_help()
            cfg = train_config.load(args.config)
            print("\nkeys (dotted for nested values; set as key=value): the value in this "
                  "config, what the key does, what it allows")
            print(train_config.describe(cfg))
            sys.exit(0)
        return train_config.load(args.config, args.overrides)
    except (ValueError, OSError) as error:
        parser.exit(2, f"{prog}: error: {error}\n")


def main(argv: Sequence[str] | None = None, prog: str = "tnl-train") -> None:
    cfg = parse(sys.argv[1:] if argv is None else argv, prog)
    from tnl_jax.training.overlap import OPT_OUT, apply_gpu_overlap_flags
    try:  # Before any backend starts.
        added = apply_gpu_overlap_flags()
    except ValueError as error:
        sys.exit(f"{prog}: error: {error}")
    if added:
        print(f"XLA_FLAGS += {' '.join(added)} (GPU overlap; {OPT_OUT}=0 leaves them out)",
              flush=True)
    # Imported after parsing: --help and errors in the config are instant.
    from tnl_jax.training.loop import RUN_STOPS, USER_ERRORS, main as train
    try:
        train(cfg)
    except USER_ERRORS as error:  # A setting or a file to fix: exit status 2, as for keys.
        sys.stderr.write(f"{prog}: error: {error}\n")
        sys.exit(2)
    except RUN_STOPS as stop:  # The message says it all; exit status 1.
        sys.exit(f"{prog}: {type(stop).__name__}: {stop}")


if __name__ == "__main__":
    main()
