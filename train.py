"""Train a TNL model from the checkout: `python train.py [--config NAME|FILE] [key=value ...]`,
the same as the installed `tnl-train` (tnl_jax/cli/train.py)."""
from tnl_jax.cli.train import main

if __name__ == "__main__":
    main(prog="train.py")
