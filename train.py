"""Train a TNL model: `python train.py [--config FILE] [key=value ...]`.

With no arguments, trains tnl-tiny on the bytes of your Python standard library.
`--help` lists every key with its value in the chosen config.
"""
import argparse
import sys

from tnl_jax import train_config


def parse(argv: list[str]) -> train_config.TrainConfig:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    parser.add_argument("--config", default=None,
                        help=f"preset YAML (default {train_config.DEFAULT_CONFIG.name})")
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    if args.help:
        parser.print_help()
        cfg = train_config.load(args.config)
        print("\nkeys (dotted for nested values) and their values in this config:")
        print(train_config.describe(cfg))
        sys.exit(0)
    try:
        return train_config.load(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"train.py: error: {error}\n")


if __name__ == "__main__":
    cfg = parse(sys.argv[1:])
    from tnl_jax.train import main  # After parsing, so that --help and errors are instant.
    main(cfg)
