"""Tiny training runs for the tests: a model of width 32, rows of 64 bytes."""
import os
import subprocess
import sys
from pathlib import Path

from tests.paths import ROOT
from tnl_jax.training import config as train_config
from tnl_jax.training.metrics import read_metrics

TINY = ["model.decoder_embed_dim=32", "model.decoder_layers=2", "model.decoder_attention_heads=2",
        "model.glu_dim=64", "seq_len=64", "batch_size=4", "eval_batches=1", "sample_tokens=0",
        "warmup=2", "lr=3e-3", "eval_every=0", "shuffle_window=16"]
# The shared finished run (the `tiny_run` fixture of tests/conftest.py).
TINY_RUN = ["steps=4", "checkpoint_every=2", "eval_every=2", "sample_tokens=16"]


def tiny_config(run_dir, *overrides: str) -> train_config.TrainConfig:
    return train_config.load(None, [*TINY, f"run_dir={run_dir}", *overrides])


def train_command(run_dir, *overrides: str) -> list[str]:
    """`python train.py` of the checkout, the way the README runs it."""
    return [sys.executable, str(ROOT / "train.py"), *TINY, f"run_dir={run_dir}", *overrides]


def run_env(devices: int = 1) -> dict[str, str]:
    """A subprocess environment with `devices` fake CPU devices."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices)}
    # The suite's compile flags (conftest), without a caller's device-count flag.
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "xla_force_host_platform_device_count" not in f)
    return env


def run_training(run_dir, *overrides: str, devices: int = 1, timeout: int = 120):
    return subprocess.run(train_command(run_dir, *overrides), cwd=Path(run_dir).parent,
                          env=run_env(devices), capture_output=True, text=True, timeout=timeout)


def losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(Path(run_dir) / "metrics.jsonl")}
